package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/proxy"
)

var respIDRe = regexp.MustCompile(`"id":"(resp_[A-Za-z0-9_]+)"`)

// createResponse makes a metered POST /v1/responses for key and returns the
// provider's response id (from the body, or the stream's response.created).
func (e *env) createResponse(key string, stream bool) string {
	e.t.Helper()
	body := `{"model":"gpt-4o-mini","input":"hello there","max_output_tokens":8}`
	if stream {
		body = `{"model":"gpt-4o-mini","input":"hello there","max_output_tokens":8,"stream":true}`
	}
	r := e.post("/v1/responses", key, body)
	m := respIDRe.FindSubmatch(r.body)
	if r.status != 200 || m == nil {
		e.t.Fatalf("creating a response (stream %v): %d %s", stream, r.status, r.body)
	}
	return string(m[1])
}

// TestStoredResponses: GET and DELETE /v1/responses/{id} and GET
// /v1/responses/{id}/input_items are forwarded, free, with the provider's
// key, for the account that created the response (streamed or not); any
// other account, an unknown id and a deleted one get the same 404, and a
// missing key 401. previous_response_id is refused (400) unless the
// account's own.
func TestStoredResponses(t *testing.T) {
	e := newEnv(t, envOpts{})
	keyA, keyB := e.account("acct-a", 1000), e.account("acct-b", 1000)
	plain, streamed := e.createResponse(keyA, false), e.createResponse(keyA, true)
	e.createResponse(keyB, false) // B has responses of its own
	before := map[string]metering.Account{"acct-a": e.balance("acct-a"), "acct-b": e.balance("acct-b")}
	entries := func(id string) int {
		en, err := e.store.AllEntries(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return len(en)
	}
	ledgers := map[string]int{"acct-a": entries("acct-a"), "acct-b": entries("acct-b")}

	for _, id := range []string{plain, streamed} {
		for _, tc := range []struct {
			name, method, path, key string
			status                  int
			upstream                string // the path the provider saw ("" = not forwarded)
			code                    string // the error code
		}{
			{name: "get", method: "GET", path: "/v1/responses/" + id, key: keyA, status: 200, upstream: "/v1/responses/" + id},
			{name: "input items", method: "GET", path: "/v1/responses/" + id + "/input_items?limit=5", key: keyA, status: 200, upstream: "/v1/responses/" + id + "/input_items"},
			{name: "get other account", method: "GET", path: "/v1/responses/" + id, key: keyB, status: 404, code: "response_not_found"},
			{name: "input items other account", method: "GET", path: "/v1/responses/" + id + "/input_items", key: keyB, status: 404, code: "response_not_found"},
			{name: "delete other account", method: "DELETE", path: "/v1/responses/" + id, key: keyB, status: 404, code: "response_not_found"},
			{name: "no key", method: "GET", path: "/v1/responses/" + id, status: 401, code: "missing_api_key"},
			{name: "bad key", method: "GET", path: "/v1/responses/" + id, key: "tg-nope", status: 401, code: "invalid_api_key"},
			{name: "post", method: "POST", path: "/v1/responses/" + id, key: keyA, status: 405, code: "method_not_allowed"},
			{name: "delete input items", method: "DELETE", path: "/v1/responses/" + id + "/input_items", key: keyA, status: 405, code: "method_not_allowed"},
			{name: "unknown id", method: "GET", path: "/v1/responses/resp_mock_999999", key: keyA, status: 404, code: "response_not_found"},
			{name: "odd id", method: "GET", path: "/v1/responses/resp.x", key: keyA, status: 404, code: "response_not_found"},
			{name: "delete", method: "DELETE", path: "/v1/responses/" + id, key: keyA, status: 200, upstream: "/v1/responses/" + id},
			// The provider no longer has it: the same 404.
			{name: "get deleted", method: "GET", path: "/v1/responses/" + id, key: keyA, status: 404, upstream: "/v1/responses/" + id, code: "response_not_found"},
		} {
			t.Run(id+"/"+tc.name, func(t *testing.T) {
				n := e.mock.Requests()
				r := e.do(tc.method, tc.path, tc.key, "")
				if r.status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
				}
				if tc.code != "" {
					if got := r.errorCode(t); got != tc.code {
						t.Fatalf("code %q, want %q: %s", got, tc.code, r.body)
					}
				}
				if tc.upstream == "" {
					if e.mock.Requests() != n {
						t.Fatal("forwarded")
					}
					return
				}
				path, _, hdr := e.mock.LastRequest()
				if e.mock.Requests() != n+1 || path != tc.upstream || hdr["Authorization"] != "Bearer sk-upstream-secret" {
					t.Fatalf("provider saw %s %v", path, hdr)
				}
				if r.header.Get("X-Tollgate-Provider") != "openai" || r.header.Get("X-Credits-Charged") != "" {
					t.Fatalf("headers %v", r.header)
				}
				if tc.status == 200 && r.json(t)["id"] == nil && r.json(t)["object"] != "list" {
					t.Fatalf("body %s", r.body)
				}
			})
		}
	}
	for acct, a := range before {
		if got := e.balance(acct); got.Balance != a.Balance || got.Consumed != a.Consumed {
			t.Fatalf("%s: balance %d consumed %d, before %d %d", acct, got.Balance, got.Consumed, a.Balance, a.Consumed)
		}
		if n := entries(acct); n != ledgers[acct] {
			t.Fatalf("%s: %d ledger entries, before %d", acct, n, ledgers[acct])
		}
		e.assertLedger(acct)
	}

	// The owner is recorded in Redis (off the call's path: wait for it).
	live := e.createResponse(keyA, false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := e.store.StoredResponse(context.Background(), "acct-a", live)
		p := r.Provider
		if err == nil && p == "openai" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recorded: %q %v", p, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	t.Run("previous_response_id", func(t *testing.T) {
		// Responses stored by other providers (the mock serves them all):
		// one no deployment of gpt-4o-mini reaches, one at fallback-model's
		// dead first deployment, which alone may then serve the call.
		for id, p := range map[string]string{"resp_at_anthropic": "anthropic", "resp_at_down": "down"} {
			if err := e.store.RecordResponse(context.Background(), "acct-a", id, p, 0); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			name, key, model, prev string
			status                 int
			code                   string
		}{
			{"own", keyA, "gpt-4o-mini", `"` + live + `"`, 200, ""},
			{"other account's", keyB, "gpt-4o-mini", `"` + live + `"`, 400, "previous_response_not_found"},
			{"unknown", keyA, "gpt-4o-mini", `"resp_mock_999999"`, 400, "previous_response_not_found"},
			{"not a string", keyA, "gpt-4o-mini", `42`, 400, "invalid_request"},
			{"null", keyB, "gpt-4o-mini", `null`, 200, ""},
			{"own, at a provider the model lacks", keyA, "gpt-4o-mini", `"resp_at_anthropic"`, 400, "previous_response_not_found"},
			{"own, at the storing deployment only", keyA, "fallback-model", `"resp_at_down"`, 502, "upstream_error"},
			{"own, fallback model skips to the storing one", keyA, "fallback-model", `"` + live + `"`, 200, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				n := e.mock.Requests()
				r := e.post("/v1/responses", tc.key, `{"model":"`+tc.model+`","input":"more","max_output_tokens":8,"previous_response_id":`+tc.prev+`}`)
				if r.status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
				}
				if tc.code != "" {
					if got := r.errorCode(t); got != tc.code {
						t.Fatalf("code %q, want %q", got, tc.code)
					}
					if e.mock.Requests() != n {
						t.Fatal("a refused call was forwarded (or sent past the storing provider)")
					}
				}
			})
		}
		e.assertLedger("acct-a")
		e.assertLedger("acct-b")
	})
}

