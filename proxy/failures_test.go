package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/proxy"
)

// TestFailedCallsAreFree: every failure leaves the balance untouched and
// answers with the documented status and an OpenAI-shaped error.
func TestFailedCallsAreFree(t *testing.T) {
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) {
		o.Timeouts.Request = 400 * time.Millisecond
		o.Timeouts.FirstByte = 400 * time.Millisecond
	}})
	key := e.account("acme", 100)
	cases := []struct {
		name, body string
		status     int
		code       string
		reachesUp  bool
	}{
		{"upstream 500", `{"model":"gpt-4o-mini","messages":` + msg("[mock:status=500]") + `}`, 502, "upstream_error", true},
		{"upstream 503 stream", `{"model":"gpt-4o-mini","stream":true,"messages":` + msg("[mock:status=503]") + `}`, 502, "upstream_error", true},
		{"upstream 429", `{"model":"gpt-4o-mini","messages":` + msg("[mock:status=429]") + `}`, 429, "", true},
		{"upstream 400 passes through", `{"model":"gpt-4o-mini","messages":` + msg("[mock:status=400]") + `}`, 400, "", true},
		{"upstream hangs", `{"model":"gpt-4o-mini","messages":` + msg("[mock:hang]") + `}`, 504, "upstream_timeout", true},
		{"upstream hangs before stream", `{"model":"gpt-4o-mini","stream":true,"messages":` + msg("[mock:hang]") + `}`, 504, "upstream_timeout", true},
		{"connection refused", `{"model":"dead-model","messages":` + msg("hi") + `}`, 502, "upstream_error", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.balance("acme")
			reqs := e.mock.Requests()
			r := e.post("/v1/chat/completions", key, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if code := r.errorCode(t); tc.code != "" && code != tc.code {
				t.Fatalf("error code %q, want %q", code, tc.code)
			}
			if tc.status == 429 && r.header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			after := e.balance("acme")
			if after.Balance != before.Balance || after.Reserved != 0 {
				t.Fatalf("balance %d → %d, reserved %d: a failed call was charged or its hold kept", before.Balance, after.Balance, after.Reserved)
			}
			if got := e.mock.Requests() - reqs; (got > 0) != tc.reachesUp {
				t.Fatalf("upstream requests %d, reaches upstream %v", got, tc.reachesUp)
			}
			// The cost record says failed, charged nothing.
			g := e.do(http.MethodGet, "/v1/generation?id="+r.header.Get("X-Request-Id"), key, "")
			if g.status != 200 {
				t.Fatalf("generation: %d %s", g.status, g.body)
			}
			if m := g.json(t); m["failed"] != true || m["credits_charged"] != "0.000" {
				t.Fatalf("cost record %s", g.body)
			}
		})
	}
	e.assertLedger("acme")
}

