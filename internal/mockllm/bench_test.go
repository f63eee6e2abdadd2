package mockllm

import (
	"io"
	"testing"

	"github.com/valyala/fasthttp"
)

const benchChatBody = `{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about metering gateways and tokens."}]}`

func newBenchCtx(body string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBodyString(body)
	return &ctx
}

func BenchmarkChatNonStream(b *testing.B) {
	s := New(Config{})
	ctx := newBenchCtx(benchChatBody)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChatBody)))
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusOK {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

func BenchmarkChatStream(b *testing.B) {
	s := New(Config{})
	ctx := newBenchCtx(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":64,"messages":[{"role":"user","content":"Write a haiku."}]}`)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
		if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHandlerDirect(t *testing.T) {
	// The handler works on a bare RequestCtx (no listener), as used by the
	// benchmark, and a stream body can be read without fasthttp's writer.
	s := New(Config{})
	ctx := newBenchCtx(benchChatBody)
	s.Handler(ctx)
	checkPaths(t, ctx.Response.Body(), map[string]any{"usage.completion_tokens": 16, "usage.prompt_tokens": 19})

	ctx = newBenchCtx(`{"stream":true,"messages":[{"content":"[mock:tokens=2]"}]}`)
	s.Handler(ctx)
	events := parseSSE(t, ctx.Response.Body())
	if len(events) != 4 || events[3].data != "[DONE]" {
		t.Errorf("unexpected stream %q", ctx.Response.Body())
	}
	if s.Requests() != 2 {
		t.Errorf("Requests() = %d", s.Requests())
	}
}
