package mockllm

import (
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

func TestNonStreamUsage(t *testing.T) {
	_, base := startTest(t, Config{})
	tests := []struct {
		name string
		path string
		body string
		want map[string]any
	}{
		{
			name: "chat default length",
			path: "/chat/completions",
			body: `{"model":"gpt-x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there world"}]}`,
			want: map[string]any{
				"object": "chat.completion", "model": "gpt-x",
				"choices.0.message.role":                           "assistant",
				"choices.0.message.content":                        "tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15 tok16",
				"choices.0.finish_reason":                          "stop",
				"usage.prompt_tokens":                              11, // (3+2)+(3+3)
				"usage.completion_tokens":                          16,
				"usage.total_tokens":                               27,
				"usage.prompt_tokens_details.cached_tokens":        0,
				"usage.completion_tokens_details.reasoning_tokens": 0,
			},
		},
		{
			name: "chat max_tokens limits",
			path: "/chat/completions",
			body: `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
			want: map[string]any{
				"choices.0.message.content": "tok1 tok2 tok3 tok4 tok5",
				"choices.0.finish_reason":   "length",
				"usage.prompt_tokens":       4,
				"usage.completion_tokens":   5,
				"usage.total_tokens":        9,
			},
		},
		{
			name: "chat max_completion_tokens and content parts",
			path: "/chat/completions",
			body: `{"model":"m","max_completion_tokens":4,"messages":[{"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"http://x"}},{"type":"text","text":"three"}]}]}`,
			want: map[string]any{
				"choices.0.finish_reason": "length",
				"usage.prompt_tokens":     6,
				"usage.completion_tokens": 4,
			},
		},
		{
			name: "max_tokens equal to default is not a limit",
			path: "/chat/completions",
			body: `{"model":"m","max_tokens":16,"messages":[]}`,
			want: map[string]any{
				"choices.0.finish_reason": "stop",
				"usage.prompt_tokens":     0,
				"usage.completion_tokens": 16,
			},
		},
		{
			name: "chat tokens directive capped by max_tokens",
			path: "/chat/completions",
			body: `{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi [mock:tokens=3]"}]}`,
			want: map[string]any{
				"choices.0.message.content": "tok1 tok2",
				"choices.0.finish_reason":   "length",
				"usage.completion_tokens":   2,
			},
		},
		{
			name: "chat tokens cached reasoning",
			path: "/chat/completions",
			body: `{"model":"m","messages":[{"role":"user","content":"a b c [mock:tokens=3,cached=2,reasoning=4]"}]}`,
			want: map[string]any{
				"choices.0.message.content":                        "tok1 tok2 tok3",
				"choices.0.finish_reason":                          "stop",
				"usage.prompt_tokens":                              7,
				"usage.completion_tokens":                          7, // 3 visible + 4 reasoning
				"usage.total_tokens":                               14,
				"usage.prompt_tokens_details.cached_tokens":        2,
				"usage.completion_tokens_details.reasoning_tokens": 4,
			},
		},
		{
			name: "chat cached capped at prompt",
			path: "/chat/completions",
			body: `{"model":"m","messages":[{"role":"user","content":"[mock:cached=100]"}]}`,
			want: map[string]any{
				"usage.prompt_tokens":                       4,
				"usage.prompt_tokens_details.cached_tokens": 4,
			},
		},
		{
			name: "chat nousage",
			path: "/chat/completions",
			body: `{"model":"m","messages":[{"role":"user","content":"[mock:nousage]"}]}`,
			want: map[string]any{"usage": false, "choices.0.finish_reason": "stop"},
		},
		{
			name: "chat missing model",
			path: "/chat/completions",
			body: `{"messages":[{"role":"user","content":"x"}]}`,
			want: map[string]any{"model": "mock"},
		},
		{
			name: "chat escaped model echoed",
			path: "/chat/completions",
			body: `{"model":"a\"b\u00e9","messages":[]}`,
			want: map[string]any{"model": "a\"bé"},
		},
		{
			name: "completions string prompt",
			path: "/completions",
			body: `{"model":"davinci","prompt":"a b  c\n d"}`,
			want: map[string]any{
				"object":                  "text_completion",
				"model":                   "davinci",
				"choices.0.finish_reason": "stop",
				"usage.prompt_tokens":     4,
				"usage.completion_tokens": 16,
				"usage.total_tokens":      20,
			},
		},
		{
			name: "completions array prompt with token arrays",
			path: "/completions",
			body: `{"model":"m","prompt":["a b",[1,2,3],"c"],"max_tokens":1}`,
			want: map[string]any{
				"choices.0.text":          "tok1",
				"choices.0.finish_reason": "length",
				"usage.prompt_tokens":     6,
				"usage.completion_tokens": 1,
			},
		},
		{
			name: "responses string input",
			path: "/responses",
			body: `{"model":"r1","input":"tell me a joke"}`,
			want: map[string]any{
				"object":                  "response",
				"status":                  "completed",
				"model":                   "r1",
				"output.0.type":           "message",
				"output.0.role":           "assistant",
				"output.0.content.0.type": "output_text",
				"output.0.content.0.text": "tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15 tok16",
				"usage.input_tokens":      4,
				"usage.output_tokens":     16,
				"usage.total_tokens":      20,
				"usage.input_tokens_details.cached_tokens":     0,
				"usage.output_tokens_details.reasoning_tokens": 0,
			},
		},
		{
			name: "responses items instructions max_output_tokens",
			path: "/responses",
			body: `{"model":"r","instructions":"be nice","max_output_tokens":3,"input":[{"role":"user","content":[{"type":"input_text","text":"a b c"}]},{"role":"assistant","content":"ok [mock:cached=5,reasoning=2]"}]}`,
			want: map[string]any{
				"output.0.content.0.text":                      "tok1 tok2 tok3",
				"usage.input_tokens":                           13, // 2 + (3+3) + (3+2)
				"usage.output_tokens":                          5,
				"usage.total_tokens":                           18,
				"usage.input_tokens_details.cached_tokens":     5,
				"usage.output_tokens_details.reasoning_tokens": 2,
			},
		},
		{
			name: "responses nousage",
			path: "/responses",
			body: `{"model":"r","input":"x","metadata":{"note":"[mock:nousage]"}}`,
			want: map[string]any{"usage": false, "status": "completed"},
		},
		{
			name: "messages with system blocks",
			path: "/messages",
			body: `{"model":"claude-x","max_tokens":1024,"system":[{"type":"text","text":"you are helpful"}],"messages":[{"role":"user","content":"hi there"}]}`,
			want: map[string]any{
				"type":                              "message",
				"role":                              "assistant",
				"model":                             "claude-x",
				"content.0.type":                    "text",
				"content.0.text":                    "tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15 tok16",
				"stop_reason":                       "end_turn",
				"stop_sequence":                     nil,
				"usage.input_tokens":                8,
				"usage.output_tokens":               16,
				"usage.cache_creation_input_tokens": 0,
				"usage.cache_read_input_tokens":     0,
			},
		},
		{
			name: "messages max_tokens cached",
			path: "/messages",
			body: `{"model":"c","max_tokens":3,"system":"sys","messages":[{"role":"user","content":[{"type":"text","text":"a b c [mock:cached=2]"}]},{"role":"assistant","content":"x"}]}`,
			want: map[string]any{
				"content.0.text":                "tok1 tok2 tok3",
				"stop_reason":                   "max_tokens",
				"usage.input_tokens":            10, // 1 + (3+4) + (3+1) = 12, minus 2 cached
				"usage.cache_read_input_tokens": 2,
				"usage.output_tokens":           3,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, base+tc.path, tc.body)
			mustOK(t, r)
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			checkPaths(t, r.body, tc.want)
		})
	}
}

func TestIDsAreDeterministic(t *testing.T) {
	_, base := startTest(t, Config{})
	for i, tc := range []struct{ path, body, want string }{
		{"/chat/completions", `{"messages":[]}`, "chatcmpl-mock-1"},
		{"/completions", `{"prompt":"x"}`, "cmpl-mock-2"},
		{"/responses", `{"input":"x"}`, "resp_mock_3"},
		{"/messages", `{"messages":[]}`, "msg_mock_4"},
	} {
		r := post(t, base+tc.path, tc.body)
		mustOK(t, r)
		if got := gjson.GetBytes(r.body, "id").Str; got != tc.want {
			t.Errorf("request %d id %q, want %q", i+1, got, tc.want)
		}
	}
}

func TestOutputTokensConfig(t *testing.T) {
	_, base := startTest(t, Config{OutputTokens: 3})
	r := post(t, base+"/chat/completions", `{"messages":[]}`)
	mustOK(t, r)
	checkPaths(t, r.body, map[string]any{
		"choices.0.message.content": "tok1 tok2 tok3",
		"usage.completion_tokens":   3,
	})
}

func TestEmbeddings(t *testing.T) {
	_, base := startTest(t, Config{})
	tests := []struct {
		name   string
		input  string
		extra  string
		n      int
		prompt int
	}{
		{"string", `"a b c"`, "", 1, 3},
		{"strings", `["a b","c",""]`, "", 3, 3},
		{"token array", `[1,2,3,4]`, "", 1, 4},
		{"token arrays", `[[1,2],[3,4,5]]`, "", 2, 5},
		{"base64", `["x y"]`, `,"encoding_format":"base64"`, 1, 2},
		{"nousage", `"[mock:nousage]"`, "", 1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, base+"/embeddings", `{"model":"emb","input":`+tc.input+tc.extra+`}`)
			mustOK(t, r)
			want := map[string]any{"object": "list", "model": "emb", "data.#": tc.n}
			if tc.prompt >= 0 {
				want["usage.prompt_tokens"] = tc.prompt
				want["usage.total_tokens"] = tc.prompt
			} else {
				want["usage"] = false
			}
			checkPaths(t, r.body, want)
			for i, d := range gjson.GetBytes(r.body, "data").Array() {
				checkPaths(t, []byte(d.Raw), map[string]any{"object": "embedding", "index": i})
				e := d.Get("embedding")
				if strings.Contains(tc.extra, "base64") {
					raw, err := base64.StdEncoding.DecodeString(e.Str)
					if err != nil || len(raw) != 4*embeddingDims {
						t.Errorf("base64 embedding %q: %v, %d bytes", e.Str, err, len(raw))
					}
					continue
				}
				if n := len(e.Array()); n != embeddingDims {
					t.Errorf("embedding has %d floats, want %d", n, embeddingDims)
				}
				for _, f := range e.Array() {
					if f.Type != gjson.Number || f.Float() < -1 || f.Float() >= 1 {
						t.Errorf("embedding value %s out of [-1,1)", f.Raw)
					}
				}
			}
		})
	}

	// Same input, same vector; different input, different vector.
	a := post(t, base+"/embeddings", `{"model":"e","input":["hello","world","hello"]}`)
	b := post(t, base+"/embeddings", `{"model":"e","input":"hello"}`)
	mustOK(t, a)
	mustOK(t, b)
	v0 := gjson.GetBytes(a.body, "data.0.embedding").Raw
	if v0 != gjson.GetBytes(a.body, "data.2.embedding").Raw || v0 != gjson.GetBytes(b.body, "data.0.embedding").Raw {
		t.Errorf("embeddings of the same input differ")
	}
	if v0 == gjson.GetBytes(a.body, "data.1.embedding").Raw {
		t.Errorf("embeddings of different inputs are equal")
	}
}

func TestModels(t *testing.T) {
	_, base := startTest(t, Config{})
	r := do(t, http.MethodGet, base+"/models", "", nil)
	mustOK(t, r)
	checkPaths(t, r.body, map[string]any{"object": "list", "data.0.object": "model", "data.#": len(modelIDs)})
	r = do(t, http.MethodGet, base+"/models/anything", "", nil)
	mustOK(t, r)
	checkPaths(t, r.body, map[string]any{"id": "anything", "object": "model"})
}

// TestCountTokens: /v1/messages/count_tokens reports the prompt a
// /v1/messages call with the same body would count (system and messages).
func TestCountTokens(t *testing.T) {
	_, base := startTest(t, Config{})
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"messages", `{"model":"m","messages":[{"role":"user","content":"one two three"}]}`, 3 + 3},
		{"system and blocks", `{"model":"m","system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"a b"}]},{"role":"assistant","content":"c"}]}`, 2 + 3 + 2 + 3 + 1},
		{"empty", `{"model":"m","messages":[]}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, base+"/messages/count_tokens", tc.body, nil)
			mustOK(t, r)
			checkPaths(t, r.body, map[string]any{"input_tokens": tc.want})
		})
	}
}

// TestStoredResponses: a response the mock issued can be retrieved, its
// input items listed, and deleted, after which it is 404 like an id the
// mock never issued.
func TestStoredResponses(t *testing.T) {
	_, base := startTest(t, Config{})
	r := post(t, base+"/responses", `{"model":"m","input":"hi"}`)
	mustOK(t, r)
	id := gjson.GetBytes(r.body, "id").String()
	for _, tc := range []struct {
		name, method, path string
		status             int
		want               map[string]any
	}{
		{"get", http.MethodGet, "/responses/" + id, 200, map[string]any{"id": id, "object": "response", "status": "completed"}},
		{"input items", http.MethodGet, "/responses/" + id + "/input_items", 200, map[string]any{"object": "list", "data.#": 0, "first_id": nil}},
		{"post", http.MethodPost, "/responses/" + id, 405, nil},
		{"delete items", http.MethodDelete, "/responses/" + id + "/input_items", 405, nil},
		{"unknown", http.MethodGet, "/responses/resp_other", 404, map[string]any{"error.code": "unknown_url"}},
		{"delete", http.MethodDelete, "/responses/" + id, 200, map[string]any{"id": id, "deleted": true}},
		{"get deleted", http.MethodGet, "/responses/" + id, 404, nil},
		{"items deleted", http.MethodGet, "/responses/" + id + "/input_items", 404, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, base+tc.path, "", nil)
			if r.err != nil || r.status != tc.status {
				t.Fatalf("status %d (%v), want %d: %s", r.status, r.err, tc.status, r.body)
			}
			checkPaths(t, r.body, tc.want)
		})
	}
}

func TestErrors(t *testing.T) {
	_, base := startTest(t, Config{})
	tests := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		typ                      string // OpenAI error.type or Anthropic error.type
		anthropic                bool
		retryAfter               string
	}{
		{name: "unknown path", method: "POST", path: "/nope", body: `{}`, status: 404, typ: "invalid_request_error"},
		{name: "unknown path outside v1", method: "GET", path: "/../foo", status: 404, typ: "invalid_request_error"},
		{name: "invalid json", method: "POST", path: "/chat/completions", body: `{"messages":[`, status: 400, typ: "invalid_request_error"},
		{name: "not an object", method: "POST", path: "/embeddings", body: `[1]`, status: 400, typ: "invalid_request_error"},
		{name: "empty body", method: "POST", path: "/responses", body: ``, status: 400, typ: "invalid_request_error"},
		{name: "wrong method", method: "GET", path: "/chat/completions", status: 405, typ: "invalid_request_error"},
		{name: "unknown directive", method: "POST", path: "/chat/completions", body: `{"messages":[{"content":"[mock:bogus]"}]}`, status: 400, typ: "invalid_request_error"},
		{name: "bad directive value", method: "POST", path: "/chat/completions", body: `{"x":"[mock:tokens=many]"}`, status: 400, typ: "invalid_request_error"},
		{name: "unterminated directive", method: "POST", path: "/chat/completions", body: `{"x":"[mock:tokens=1"}`, status: 400, typ: "invalid_request_error"},
		{name: "status 500 in body", method: "POST", path: "/chat/completions", body: `{"messages":[{"content":"[mock:status=500]"}]}`, status: 500, typ: "server_error"},
		{name: "status 429 in body", method: "POST", path: "/completions", body: `{"prompt":"[mock:status=429]"}`, status: 429, typ: "requests", retryAfter: "1"},
		{name: "status via header", method: "POST", path: "/embeddings", body: `{"input":"x"}`, hdr: map[string]string{"X-Mock": "status=503"}, status: 503, typ: "server_error"},
		{name: "status via bracketed header", method: "POST", path: "/responses", body: `{"input":"x"}`, hdr: map[string]string{"X-Mock": "[mock:status=401]"}, status: 401, typ: "invalid_request_error"},
		{name: "status on models", method: "GET", path: "/models", hdr: map[string]string{"X-Mock": "status=500"}, status: 500, typ: "server_error"},
		{name: "status applies before JSON parsing", method: "POST", path: "/chat/completions", body: `not json`, hdr: map[string]string{"X-Mock": "status=502"}, status: 502, typ: "server_error"},
		{name: "anthropic 429", method: "POST", path: "/messages", body: `{"messages":[{"role":"user","content":"[mock:status=429]"}]}`, status: 429, typ: "rate_limit_error", anthropic: true, retryAfter: "1"},
		{name: "anthropic 529", method: "POST", path: "/messages", body: `{}`, hdr: map[string]string{"X-Mock": "status=529"}, status: 529, typ: "overloaded_error", anthropic: true},
		{name: "anthropic invalid json", method: "POST", path: "/messages", body: `{`, status: 400, typ: "invalid_request_error", anthropic: true},
		{name: "count_tokens invalid json", method: "POST", path: "/messages/count_tokens", body: `{`, status: 400, typ: "invalid_request_error", anthropic: true},
		{name: "count_tokens wrong method", method: "GET", path: "/messages/count_tokens", status: 405, typ: "invalid_request_error", anthropic: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, base+tc.path, tc.body, tc.hdr)
			if r.err != nil {
				t.Fatalf("request: %v", r.err)
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if tc.anthropic {
				checkPaths(t, r.body, map[string]any{"type": "error", "error.type": tc.typ, "error.message": true})
			} else {
				checkPaths(t, r.body, map[string]any{"error.type": tc.typ, "error.message": true, "error.code": true})
			}
			if got := r.header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
		})
	}
}

func TestFailEvery(t *testing.T) {
	_, base := startTest(t, Config{FailEvery: 3})
	for i := 1; i <= 7; i++ {
		r := post(t, base+"/chat/completions", `{"messages":[]}`)
		if r.err != nil {
			t.Fatal(r.err)
		}
		want := http.StatusOK
		if i%3 == 0 {
			want = http.StatusInternalServerError
		}
		if r.status != want {
			t.Errorf("request %d: status %d, want %d", i, r.status, want)
		}
	}
}

func TestRequestsAndLastRequest(t *testing.T) {
	s, base := startTest(t, Config{})
	if n := s.Requests(); n != 0 {
		t.Fatalf("Requests() = %d before any request", n)
	}
	if p, b, h := s.LastRequest(); p != "" || b != nil || h != nil {
		t.Fatalf("LastRequest() before any request = %q %q %v", p, b, h)
	}
	body := `{"model":"gpt-x","stream":false,"stream_options":{"include_usage":true},"messages":[]}`
	r := do(t, http.MethodPost, base+"/chat/completions", body, map[string]string{
		"Authorization": "Bearer sk-upstream",
		"X-Custom":      "v1",
	})
	mustOK(t, r)
	post(t, base+"/does-not-exist", `{}`)
	if n := s.Requests(); n != 2 {
		t.Errorf("Requests() = %d, want 2", n)
	}
	path, got, _ := s.LastRequest()
	if path != "/v1/does-not-exist" || string(got) != `{}` {
		t.Errorf("LastRequest = %q %q", path, got)
	}

	r = do(t, http.MethodPost, base+"/chat/completions", body, map[string]string{"Authorization": "Bearer sk-upstream"})
	mustOK(t, r)
	path, got, hdr := s.LastRequest()
	if path != "/v1/chat/completions" || string(got) != body {
		t.Errorf("LastRequest = %q %q", path, got)
	}
	if hdr["Authorization"] != "Bearer sk-upstream" || hdr["Content-Type"] != "application/json" {
		t.Errorf("LastRequest headers = %v", hdr)
	}
	if _, ok := hdr["X-Custom"]; ok {
		t.Errorf("stale header from an earlier request: %v", hdr)
	}
	// The returned body is a copy.
	got[0] = 'X'
	if _, again, _ := s.LastRequest(); again[0] != '{' {
		t.Errorf("LastRequest body aliases internal state")
	}
}

func TestRequestsConcurrent(t *testing.T) {
	s, base := startTest(t, Config{})
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, base+"/chat/completions", `{"messages":[{"content":"x"}]}`)
			if r.err != nil || r.status != 200 {
				t.Errorf("status %d err %v", r.status, r.err)
			}
		}()
	}
	wg.Wait()
	if got := s.Requests(); got != n {
		t.Errorf("Requests() = %d, want %d", got, n)
	}
}

func TestHang(t *testing.T) {
	s, base := startTest(t, Config{})
	for _, tc := range []struct{ name, path, body string }{
		{"chat body directive", "/chat/completions", `{"messages":[{"content":"[mock:hang]"}]}`},
		{"stream body directive", "/chat/completions", `{"stream":true,"messages":[{"content":"[mock:hang]"}]}`},
		{"messages", "/messages", `{"messages":[{"role":"user","content":"please [mock:hang] now"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := doTimeout(t, http.MethodPost, base+tc.path, tc.body, nil, 200*time.Millisecond)
			var ne net.Error
			if r.err == nil || !errors.As(r.err, &ne) || !ne.Timeout() {
				t.Fatalf("want a client timeout, got status %d err %v body %q", r.status, r.err, r.body)
			}
			if el := time.Since(start); el < 200*time.Millisecond {
				t.Errorf("returned after %v, before the client timeout", el)
			}
		})
	}
	r := doTimeout(t, http.MethodPost, base+"/embeddings", `{"input":"x"}`, map[string]string{"X-Mock": "hang"}, 100*time.Millisecond)
	if r.err == nil {
		t.Fatalf("X-Mock: hang answered %d", r.status)
	}
	if got := s.Requests(); got != 4 {
		t.Errorf("Requests() = %d, want 4", got)
	}
	// The server still answers other requests.
	mustOK(t, post(t, base+"/chat/completions", `{"messages":[]}`))
}

func TestCloseEndsHangAndDelay(t *testing.T) {
	s, base, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	bodies := []string{
		`{"messages":[{"content":"[mock:hang]"}]}`,
		`{"messages":[{"content":"[mock:delay=1m]"}]}`,
		`{"stream":true,"messages":[{"content":"[mock:ttft=1m]"}]}`,
	}
	replies := make([]reply, len(bodies))
	for i, body := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = doTimeout(t, http.MethodPost, base+"/chat/completions", body, nil, 30*time.Second)
		}()
	}
	for s.Requests() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the handlers start waiting
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Close took %v", el)
	}
	wg.Wait()
	if r := replies[0]; r.err == nil {
		t.Errorf("hang answered %d after Close, want a dropped connection", r.status)
	}
	if r := replies[1]; r.err != nil || r.status != http.StatusServiceUnavailable {
		t.Errorf("interrupted delay: status %d err %v, want 503", r.status, r.err)
	}
	if r := replies[2]; r.err == nil {
		t.Errorf("interrupted stream ended cleanly: %q", r.body)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestTimings(t *testing.T) {
	_, base := startTest(t, Config{Latency: 60 * time.Millisecond})
	for _, tc := range []struct {
		name, body string
		min        time.Duration
	}{
		{"config latency", `{"messages":[]}`, 60 * time.Millisecond},
		{"delay directive adds up", `{"messages":[{"content":"[mock:delay=80ms]"}]}`, 140 * time.Millisecond},
		{"ttft directive", `{"stream":true,"messages":[{"content":"[mock:ttft=100ms]"}]}`, 100 * time.Millisecond},
		{"rate directive", `{"stream":true,"messages":[{"content":"[mock:tokens=6,rate=50]"}]}`, 100 * time.Millisecond}, // 5 gaps of 20ms
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			mustOK(t, post(t, base+"/chat/completions", tc.body))
			if el := time.Since(start); el < tc.min {
				t.Errorf("took %v, want at least %v", el, tc.min)
			}
		})
	}
}