// TestOpenAISDKStoredResponses: the OpenAI Go SDK's Responses.Get,
// InputItems.List and Delete work through the gateway, and another
// account's id is an API error 404.
func TestOpenAISDKStoredResponses(t *testing.T) {
	e := newEnv(t, envOpts{})
	keyA, keyB := e.account("acct-a", 1000), e.account("acct-b", 1000)
	a := openai.NewClient(option.WithBaseURL(e.url+"/v1"), option.WithAPIKey(keyA), option.WithMaxRetries(0))
	b := openai.NewClient(option.WithBaseURL(e.url+"/v1"), option.WithAPIKey(keyB), option.WithMaxRetries(0))
	ctx := context.Background()
	id := e.createResponse(keyA, false)

	got, err := a.Responses.Get(ctx, id, responses.ResponseGetParams{})
	if err != nil || got.ID != id {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	if _, err := a.Responses.InputItems.List(ctx, id, responses.InputItemListParams{}); err != nil {
		t.Fatalf("InputItems.List: %v", err)
	}
	var apiErr *openai.Error
	if _, err := b.Responses.Get(ctx, id, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Fatalf("other account's Get: %v", err)
	}
	if err := a.Responses.Delete(ctx, id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := a.Responses.Get(ctx, id, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Fatalf("Get after Delete: %v", err)
	}
	e.assertLedger("acct-a")
}

// A continuation of a stored response (previous_response_id) whose answer
// carries no usage is estimated with the context the provider read again:
// the first response's prompt and visible output, recorded once its call
// settled. Counting the new input alone charged a long stored conversation
// as a few tokens (found by review).
func TestContinuationEstimateCountsStoredContext(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if bytes.Contains(b, []byte("previous_response_id")) { // no usage
			_, _ = io.WriteString(w, `{"id":"resp_2","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]}]}`)
			return
		}
		_, _ = io.WriteString(w, `{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a long answer"}]}],`+
			`"usage":{"input_tokens":5000,"input_tokens_details":{"cached_tokens":1000},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":100},"total_tokens":5300}}`)
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) { o.Providers[0].BaseURL = up.URL + "/v1" }})
	key := e.account("acct-c", 1000)
	if r := e.post("/v1/responses", key, `{"model":"gpt-4o-mini","input":"a long document","max_output_tokens":500}`); r.status != 200 {
		t.Fatalf("first response: %d %s", r.status, r.body)
	}
	// Its context (5,000 prompt + 200 visible output) is recorded off the
	// call's path: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := e.store.StoredResponse(context.Background(), "acct-c", "resp_1")
		if err == nil && r.Context == 5200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("context not recorded: %+v %v", r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := e.post("/v1/responses", key, `{"model":"gpt-4o-mini","input":"and?","previous_response_id":"resp_1","max_output_tokens":500}`)
	if r.status != 200 {
		t.Fatalf("continuation: %d %s", r.status, r.body)
	}
	e.sync() // the lease's batch holds the cost record
	g, err := e.store.Generation(context.Background(), "acct-c", r.header.Get("X-Request-Id"))
	if err != nil {
		t.Fatal(err)
	}
	if !g.Estimated || g.Input < 5200 || g.Input > 5200+50 {
		t.Fatalf("continuation estimated %v with %d input tokens, want the 5,200 of context and its few own", g.Estimated, g.Input)
	}
	e.assertLedger("acct-c")
}
