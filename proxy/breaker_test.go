package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// flaky is a provider on 127.0.0.1 that counts the calls it receives and
// answers each with the next status of its script (then with its default):
// 200 is a chat completion with usage, anything else an error.
type flaky struct {
	srv      *httptest.Server
	calls    atomic.Int64
	mu       sync.Mutex
	script   []int
	fallback int
	keys     map[string]int // Authorization values received
	xkeys    map[string]int // x-api-key values received
}

func newFlaky(t *testing.T, status int) *flaky {
	f := &flaky{fallback: status, keys: map[string]int{}, xkeys: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		f.mu.Lock()
		st := f.fallback
		if len(f.script) > 0 {
			st, f.script = f.script[0], f.script[1:]
		}
		f.keys[r.Header.Get("Authorization")]++
		f.xkeys[r.Header.Get("X-Api-Key")]++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if st != 200 {
			w.WriteHeader(st)
			_, _ = fmt.Fprintf(w, `{"error":{"message":"down","type":"server_error"}}`)
			return
		}
		_, _ = fmt.Fprint(w, `{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flaky) set(status int, script ...int) {
	f.mu.Lock()
	f.fallback, f.script = status, script
	f.mu.Unlock()
}

// withProvider adds a provider named name at f and the models to the test
// catalog, and applies more to the Options.
func withProvider(t *testing.T, name string, f *flaky, models []pricing.ModelSpec, more func(*proxy.Options)) func(*proxy.Options) {
	return func(o *proxy.Options) {
		spec := testSpec()
		spec.Models = append(spec.Models, models...)
		cat, err := pricing.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		o.Catalog = cat
		o.Providers = append(o.Providers, proxy.Provider{Name: name, Kind: "openai", BaseURL: f.srv.URL + "/v1", APIKey: "sk-" + name})
		if more != nil {
			more(o)
		}
	}
}

// usageEntries counts the account's usage (charge) entries in its ledger.
func (e *env) usageEntries(id string) int {
	e.t.Helper()
	e.sync()
	entries, err := e.store.AllEntries(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, en := range entries {
		if en.Type == "usage" {
			n++
		}
	}
	return n
}

// A deployment whose third consecutive call failed is not called again
// for its cool-down while its fallback serves; after the cool-down one call
// probes it: a failure shuts it for another cool-down, a success opens it
// again. Each call is charged once, whichever deployment served it.
func TestBreakerSkipsAFailingDeployment(t *testing.T) {
	bad := newFlaky(t, 500)
	var clock atomic.Int64 // nanoseconds past start
	start := time.Now()
	models := []pricing.ModelSpec{
		{ID: "flaky-model", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
			Deployments: []pricing.DeploymentSpec{{Provider: "bad", Model: "x"}, {Provider: "openai", Model: "fallback"}}},
		{ID: "only-bad", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
			Deployments: []pricing.DeploymentSpec{{Provider: "bad", Model: "x"}}},
	}
	e := newEnv(t, envOpts{proxy: withProvider(t, "bad", bad, models, func(o *proxy.Options) {
		o.Breaker = proxy.Breaker{Failures: 3, CoolDown: time.Minute}
	})})
	proxy.SetClock(e.srv, func() time.Time { return start.Add(time.Duration(clock.Load())) })
	key := e.account("acme", 100)
	served := 0
	call := func(want int, provider string) {
		t.Helper()
		r := e.post("/v1/chat/completions", key, `{"model":"flaky-model","messages":`+msg("hi")+`}`)
		if r.status != want || r.header.Get("X-Tollgate-Provider") != provider {
			t.Fatalf("status %d provider %q, want %d %q: %s", r.status, r.header.Get("X-Tollgate-Provider"), want, provider, r.body)
		}
		served++
		if want := expectedCost(t, "pro", r.json(t)["usage"].(map[string]any)); credits(t, r.header.Get("X-Credits-Charged")) != want {
			t.Fatalf("charged %s, want %d mc", r.header.Get("X-Credits-Charged"), want)
		}
		if n := e.usageEntries("acme"); n != served {
			t.Fatalf("%d charges in the ledger after %d calls", n, served)
		}
	}
	for i := 1; i <= 3; i++ {
		call(200, "openai")
		if got := bad.calls.Load(); got != int64(i) {
			t.Fatalf("failing deployment called %d times after %d calls", got, i)
		}
	}
	if st := e.srv.BreakerState("bad", "x"); st != proxy.BreakerOpen {
		t.Fatalf("breaker %s after 3 failures, want open", st)
	}
	for i := 0; i < 5; i++ {
		call(200, "openai")
	}
	if got := bad.calls.Load(); got != 3 {
		t.Fatalf("open deployment called %d times, want 3 (skipped while open)", got)
	}
	// A reload keeps the deployment's breaker (and its state).
	if err := e.srv.Reload(proxy.Live{Catalog: e.opts.Catalog, Providers: e.opts.Providers}); err != nil {
		t.Fatal(err)
	}
	call(200, "openai")
	if got := bad.calls.Load(); got != 3 {
		t.Fatalf("after a reload the open deployment was called (%d calls)", got)
	}
	// Without a fallback the open deployment is still tried (and refused).
	if r := e.post("/v1/chat/completions", key, `{"model":"only-bad","messages":`+msg("hi")+`}`); r.status != 502 || bad.calls.Load() != 4 {
		t.Fatalf("no fallback: status %d, deployment called %d times (want 502 and 4)", r.status, bad.calls.Load())
	}

	clock.Add(int64(time.Minute)) // the cool-down is over: one probe, which fails
	call(200, "openai")
	if got, st := bad.calls.Load(), e.srv.BreakerState("bad", "x"); got != 5 || st != proxy.BreakerOpen {
		t.Fatalf("after cool-down: called %d times (want 5: one probe), breaker %s (want open again)", got, st)
	}
	call(200, "openai")
	if got := bad.calls.Load(); got != 5 {
		t.Fatalf("failed probe: deployment called %d times, want 5", got)
	}

	bad.set(200)
	clock.Add(int64(time.Minute))
	call(200, "bad") // the probe succeeds
	if st := e.srv.BreakerState("bad", "x"); st != proxy.BreakerClosed {
		t.Fatalf("breaker %s after a good probe, want closed", st)
	}
	call(200, "bad")
	if got := bad.calls.Load(); got != 7 {
		t.Fatalf("closed again: deployment called %d times, want 7", got)
	}
	e.assertLedger("acme")
}

// Failures the provider cannot have billed (429, 5xx) are retried on the
// same deployment with backoff, within Retry.Attempts; the call is charged
// once.
func TestRetriesThenServes(t *testing.T) {
	up := newFlaky(t, 200)
	models := []pricing.ModelSpec{{ID: "retried", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
		Deployments: []pricing.DeploymentSpec{{Provider: "up", Model: "m"}}}}
	e := newEnv(t, envOpts{proxy: withProvider(t, "up", up, models, func(o *proxy.Options) {
		o.Retry = proxy.Retry{Attempts: 2, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	})})
	key := e.account("acme", 100)
	up.set(200, 503, 429)
	r := e.post("/v1/chat/completions", key, `{"model":"retried","messages":`+msg("hi")+`}`)
	if r.status != 200 || up.calls.Load() != 3 {
		t.Fatalf("status %d after %d calls, want 200 after 3: %s", r.status, up.calls.Load(), r.body)
	}
	if n := e.usageEntries("acme"); n != 1 {
		t.Fatalf("%d charges for one call", n)
	}
	// Past Attempts the last failure is the answer, uncharged.
	up.set(200, 500, 500, 500, 500)
	r = e.post("/v1/chat/completions", key, `{"model":"retried","messages":`+msg("hi")+`}`)
	if r.status != 502 || up.calls.Load() != 6 {
		t.Fatalf("status %d after %d calls, want 502 after 6", r.status, up.calls.Load())
	}
	if n := e.usageEntries("acme"); n != 1 {
		t.Fatalf("%d charges after a failed call, want 1", n)
	}
	e.assertLedger("acme")
}

// A provider's keys share its calls in proportion to their weights.
func TestWeightedKeys(t *testing.T) {
	up := newFlaky(t, 200)
	models := []pricing.ModelSpec{{ID: "keyed", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 8192,
		Deployments: []pricing.DeploymentSpec{{Provider: "up", Model: "m"}}}}
	e := newEnv(t, envOpts{proxy: withProvider(t, "up", up, models, func(o *proxy.Options) {
		p := &o.Providers[len(o.Providers)-1]
		p.APIKey, p.APIKeys = "", []proxy.APIKey{{Key: "sk-a", Weight: 3}, {Key: "sk-b", Weight: 1}}
	})})
	key := e.account("acme", 1000)
	const n = 400
	for i := 0; i < n; i++ {
		if r := e.post("/v1/chat/completions", key, `{"model":"keyed","max_tokens":5,"messages":`+msg("hi")+`}`); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	up.mu.Lock()
	a, b := up.keys["Bearer sk-a"], up.keys["Bearer sk-b"]
	up.mu.Unlock()
	// Expected 300 and 100 (σ ≈ 8.7): far outside these only by a bug.
	if a+b != n || a < 240 || a > 360 {
		t.Fatalf("key a took %d calls, b %d (of %d; want about 3:1): %v", a, b, n, up.keys)
	}
	if len(up.keys) != 2 {
		t.Fatalf("keys seen: %v", up.keys)
	}
	e.assertLedger("acme")
}

// A deployment that cannot be reached is retried (nothing reached it),
// then the fallback serves; one charge.
func TestConnectErrorRetriedThenFallback(t *testing.T) {
	obs := &countingObserver{}
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) {
		o.Observer = obs
		o.Retry = proxy.Retry{Attempts: 2, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	}})
	key := e.account("acme", 100)
	r := e.post("/v1/chat/completions", key, `{"model":"fallback-model","messages":`+msg("hi")+`}`)
	if r.status != 200 || r.header.Get("X-Tollgate-Provider") != "openai" {
		t.Fatalf("status %d provider %q: %s", r.status, r.header.Get("X-Tollgate-Provider"), r.body)
	}
	obs.mu.Lock()
	tries := obs.upstream[[2]string{"down", proxy.ReasonNetwork}]
	obs.mu.Unlock()
	if tries != 3 {
		t.Fatalf("%d failed attempts at the unreachable deployment, want 3 (the first and 2 retries)", tries)
	}
	if n := e.usageEntries("acme"); n != 1 {
		t.Fatalf("%d charges", n)
	}
	e.assertLedger("acme")
}

// Anthropic's native API gets the drawn key as x-api-key, never as a bearer.
func TestWeightedKeysNative(t *testing.T) {
	up := newFlaky(t, 200)
	models := []pricing.ModelSpec{{ID: "claude-keyed", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 8192,
		Deployments: []pricing.DeploymentSpec{{Provider: "up", Model: "m"}}}}
	e := newEnv(t, envOpts{proxy: withProvider(t, "up", up, models, func(o *proxy.Options) {
		p := &o.Providers[len(o.Providers)-1]
		p.Kind, p.APIKey, p.APIKeys = "anthropic", "", []proxy.APIKey{{Key: "sk-a", Weight: 1}, {Key: "sk-b", Weight: 1}}
	})})
	key := e.account("acme", 1000)
	const n = 60
	for i := 0; i < n; i++ {
		if r := e.post("/v1/messages", key, `{"model":"claude-keyed","max_tokens":5,"messages":`+msg("hi")+`}`); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	// Each key is drawn with p = 1/2: both missing from 60 draws only by a bug.
	if up.xkeys["sk-a"] == 0 || up.xkeys["sk-b"] == 0 || up.xkeys["sk-a"]+up.xkeys["sk-b"] != n || up.keys[""] != n {
		t.Fatalf("x-api-key %v, Authorization %v", up.xkeys, up.keys)
	}
}

// An answer over MaxResponseBytes reached the provider (which generated and
// billed it): the call is charged (TestOversizeAnswerIsCharged), it is not sent again to the
// fallback, and it does not count against the deployment's breaker (the
// request itself made it large: a few such calls must not shut a healthy
// deployment for everyone).
func TestOversizeAnswerNeitherFallsBackNorTripsTheBreaker(t *testing.T) {
	e, big, other := oversizeEnv(t, func(o *proxy.Options) { o.Breaker = proxy.Breaker{Failures: 2, CoolDown: time.Minute} })
	key := e.account("big", 100)
	for i := 1; i <= 4; i++ {
		r := e.post("/v1/chat/completions", key, `{"model":"big-model","max_tokens":50,"messages":`+msg("hi")+`}`)
		if r.status < 500 {
			t.Fatalf("call %d: status %d, want a 5xx for an answer over the limit: %s", i, r.status, r.body)
		}
		if got := big.calls.Load(); got != int64(i) {
			t.Fatalf("after %d calls the first deployment was called %d times (want one per call: the breaker stays closed)", i, got)
		}
	}
	if got := other.calls.Load(); got != 0 {
		t.Fatalf("the fallback was called %d times: each call would have been generated twice", got)
	}
	if st := e.srv.BreakerState("big", "x"); st != proxy.BreakerClosed {
		t.Fatalf("breaker %s after oversize answers, want closed", st)
	}
	if n := e.usageEntries("big"); n != 4 {
		t.Fatalf("%d charges for 4 answers generated", n)
	}
	e.assertLedger("big")
}

// No attempt starts past the call's send window (a stream's first-byte
// timeout since the call began): deployments failing slowly one after
// another would otherwise keep the call, and its hold, alive without end.
// The last failure is the answer, and nothing is charged.
func TestNoAttemptPastTheSendWindow(t *testing.T) {
	var slowCalls atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowCalls.Add(1)
		time.Sleep(150 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"message":"down","type":"server_error"}}`)
	}))
	t.Cleanup(slow.Close)
	models := []pricing.ModelSpec{{ID: "slow-model", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
		Deployments: []pricing.DeploymentSpec{{Provider: "slow", Model: "a"}, {Provider: "slow", Model: "b"}, {Provider: "openai", Model: "fallback"}}}}
	f := &flaky{srv: slow}
	e := newEnv(t, envOpts{proxy: withProvider(t, "slow", f, models, func(o *proxy.Options) {
		o.Timeouts.FirstByte = 250 * time.Millisecond
	})})
	key := e.account("acme", 100)
	before := e.balance("acme")
	r := e.post("/v1/chat/completions", key, `{"model":"slow-model","stream":true,"max_tokens":50,"messages":`+msg("hi")+`}`)
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d (provider %q), want 502: the third deployment was tried past the window", r.status, r.header.Get("X-Tollgate-Provider"))
	}
	if n := slowCalls.Load(); n != 2 {
		t.Fatalf("%d attempts at the slow deployments, want 2", n)
	}
	if after := e.balance("acme"); after.Balance != before.Balance || after.Reserved != 0 {
		t.Fatalf("balance %d -> %d, reserved %d", before.Balance, after.Balance, after.Reserved)
	}
	e.assertLedger("acme")
}
