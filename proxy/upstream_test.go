package proxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The stream relay relies on fasthttp's streamed response body being a
// fasthttp.ReadCloserWithError (see startStream): a cut stream's connection
// is closed with an error so that it is never pooled and read as a clean end.
// Should an upgrade of fasthttp drop it, this fails before any stream is
// charged as whole.
func TestUpstreamStreamBodyClosesWithError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString("data: 1\n\n")
			_ = w.Flush()
		})
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	up, err := newUpstream(Provider{Name: "p", Kind: "openai", BaseURL: "http://" + ln.Addr().String() + "/v1"},
		Timeouts{Connect: time.Second, FirstByte: time.Second, Request: time.Second, StreamIdle: time.Second, Stream: time.Second}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ln.Addr().String() + "/v1/chat/completions")
	if err := up.stream.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	body := resp.BodyStream()
	if body == nil {
		t.Fatal("the streaming client returned no body stream")
	}
	rc, ok := body.(fasthttp.ReadCloserWithError)
	if !ok {
		t.Fatalf("fasthttp's stream body %T is not a fasthttp.ReadCloserWithError", body)
	}
	_ = rc.CloseWithError(errStreamBroken)
}