func TestRefusedBeforeForwarding(t *testing.T) {
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) { o.MaxBodyBytes = 64 << 10 }})
	rich := e.account("rich", 100)
	poor := e.account("poor", 0)
	cases := []struct {
		name, key, path, body string
		hdr                   []string
		status                int
		code                  string
	}{
		{"no credits", poor, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":` + msg("hi") + `}`, nil, 402, "insufficient_credits"},
		{"max_tokens unaffordable", rich, "/v1/chat/completions", `{"model":"gpt-4.1","messages":` + msg("hi") + `,"max_tokens":32000}`, nil, 402, "insufficient_credits"},
		{"malformed JSON", rich, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[`, nil, 400, "invalid_request"},
		{"not an object", rich, "/v1/chat/completions", `[1,2,3]`, nil, 400, "invalid_request"},
		{"deep nesting", rich, "/v1/chat/completions", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), nil, 400, "invalid_request"},
		{"invalid UTF-8", rich, "/v1/chat/completions", "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", nil, 400, "invalid_request"},
		{"missing model", rich, "/v1/chat/completions", `{"messages":[]}`, nil, 400, "invalid_request"},
		{"unknown model", rich, "/v1/chat/completions", `{"model":"gpt-9","messages":` + msg("hi") + `}`, nil, 404, "model_not_found"},
		{"model path trick", rich, "/v1/chat/completions", `{"model":"../../admin/v1/accounts","messages":[]}`, nil, 404, "model_not_found"},
		{"negative max_tokens", rich, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"max_tokens":-5}`, nil, 400, "invalid_request"},
		{"huge max_tokens", rich, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"max_tokens":99999999999999}`, nil, 400, "invalid_request"},
		{"fractional max_tokens", rich, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"max_tokens":1.5}`, nil, 400, "invalid_request"},
		{"stream not bool", rich, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"stream":"yes"}`, nil, 400, "invalid_request"},
		{"oversized body", rich, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":` + msg(strings.Repeat("x", 70<<10)) + `}`, nil, 413, "request_too_large"},
		{"no key", "", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, nil, 401, "missing_api_key"},
		{"bad key", "tg-not-a-real-key", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, nil, 401, "invalid_api_key"},
		{"basic auth", "", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, []string{"Authorization", "Basic Zm9vOmJhcg=="}, 401, "missing_api_key"},
		{"unknown route", rich, "/v1/nothing", `{}`, nil, 404, "not_found"},
		{"embeddings stream", rich, "/v1/embeddings", `{"model":"text-embedding-3-small","input":"a","stream":true}`, nil, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reqs := e.mock.Requests()
			r := e.post(tc.path, tc.key, tc.body, tc.hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if code := r.errorCode(t); code != tc.code {
				t.Fatalf("code %q, want %q: %s", code, tc.code, r.body)
			}
			if e.mock.Requests() != reqs {
				t.Fatal("the upstream was called")
			}
		})
	}
	if b := e.balance("rich"); b.Balance != 100_000 || b.Reserved != 0 {
		t.Fatalf("rich account changed: %+v", b)
	}
	r := e.post("/v1/chat/completions", poor, `{"model":"gpt-4o-mini","messages":[]}`)
	if m := r.json(t)["error"].(map[string]any)["message"].(string); !strings.Contains(m, "needs at least") || !strings.Contains(m, "0.000 available") {
		t.Fatalf("402 message does not say what is needed and available: %q", m)
	}
	e.assertLedger("rich")
	e.assertLedger("poor")
}

