package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/proxy"
)

// TestHoldCoversWhatCanBeBilled runs the gateway against the mock provider:
// a call whose cost the hold would not bound is refused before it is
// forwarded — 400 when no hold can bound it, 402 when the hold that does is
// more than the account has (before, these were held at a fraction of their
// cost and served).
func TestHoldCoversWhatCanBeBilled(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 10) // 10 credits = 10,000 mc
	// A previous_response_id must be the account's own (else 400, before any hold).
	if err := e.store.RecordResponse(context.Background(), "acme", "resp_123", "openai", 0); err != nil {
		t.Fatal(err)
	}
	words := func(n, size int) string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = `"` + strings.Repeat("word ", size/5) + `"`
		}
		return "[" + strings.Join(ps, ",") + "]"
	}
	for _, tc := range []struct {
		name, path, body string
		hdr              [][2]string
		status           int
		param            string
	}{
		// Duplicate keys below the top level.
		{"usage flag twice", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":` + msg("hi") + `}`,
			nil, 400, "stream_options.include_usage"},
		{"usage flag twice, escaped", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true,"include\u005fusage":false},"messages":` + msg("hi") + `}`,
			nil, 400, "stream_options.include_usage"},
		{"content twice", "/v1/messages",
			`{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi","content":"` + strings.Repeat("x", 20000) + `"}]}`,
			nil, 400, "messages[0].content"},

		// A beta that widens the context window past the catalog's.
		{"1M context beta", "/v1/messages", `{"model":"claude-sonnet","max_tokens":5,"messages":` + msg("hi") + `}`,
			[][2]string{{"anthropic-beta", "context-1m-2025-08-07"}}, 400, "anthropic-beta"},
		{"1M context beta in a list", "/v1/messages", `{"model":"claude-sonnet","max_tokens":5,"messages":` + msg("hi") + `}`,
			[][2]string{{"anthropic-beta", "prompt-caching-2024-07-31, context-1m-2025-08-07"}}, 400, "anthropic-beta"},
		{"1M context beta in a second header", "/v1/messages", `{"model":"claude-sonnet","max_tokens":5,"messages":` + msg("hi") + `}`,
			[][2]string{{"anthropic-beta", "prompt-caching-2024-07-31"}, {"Anthropic-Beta", "context-1m-2025-08-07"}}, 400, "anthropic-beta"},

		// Batches: every prompt × every choice, input at its real size.
		// 40 prompts × max_tokens 200 × 2 mc = 16,000 mc (before: 400).
		{"completions prompt list", "/v1/completions",
			`{"model":"gpt-4o-mini","max_tokens":200,"prompt":` + words(40, 10) + `}`, nil, 402, ""},
		// 100 inputs of 300 bytes ≈ 15,000 tokens at 1 mc (before: capped at
		// one 8,191-token window).
		{"embeddings batch", "/v1/embeddings",
			`{"model":"text-embedding-3-small","input":` + words(100, 300) + `}`, nil, 402, ""},

		// Input of unknown size: the whole window (200K tokens × 8 mc; 128K × 1 mc).
		{"image by URL", "/v1/messages",
			`{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}]}]}`,
			nil, 402, ""},
		{"web fetch tool", "/v1/messages",
			`{"model":"claude-sonnet","max_tokens":5,"messages":` + msg("read https://example.com") + `,"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`,
			nil, 402, ""},
		{"web search options", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","max_tokens":5,"messages":` + msg("news?") + `,"web_search_options":{}}`, nil, 402, ""},
		{"stored response", "/v1/responses",
			`{"model":"gpt-4o-mini","max_output_tokens":5,"input":"go on","previous_response_id":"resp_123"}`, nil, 402, ""},
		{"image by URL, key escaped", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":[{"image\u005furl":{"url":"https://example.com/a.png"}}]}]}`,
			nil, 402, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs := e.mock.Requests()
			status, body := postHeaders(t, e, tc.path, key, tc.body, tc.hdr)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.param != "" {
				var m struct {
					Error struct{ Param, Message string }
				}
				if err := json.Unmarshal(body, &m); err != nil || m.Error.Param != tc.param {
					t.Fatalf("param %q, want %q: %s", m.Error.Param, tc.param, body)
				}
			}
			if e.mock.Requests() != reqs {
				t.Fatal("the upstream was called")
			}
		})
	}
	// What the same account can afford still goes through, and text that
	// names a marker is only text.
	for _, tc := range []struct{ name, path, body string }{
		{"one prompt", "/v1/completions", `{"model":"gpt-4o-mini","max_tokens":200,"prompt":"hi"}`},
		{"marker in text", "/v1/messages", `{"model":"claude-sonnet","max_tokens":5,"messages":` + msg(`what does "source":{"type":"url"} mean? and "image_url"?`) + `}`},
		{"schema naming a marker", "/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":5,"messages":` + msg("hi") +
			`,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"image_url":{"type":"string"},"file_id":{"type":"string"}}}}}]}`},
		{"other betas", "/v1/messages", `{"model":"claude-sonnet","max_tokens":5,"messages":` + msg("hi") + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := [][2]string{{"anthropic-beta", "context-management-2025-06-27,prompt-caching-2024-07-31"}}
			if status, body := postHeaders(t, e, tc.path, key, tc.body, hdr); status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
		})
	}
	e.assertLedger("acme")
}

// TestUpstreamGetsOneIncludeUsage: a streamed chat call reaches the provider
// with exactly one stream_options.include_usage, true, whatever the client
// sent.
func TestUpstreamGetsOneIncludeUsage(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	for _, opts := range []string{``, `"stream_options":{"include_usage":false},`, `"stream_options":{"include\u005fusage":false},`, `"stream_options":null,`} {
		body := `{"model":"gpt-4o-mini","stream":true,` + opts + `"messages":` + msg("hi") + `}`
		if status, b := postHeaders(t, e, "/v1/chat/completions", key, body, nil); status != 200 {
			t.Fatalf("%s: status %d: %s", opts, status, b)
		}
		_, up, _ := e.mock.LastRequest()
		vals, err := proxy.MembersAt(up, "stream_options.include_usage")
		if err != nil || len(vals) != 1 || vals[0] != true {
			t.Fatalf("%s: upstream include_usage %v (%v), want exactly one true: %s", opts, vals, err, up)
		}
	}
	e.assertLedger("acme")
}

// postHeaders posts body with each header added (so that one name may repeat).
func postHeaders(t *testing.T, e *env, path, key, body string, hdr [][2]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for _, h := range hdr {
		req.Header.Add(h[0], h[1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
