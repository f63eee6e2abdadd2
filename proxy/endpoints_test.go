package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/proxy"
)

// anthropicError checks an Anthropic error envelope and returns its type and
// message.
func (r result) anthropicError(t *testing.T) (typ, message string) {
	t.Helper()
	m := r.json(t)
	e, ok := m["error"].(map[string]any)
	if m["type"] != "error" || !ok {
		t.Fatalf("not an Anthropic error envelope: %s", r.body)
	}
	typ, _ = e["type"].(string)
	message, _ = e["message"].(string)
	if typ == "" || message == "" {
		t.Fatalf("Anthropic error lacks type or message: %s", r.body)
	}
	return typ, message
}

// TestModelGet: GET /v1/models/{id} answers one entry of GET /v1/models, by
// id or alias, without a key like the list; with anthropic-version both
// answer (and refuse) in Anthropic's shapes.
func TestModelGet(t *testing.T) {
	e := newEnv(t, envOpts{})
	var list struct {
		Data []map[string]any `json:"data"`
	}
	if r := e.do(http.MethodGet, "/v1/models", "", ""); r.status != 200 || json.Unmarshal(r.body, &list) != nil {
		t.Fatalf("GET /v1/models: %d %s", r.status, r.body)
	}
	entry := func(id string) map[string]any {
		for _, m := range list.Data {
			if m["id"] == id {
				return m
			}
		}
		t.Fatalf("%s not listed", id)
		return nil
	}
	av := []string{"anthropic-version", "2023-06-01"}
	for _, tc := range []struct {
		name, method, path string
		hdr                []string
		status             int
		want               map[string]any // the whole body (200)
		code, anthropicTyp string         // the error (OpenAI code or Anthropic type)
	}{
		{name: "by id", method: "GET", path: "/v1/models/gpt-4.1", status: 200, want: entry("gpt-4.1")},
		{name: "by alias", method: "GET", path: "/v1/models/mini", status: 200, want: entry("gpt-4o-mini")},
		{name: "head", method: "HEAD", path: "/v1/models/gpt-4.1", status: 200},
		{name: "unknown", method: "GET", path: "/v1/models/no-such-model", status: 404, code: "model_not_found"},
		{name: "empty id", method: "GET", path: "/v1/models/", status: 404, code: "model_not_found"},
		{name: "post", method: "POST", path: "/v1/models/gpt-4.1", status: 405, code: "method_not_allowed"},
		{name: "anthropic by id", method: "GET", path: "/v1/models/claude-sonnet", hdr: av, status: 200,
			want: map[string]any{"type": "model", "id": "claude-sonnet", "display_name": "claude-sonnet", "created_at": "1970-01-01T00:00:00Z"}},
		{name: "anthropic by alias", method: "GET", path: "/v1/models/mini", hdr: av, status: 200,
			want: map[string]any{"type": "model", "id": "gpt-4o-mini", "display_name": "gpt-4o-mini", "created_at": "1970-01-01T00:00:00Z"}},
		{name: "anthropic unknown", method: "GET", path: "/v1/models/no-such-model", hdr: av, status: 404, anthropicTyp: "not_found_error"},
		{name: "anthropic post", method: "POST", path: "/v1/models", hdr: av, status: 405, anthropicTyp: "invalid_request_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, "", "", tc.hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			switch {
			case tc.want != nil:
				if got := r.json(t); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("body %v\nwant %v", got, tc.want)
				}
			case tc.code != "":
				if got := r.errorCode(t); got != tc.code {
					t.Fatalf("error code %q, want %q: %s", got, tc.code, r.body)
				}
			case tc.anthropicTyp != "":
				if typ, _ := r.anthropicError(t); typ != tc.anthropicTyp {
					t.Fatalf("error type %q, want %q", typ, tc.anthropicTyp)
				}
			}
		})
	}

	t.Run("anthropic list", func(t *testing.T) {
		r := e.do(http.MethodGet, "/v1/models", "", "", av...)
		var got struct {
			Data []struct {
				Type, ID, DisplayName, CreatedAt string
			} `json:"data"`
			HasMore *bool  `json:"has_more"`
			FirstID string `json:"first_id"`
			LastID  string `json:"last_id"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		ms := e.catalog.Models()
		if len(got.Data) != len(ms) || got.HasMore == nil || *got.HasMore || got.FirstID != ms[0].ID || got.LastID != ms[len(ms)-1].ID {
			t.Fatalf("list %s", r.body)
		}
		for i, m := range got.Data {
			if m.Type != "model" || m.ID != ms[i].ID {
				t.Fatalf("entry %d: %+v", i, m)
			}
		}
	})
}

// TestCountTokens: POST /v1/messages/count_tokens is authenticated, resolved
// and forwarded like /v1/messages (the provider's key and model name, the
// client's Anthropic headers) and relays the provider's count; it charges
// and holds nothing.
func TestCountTokens(t *testing.T) {
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) { o.MaxBodyBytes = 64 << 10 }})
	key := e.account("acme", 100)
	const body = `{"model":"claude-sonnet","system":"be brief","messages":[{"role":"user","content":"count these four words"}]}`
	xkey := func(k string) []string { return []string{"x-api-key", k, "anthropic-version", "2023-06-01"} }
	for _, tc := range []struct {
		name, method, key, body string
		hdr                     []string
		status                  int
		typ                     string // Anthropic error type ("" for 200)
		msg                     string // in the error message
		tokens                  int64  // the mock's count (200)
		forwarded               bool   // the mock saw the request
	}{
		{name: "bearer", method: "POST", key: key, body: body, status: 200, tokens: 2 + 3 + 4, forwarded: true},
		{name: "x-api-key and headers", method: "POST", body: body, status: 200, tokens: 9, forwarded: true,
			hdr: append(xkey(key), "anthropic-version", "2024-01-01", "anthropic-beta", "token-counting-2024-11-01")},
		{name: "widening beta is not refused", method: "POST", key: key, body: body, status: 200, tokens: 9, forwarded: true,
			hdr: []string{"anthropic-beta", "context-1m-2025-08-07"}},
		{name: "max_tokens allowed", method: "POST", key: key, status: 200, tokens: 3 + 1, forwarded: true,
			body: `{"model":"claude-sonnet","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`},
		{name: "no key", method: "POST", body: body, status: 401, typ: "authentication_error"},
		{name: "bad key", method: "POST", key: "tg-nope", body: body, status: 401, typ: "authentication_error"},
		{name: "unknown model", method: "POST", key: key, body: `{"model":"nope","messages":[]}`, status: 404, typ: "not_found_error"},
		{name: "openai model", method: "POST", key: key, body: `{"model":"gpt-4o-mini","messages":[]}`, status: 400,
			typ: "invalid_request_error", msg: "/v1/chat/completions"},
		{name: "missing model", method: "POST", key: key, body: `{"messages":[]}`, status: 400, typ: "invalid_request_error", msg: "model"},
		{name: "duplicate key", method: "POST", key: key, body: `{"model":"claude-sonnet","model":"gpt-4.1","messages":[]}`, status: 400, typ: "invalid_request_error"},
		{name: "invalid json", method: "POST", key: key, body: `{"model":`, status: 400, typ: "invalid_request_error"},
		{name: "too large", method: "POST", key: key, body: `{"model":"claude-sonnet","x":"` + strings.Repeat("a", 70<<10) + `"}`, status: 413, typ: "request_too_large"},
		{name: "get", method: "GET", key: key, status: 405, typ: "invalid_request_error"},
		{name: "provider refuses the request", method: "POST", key: key, status: 400, forwarded: true,
			body: `{"model":"claude-sonnet","messages":[{"role":"user","content":"[mock:status=400]"}]}`, typ: "invalid_request_error", msg: "forced status"},
		{name: "provider fails", method: "POST", key: key, status: 502, forwarded: true,
			body: `{"model":"claude-sonnet","messages":[{"role":"user","content":"[mock:status=500]"}]}`, typ: "api_error"},
		{name: "provider rate limits", method: "POST", key: key, status: 429, forwarded: true,
			body: `{"model":"claude-sonnet","messages":[{"role":"user","content":"[mock:status=429]"}]}`, typ: "rate_limit_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.balance("acme")
			entries, err := e.store.AllEntries(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			calls := e.mock.Requests()
			r := e.do(tc.method, "/v1/messages/count_tokens", tc.key, tc.body, tc.hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.typ != "" {
				typ, msg := r.anthropicError(t)
				if typ != tc.typ || !strings.Contains(msg, tc.msg) {
					t.Fatalf("error %q %q, want %q containing %q", typ, msg, tc.typ, tc.msg)
				}
			} else {
				var got struct {
					InputTokens *int64 `json:"input_tokens"`
				}
				if json.Unmarshal(r.body, &got) != nil || got.InputTokens == nil || *got.InputTokens != tc.tokens {
					t.Fatalf("body %s, want input_tokens %d", r.body, tc.tokens)
				}
				if r.header.Get("X-Tollgate-Provider") != "anthropic" || r.header.Get("X-Request-Id") == "" {
					t.Fatalf("headers %v", r.header)
				}
			}
			if sent := e.mock.Requests() - calls; sent != map[bool]int64{true: 1}[tc.forwarded] {
				t.Fatalf("%d upstream requests, want forwarded=%v", sent, tc.forwarded)
			}
			if tc.forwarded {
				path, up, hdr := e.mock.LastRequest()
				var sent map[string]any
				if err := json.Unmarshal(up, &sent); err != nil {
					t.Fatal(err)
				}
				if path != "/v1/messages/count_tokens" || sent["model"] != "claude-sonnet-4-5" {
					t.Fatalf("upstream got %s %s", path, up)
				}
				if hdr["X-Api-Key"] != "sk-ant-secret" || hdr["Authorization"] != "" {
					t.Fatalf("upstream credentials %v", hdr)
				}
				wantV, wantB := "2023-06-01", ""
				for i := 0; i+1 < len(tc.hdr); i += 2 {
					switch tc.hdr[i] {
					case "anthropic-version":
						wantV = tc.hdr[i+1]
					case "anthropic-beta":
						wantB = tc.hdr[i+1]
					}
				}
				if hdr["Anthropic-Version"] != wantV || hdr["Anthropic-Beta"] != wantB {
					t.Fatalf("upstream Anthropic headers %q %q, want %q %q", hdr["Anthropic-Version"], hdr["Anthropic-Beta"], wantV, wantB)
				}
				if bytes.Contains(up, []byte(key)) {
					t.Fatal("the client's key reached the provider")
				}
			}
			after := e.balance("acme")
			now, err := e.store.AllEntries(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before, after) || len(now) != len(entries) {
				t.Fatalf("account moved: %+v → %+v, %d → %d ledger entries", before, after, len(entries), len(now))
			}
		})
	}
	e.assertLedger("acme")
}

// TestMessagesNonAnthropicModel: /v1/messages for a model no Anthropic
// deployment serves is the caller's mistake (400 naming the endpoint that
// serves it), not a provider failure SDKs would retry; nothing is forwarded,
// held or charged.
func TestMessagesNonAnthropicModel(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	for _, model := range []string{"gpt-4o-mini", "mini", "dead-model"} {
		t.Run(model, func(t *testing.T) {
			before := e.balance("acme")
			calls := e.mock.Requests()
			r := e.post("/v1/messages", key, `{"model":"`+model+`","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`)
			if r.status != 400 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if typ, msg := r.anthropicError(t); typ != "invalid_request_error" || !strings.Contains(msg, "/v1/chat/completions") {
				t.Fatalf("error %q %q", typ, msg)
			}
			if e.mock.Requests() != calls {
				t.Fatal("forwarded")
			}
			if after := e.balance("acme"); !reflect.DeepEqual(before, after) {
				t.Fatalf("account moved: %+v → %+v", before, after)
			}
		})
	}
	e.assertLedger("acme")
}
