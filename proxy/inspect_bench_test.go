package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// A larger chat body: a system prompt, a few turns, tools, and options.
var benchBigChatBody = `{"model":"gpt-4o-mini","messages":[` +
	`{"role":"system","content":"` + strings.Repeat("You are a careful assistant. ", 40) + `"},` +
	`{"role":"user","content":"` + strings.Repeat("Summarise the quarterly figures. ", 30) + `"},` +
	`{"role":"assistant","content":"` + strings.Repeat("Revenue grew by 12 percent. ", 30) + `"},` +
	`{"role":"user","content":"And the margins? Answer in \"one\" line.\n"}],` +
	`"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],` +
	`"temperature":0.2,"top_p":1,"stream":false,"max_completion_tokens":512}`

// Hostile bodies at the default size cap (8 MiB): inspection is linear in the
// body, so a body of distinct keys costs a bounded multiple of one long
// string — the cheapest body per byte — not the square of its key count.
const benchHostileSize = 8 << 20

// benchDistinctKeys is a chat body padded to size with distinct top-level
// keys ("k0000000":0, …): one object of ~700K members.
func benchDistinctKeys(size int) string {
	var sb strings.Builder
	sb.Grow(size)
	sb.WriteString(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]`)
	for i := 0; sb.Len() < size-14; i++ {
		sb.WriteString(`,"k`)
		sb.WriteString(fmt.Sprintf("%07d", i))
		sb.WriteString(`":0`)
	}
	sb.WriteString("}")
	return sb.String()
}

// benchLongString is a chat body whose one message is a string of size bytes
// (prose, with escaped newlines).
func benchLongString(size int) string {
	const line = `The quarterly figures show revenue up twelve percent; margins held.\n`
	var sb strings.Builder
	sb.Grow(size)
	sb.WriteString(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`)
	for sb.Len() < size-len(line)-4 {
		sb.WriteString(line)
	}
	sb.WriteString(`"}]}`)
	return sb.String()
}

// benchManySmallObjects is a chat body of many messages of a few keys each
// (every object is compared key by key, no hash set).
func benchManySmallObjects(size int) string {
	var sb strings.Builder
	sb.Grow(size)
	sb.WriteString(`{"model":"gpt-4o-mini","messages":[`)
	for i := 0; sb.Len() < size-64; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"role":"user","name":"u","content":"message `)
		sb.WriteString(strconv.Itoa(i))
		sb.WriteString(`"}`)
	}
	sb.WriteString(`]}`)
	return sb.String()
}

// benchLongKeys is objects of smallObject keys, each key long and differing
// only in its last bytes: the worst case of the plain comparison.
func benchLongKeys(size int) string {
	prefix := strings.Repeat("k", 1000)
	var sb strings.Builder
	sb.Grow(size)
	sb.WriteString(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"x":[`)
	for i := 0; sb.Len() < size-smallObject*(len(prefix)+16); i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('{')
		for j := range smallObject {
			if j > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(`"` + prefix + strconv.Itoa(j+10) + `":0`)
		}
		sb.WriteByte('}')
	}
	sb.WriteString(`]}`)
	return sb.String()
}

func BenchmarkInspect(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"small", benchChatBody},
		{"large", benchBigChatBody},
		{"8MiB-one-string", benchLongString(benchHostileSize)},
		{"8MiB-distinct-keys", benchDistinctKeys(benchHostileSize)},
		{"8MiB-small-objects", benchManySmallObjects(benchHostileSize)},
		{"8MiB-long-keys", benchLongKeys(benchHostileSize)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			p := parserPool.Get()
			defer parserPool.Put(p)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := inspect(epChat, body)
				if err != nil || len(r.model) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRewrite is inspect plus rewrite (the body sent upstream), as the
// proxy does on every call: the grant is set, and for streams the usage chunk
// is requested.
func BenchmarkRewrite(b *testing.B) {
	for _, bc := range []struct{ name, body, model string }{
		{"grant", benchChatBody, "gpt-4o-mini"},
		{"stream-usage", benchStreamBody, "gpt-4o-mini"},
		{"model-renamed", benchChatBody, "gpt-4o-mini-2024-07-18"},
		{"large", benchBigChatBody, "gpt-4o-mini"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			p := parserPool.Get()
			defer parserPool.Put(p)
			dst := make([]byte, 0, 8192)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := inspect(epChat, body)
				if err != nil {
					b.Fatal(err)
				}
				out, changed := rewrite(dst, &r, epChat, body, bc.model, 256)
				if !changed || len(out) == 0 {
					b.Fatal("body not rewritten")
				}
			}
		})
	}
}

// Provider answers: a chat completion with usage (what every non-streaming
// call parses), and one streamed chunk.
const (
	benchCompletion = `{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15 tok16","refusal":null},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":19,"completion_tokens":16,"total_tokens":35,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
		`"service_tier":"default","system_fingerprint":"fp_mock"}`
	benchResponse = `{"id":"resp_mock_1","object":"response","created_at":1700000000,"status":"completed","model":"gpt-4o-mini",` +
		`"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"tok1 tok2 tok3","annotations":[]}]}],` +
		`"usage":{"input_tokens":19,"input_tokens_details":{"cached_tokens":3},"output_tokens":16,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":35}}`
	benchUsageChunk = `{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],` +
		`"usage":{"prompt_tokens":19,"completion_tokens":16,"total_tokens":35,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`
)

func BenchmarkUsageParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    dialect
		body string
	}{
		{"chat", dialectChat, benchCompletion},
		{"responses", dialectResponses, benchResponse},
		{"stream-chunk", dialectChat, benchUsageChunk},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			p := parserPool.Get()
			defer parserPool.Put(p)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				u, _ := usageFromBody(p, bc.d, body)
				if !u.seen {
					b.Fatal("no usage")
				}
			}
		})
	}
}

func BenchmarkAppendJSONString(b *testing.B) {
	for _, bc := range []struct{ name, s string }{
		{"ascii", "The model provider did not answer in time; the call was not charged."},
		{"escapes", "line one\nline \"two\"\tand a \\ backslash\x01"},
		{"utf8", "Créditos insuficientes — 残高不足です — \xff invalid"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dst := make([]byte, 0, 256)
			b.SetBytes(int64(len(bc.s)))
			b.ReportAllocs()
			for b.Loop() {
				dst = appendJSONString(dst[:0], bc.s)
			}
		})
	}
}