// Per-call holds: with Redis down no call is forwarded; each is refused 503.
func TestRedisDownRefusesWith503(t *testing.T) {
	e := newEnv(t, envOpts{perCall: true})
	key := e.account("acme", 100)
	if r := e.post("/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":`+msg("warm the key cache")+`}`); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	e.redis.Stop()
	reqs := e.mock.Requests()
	for _, body := range []string{
		`{"model":"gpt-4o-mini","messages":` + msg("hi") + `}`,
		`{"model":"gpt-4o-mini","stream":true,"messages":` + msg("hi") + `}`,
	} {
		r := e.post("/v1/chat/completions", key, body)
		if r.status != 503 || r.errorCode(t) != "store_unavailable" {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	if e.mock.Requests() != reqs {
		t.Fatal("forwarded while Redis was down")
	}
	assertHealth(t, e)
}

// Credit leases: with Redis down, calls the replica's live lease covers are
// still served (held by the lease, which Redis keeps) until the offline
// window passes; then every call is refused 503 and none is forwarded. When
// Redis is back, each call served meanwhile is charged exactly once.
func TestRedisDownLeaseServesThenRefuses(t *testing.T) {
	e := newEnv(t, envOpts{leaseOffline: 300 * time.Millisecond, redisArgs: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	key := e.account("acme", 100)
	body := `{"model":"gpt-4o-mini","messages":` + msg("hi") + `}`
	warm := e.post("/v1/chat/completions", key, body)
	if warm.status != 200 {
		t.Fatalf("warm-up: %d %s", warm.status, warm.body)
	}
	e.redis.Stop()
	var served int64
	charged := credits(t, warm.header.Get("X-Credits-Charged"))
	refusedAt := time.Time{}
	stopped := time.Now()
	for time.Since(stopped) < 5*time.Second {
		r := e.post("/v1/chat/completions", key, body)
		if r.status == 503 {
			if r.errorCode(t) != "store_unavailable" {
				t.Fatalf("503 with code %q", r.errorCode(t))
			}
			refusedAt = time.Now()
			break
		}
		if r.status != 200 {
			t.Fatalf("status %d during the outage: %s", r.status, r.body)
		}
		served++
		charged += credits(t, r.header.Get("X-Credits-Charged"))
		time.Sleep(20 * time.Millisecond)
	}
	if refusedAt.IsZero() {
		t.Fatal("still served 5 s into the outage: the offline window is not enforced")
	}
	reqs := e.mock.Requests()
	for i := 0; i < 3; i++ {
		if r := e.post("/v1/chat/completions", key, body); r.status != 503 {
			t.Fatalf("status %d after the offline window", r.status)
		}
	}
	if e.mock.Requests() != reqs {
		t.Fatal("forwarded after the offline window")
	}
	assertHealth(t, e)

	e.redis.Restart(t)
	e.assertLedger("acme") // applies what waited
	entries, err := e.store.AllEntries(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	var usage, debits int64
	for _, en := range entries {
		if en.Type == "usage" {
			usage++
			debits -= en.Amount
		}
	}
	if usage != served+1 {
		t.Fatalf("%d usage entries, want the warm-up and the %d calls served during the outage", usage, served)
	}
	if debits != charged {
		t.Fatalf("debits %d mc; the callers were told %d mc", debits, charged)
	}
	t.Logf("served %d calls from the lease during the outage, refused from %s after", served, refusedAt.Sub(stopped).Round(time.Millisecond))
}

func assertHealth(t *testing.T, e *env) {
	t.Helper()
	if r := e.do(http.MethodGet, "/readyz", "", ""); r.status != 503 {
		t.Fatalf("readyz with Redis down: %d", r.status)
	}
	if r := e.do(http.MethodGet, "/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz: %d", r.status)
	}
}

func TestRevokedKeyRefusedWithinASecond(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	body := `{"model":"gpt-4o-mini","messages":` + msg("hi") + `}`
	if r := e.post("/v1/chat/completions", key, body); r.status != 200 {
		t.Fatalf("before revoke: %d", r.status)
	}
	keys, err := e.store.Keys(context.Background(), "acme")
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	if err := e.store.RevokeKey(context.Background(), "acme", keys[0].ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for {
		r := e.post("/v1/chat/completions", key, body)
		if r.status == 401 {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("revoked key still accepted after %v", time.Since(revoked))
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.assertLedger("acme")
}

// TestConcurrentCallsNeverOverdraw: 1,000 concurrent calls on one account
// funded for about 300 of them.
func TestConcurrentCallsNeverOverdraw(t *testing.T) {
	e := newEnv(t, envOpts{})
	body := `{"model":"gpt-4o-mini","messages":` + msg("count") + `,"max_tokens":16}`
	// Price one call: its hold is the input estimate plus 16 output tokens.
	probeKey := e.account("probe", 10)
	ref := e.post("/v1/chat/completions", probeKey, body)
	if ref.status != 200 {
		t.Fatalf("probe: %d %s", ref.status, ref.body)
	}
	cost := credits(t, ref.header.Get("X-Credits-Charged"))
	hold := int64(len(body)/2+16)*1 + 16*2
	fund := 300 * hold // enough for ~300 concurrent holds
	key := e.account("acme", 0)
	if _, err := e.store.Credit(context.Background(), creditOf("acme", fund)); err != nil {
		t.Fatal(err)
	}

	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := e.post("/v1/chat/completions", key, body)
			switch r.status {
			case 200:
				ok.Add(1)
			case 402:
				refused.Add(1)
			default:
				other.Add(1)
				t.Errorf("status %d: %s", r.status, r.body)
			}
			if bal := e.balance("acme").Balance; bal < 0 {
				t.Errorf("balance went negative: %d", bal)
			}
		}()
	}
	wg.Wait()
	a := e.balance("acme")
	if a.Balance < 0 || a.Balance != fund-ok.Load()*cost {
		t.Fatalf("balance %d, want %d − %d×%d", a.Balance, fund, ok.Load(), cost)
	}
	if ok.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("ok %d refused %d: the test did not exercise the limit", ok.Load(), refused.Load())
	}
	t.Logf("1000 calls: %d served, %d refused with 402, balance left %d mc", ok.Load(), refused.Load(), a.Balance)
	e.assertLedger("acme")
}

func TestFallbackToNextDeployment(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	r := e.post("/v1/chat/completions", key, `{"model":"fallback-model","messages":`+msg("hi")+`}`)
	if r.status != 200 || r.header.Get("X-Tollgate-Provider") != "openai" {
		t.Fatalf("status %d provider %q: %s", r.status, r.header.Get("X-Tollgate-Provider"), r.body)
	}
	if _, body, _ := e.mock.LastRequest(); !strings.Contains(string(body), `"served-by-second"`) {
		t.Fatalf("second deployment's model name not sent: %s", body)
	}
	want := expectedCost(t, "pro", r.json(t)["usage"].(map[string]any))
	if got := credits(t, r.header.Get("X-Credits-Charged")); got != want {
		t.Fatalf("charged %d, want %d at the asked model's rate", got, want)
	}
	e.assertLedger("acme")
}

func TestForwardedRequest(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	r := e.post("/v1/chat/completions", key, `{"model":"gpt-4.1-mini","stream":true,"messages":`+msg("hi")+`}`)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	_, body, hdr := e.mock.LastRequest()
	for _, want := range []string{`"model":"gpt-4.1-mini-2025"`, `"include_usage":true`, `"max_tokens":`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("upstream body lacks %s: %s", want, body)
		}
	}
	auth := hdr["Authorization"]
	if auth == "" {
		auth = hdr["authorization"]
	}
	if auth != "Bearer sk-upstream-secret" {
		t.Errorf("upstream Authorization = %q, want the provider key (headers %v)", auth, hdr)
	}
	if strings.Contains(fmt.Sprint(hdr), key) {
		t.Error("the client's Tollgate key was forwarded upstream")
	}
	e.assertLedger("acme")
}

func TestSlowHeaderClientIsCut(t *testing.T) {
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) { o.ReadTimeout = 300 * time.Millisecond }})
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	start := time.Now()
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	if time.Since(start) > 4*time.Second {
		t.Fatal("a client that never finished its headers kept the connection open")
	}
}

// TestOversizedBodyIsAnsweredNotReset: a client that sends a body far past
// the limit before reading gets the 413 it was sent, not a TCP reset. The
// proxy answers after reading the headers; without a lingering close the
// socket is closed with the client's bytes unread and the kernel resets the
// connection under the client's write.
func TestOversizedBodyIsAnsweredNotReset(t *testing.T) {
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) { o.MaxBodyBytes = 64 << 10 }})
	key := e.account("acme", 100)
	for _, size := range []int{70 << 10, 32 << 20} {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		body := `{"model":"gpt-4o-mini","messages":` + msg(strings.Repeat("x", size)) + `}`
		req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil { // the whole body, before reading anything
			t.Fatalf("%d-byte body: write: %v", size, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%d-byte body: reading the answer: %v", size, err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = c.Close()
		if resp.StatusCode != 413 || !strings.Contains(string(b), "request_too_large") {
			t.Fatalf("%d-byte body: %d %s", size, resp.StatusCode, b)
		}
	}
	if e.mock.Requests() != 0 {
		t.Fatal("the upstream was called")
	}
	e.assertLedger("acme")
}

// TestMessagesErrorsAreAnthropicShaped: /v1/messages errors carry Anthropic's
// envelope and type names, with the OpenAI fields inside.
func TestMessagesErrorsAreAnthropicShaped(t *testing.T) {
	e := newEnv(t, envOpts{})
	poor := e.account("poor", 0)
	for _, tc := range []struct {
		key, body string
		status    int
		typ, code string
	}{
		{poor, `{"model":"claude-sonnet","max_tokens":10,"messages":[]}`, 402, "billing_error", "insufficient_credits"},
		{poor, `{"model":"nope","max_tokens":10,"messages":[]}`, 404, "not_found_error", "model_not_found"},
		{"", `{}`, 401, "authentication_error", "missing_api_key"},
		{poor, `{"model":`, 400, "invalid_request_error", "invalid_request"},
	} {
		r := e.post("/v1/messages", tc.key, tc.body)
		m := r.json(t)
		inner, _ := m["error"].(map[string]any)
		if r.status != tc.status || m["type"] != "error" || inner["type"] != tc.typ || inner["code"] != tc.code || inner["message"] == "" {
			t.Errorf("%s: %d %s", tc.body, r.status, r.body)
		}
	}
}

// TestGatewaySetOutputLimitField: when the gateway must set an output limit
// the client did not, it uses the model's configured field (OpenAI reasoning
// models refuse max_tokens).
func TestGatewaySetOutputLimitField(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 10)
	for _, tc := range []struct{ model, want, not string }{
		{"o3-mini", `"max_completion_tokens":`, `"max_tokens":`},
		{"gpt-4.1-mini", `"max_tokens":`, `"max_completion_tokens":`},
	} {
		if r := e.post("/v1/chat/completions", key, `{"model":"`+tc.model+`","messages":`+msg("hi")+`}`); r.status != 200 {
			t.Fatalf("%s: %d %s", tc.model, r.status, r.body)
		}
		_, body, _ := e.mock.LastRequest()
		if !strings.Contains(string(body), tc.want) || strings.Contains(string(body), tc.not) {
			t.Errorf("%s: upstream body %s, want %s and no %s", tc.model, body, tc.want, tc.not)
		}
	}
	e.assertLedger("acme")
}
