package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/limits"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/proxy"
)

// Plan limits through real proxies: calls that run at once, on two replicas
// over one Redis, never pass a period limit by more than one call's worth.

var limitPlans = []config.Plan{
	{ID: "one", Name: "One", StripePriceID: "price_one", MinSeats: 1, Limits: config.PlanLimits{Requests: 1}},
	{ID: "out", Name: "Out", StripePriceID: "price_out", MinSeats: 1, Limits: config.PlanLimits{OutputTokens: 100}},
	{ID: "in", Name: "In", StripePriceID: "price_in", MinSeats: 1, Limits: config.PlanLimits{InputTokens: 30}},
	{ID: "credits", Name: "Credits", StripePriceID: "price_credits", MinSeats: 1, Limits: config.PlanLimits{Credits: 1}},
}

// planLimiter is each replica's Limiter, over its own Store.
func planLimiter(st *metering.Store) proxy.Limiter {
	return limits.New(st, limits.Options{Plans: limitPlans})
}

// subscribe gives account a live subscription to plan.
func (e *env) subscribe(account, plan string) {
	e.t.Helper()
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	ok, err := e.store.SaveSubscription(context.Background(), account, metering.Subscription{ID: "sub_" + account,
		Plan: plan, Seats: 1, Status: "active", PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0)}, time.Now())
	if err != nil || !ok {
		e.t.Fatalf("subscribing %s to %s: %v %v", account, plan, ok, err)
	}
}

// limitBody is a chat call on gpt-4o-mini (1 mc per input token, 2 per
// output token) with max_tokens (none when 0) and a mock directive.
func limitBody(maxTokens int, directive string) string {
	mt := ""
	if maxTokens > 0 {
		mt = fmt.Sprintf(`"max_tokens":%d,`, maxTokens)
	}
	return `{"model":"gpt-4o-mini",` + mt + `"messages":` + msg("hello there [mock:"+directive+"]") + `}`
}

// burst sends n chat calls at once, spread over the replicas at urls.
func (e *env) burst(urls []string, key, body string, n int) []result {
	out := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = e.doAt(urls[i%len(urls)], http.MethodPost, "/v1/chat/completions", key, body)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// limitParam is the limit a 429 names in error.param.
func limitParam(t *testing.T, r result) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	p, _ := e["param"].(string)
	return p
}

// served counts the 200s of rs; every other answer must be a 429 naming limit.
func served(t *testing.T, rs []result, limit string) int64 {
	t.Helper()
	var n int64
	for _, r := range rs {
		switch {
		case r.status == http.StatusOK:
			n++
		case r.status != http.StatusTooManyRequests || r.errorCode(t) != "rate_limit_exceeded":
			t.Errorf("status %d: %s", r.status, r.body)
		case limitParam(t, r) != limit || r.header.Get("Retry-After") == "":
			t.Errorf("429 naming %q (Retry-After %q), want %q: %s", limitParam(t, r), r.header.Get("Retry-After"), limit, r.body)
		}
	}
	return n
}

// settleAll applies every replica's settled calls and gives their leases back.
func (e *env) settleAll(others ...*lease.Leaser) {
	e.t.Helper()
	e.sync()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, l := range others {
		if err := l.Return(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

// planUsage is the account's period usage (what the billing usage API
// shows) once every call has ended: no period hold may be left.
func (e *env) planUsage(account string) metering.Usage {
	e.t.Helper()
	_, u, err := e.store.PlanUsage(context.Background(), account)
	if err != nil {
		e.t.Fatal(err)
	}
	if u.HeldInputTokens != 0 || u.HeldOutputTokens != 0 || u.HeldCredits != 0 {
		e.t.Fatalf("usage %+v: period holds left after every call ended", u)
	}
	return u
}

// TestPlanRequestLimitAcrossReplicas: twenty calls at once, on two replicas,
// on a plan allowing one request: exactly one is served.
func TestPlanRequestLimitAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{limiter: planLimiter})
	second, secondLease := e.replica("second")
	key := e.account("acme", 100)
	e.subscribe("acme", "one")

	rs := e.burst([]string{e.url, second}, key, limitBody(30, "tokens=30,delay=100ms"), 20)
	if n := served(t, rs, limits.LimitRequests); n != 1 {
		t.Fatalf("%d of 20 calls served on a plan of 1 request, want exactly 1", n)
	}
	e.settleAll(secondLease)
	if u := e.planUsage("acme"); u.Requests != 1 || u.OutputTokens != 30 {
		t.Fatalf("usage %+v, want the one call served: 1 request, 30 output tokens", u)
	}
	testledger.Assert(t, e.store, "acme")
}

// TestPlanPeriodLimitsAcrossReplicas: twenty calls at once, on two replicas,
// against each period limit of tokens and credits: the period's counter ends
// at most one call's worth past the limit, and equals what was served.
func TestPlanPeriodLimitsAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{limiter: planLimiter})
	second, secondLease := e.replica("second")
	for _, c := range []struct {
		name, acct, plan, limit string
		body                    string
		max                     int64 // the plan's limit (mc for credits)
		used                    func(metering.Usage) int64
	}{
		{"output tokens", "out1", "out", limits.LimitOutputTokens, limitBody(30, "tokens=30,delay=100ms"), 100,
			func(u metering.Usage) int64 { return u.OutputTokens }},
		{"output tokens, grant capped", "out2", "out", limits.LimitOutputTokens, limitBody(0, "tokens=30,delay=100ms"), 100,
			func(u metering.Usage) int64 { return u.OutputTokens }},
		{"input tokens", "in", "in", limits.LimitInputTokens, limitBody(30, "tokens=30,delay=100ms"), 30,
			func(u metering.Usage) int64 { return u.InputTokens }},
		{"credits", "credits", "credits", limits.LimitCredits, limitBody(30, "tokens=30,delay=100ms"), 1000,
			func(u metering.Usage) int64 { return u.Credits }},
	} {
		t.Run(c.name, func(t *testing.T) {
			acct := c.acct
			key := e.account(acct, 1000)
			e.subscribe(acct, c.plan)
			n := served(t, e.burst([]string{e.url, second}, key, c.body, 20), c.limit)
			e.settleAll(secondLease)
			u := e.planUsage(acct)
			if n == 0 || u.Requests != n {
				t.Fatalf("%d served, usage %+v: want at least one call served, and counted", n, u)
			}
			// Every served call used the same: one call's worth is the average.
			used := c.used(u)
			if one := used / n; used > c.max+one {
				t.Fatalf("%s used %d by %d calls, limit %d: more than one call's worth (%d) over", c.limit, used, n, c.max, one)
			}
			a := e.balance(acct)
			if u.Credits != a.Consumed || u.OutputTokens > 30*n {
				t.Fatalf("usage %+v disagrees with the ledger (consumed %d mc) or the calls", u, a.Consumed)
			}
			testledger.Assert(t, e.store, acct)
		})
	}
}

// TestPeriodHoldOfAHungCallExpires: a call whose replica no longer answers
// for it (here: its provider hangs past the hold TTL, as a killed replica
// would leave it) holds the period's allowance only until the hold TTL.
func TestPeriodHoldOfAHungCallExpires(t *testing.T) {
	e := newEnv(t, envOpts{limiter: planLimiter, holdTTL: time.Second, proxy: func(o *proxy.Options) {
		o.Timeouts.Request, o.Timeouts.FirstByte = time.Minute, time.Minute
	}})
	key := e.account("acme", 100)
	e.subscribe("acme", "out") // 100 output tokens

	hung, done := make(chan result, 1), make(chan struct{})
	go func() {
		defer close(done)
		hung <- e.post("/v1/chat/completions", key, limitBody(100, "hang"))
	}()
	t.Cleanup(func() { _ = e.mock.Close(); <-done }) // however the test ends
	for deadline := time.Now().Add(10 * time.Second); e.mock.Requests() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hanging call never reached the provider")
		}
	}
	r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10"))
	if r.status != http.StatusTooManyRequests || limitParam(t, r) != limits.LimitOutputTokens {
		t.Fatalf("while a call holds the period's 100 output tokens: %d %s, want 429 output_tokens", r.status, r.body)
	}
	// Nothing renews the hung call's period hold: it expires at the hold TTL.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r = e.post("/v1/chat/completions", key, limitBody(10, "tokens=10"))
		if r.status == http.StatusOK {
			break
		}
		if r.status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after the hold TTL: %d %s", r.status, r.body)
		}
	}
	select {
	case h := <-hung:
		t.Fatalf("the hanging call ended (%d %s) before its period hold expired", h.status, h.body)
	default:
	}
	_ = e.mock.Close() // the provider drops the hanging call: it fails, uncharged
	if h := <-hung; h.status < 500 {
		t.Fatalf("the hanging call: %d %s, want a failure", h.status, h.body)
	}
	e.sync()
	if u := e.planUsage("acme"); u.Requests != 1 || u.OutputTokens != 10 {
		t.Fatalf("usage %+v: want the one call served (the failed one is no request), 10 output tokens", u)
	}
	testledger.Assert(t, e.store, "acme")
}

// TestFailedCallIsNotARequest: a call the provider fails is not charged and
// not counted against the plan's requests, once its release is applied (from
// a credit lease: within milliseconds; until then it holds the request).
func TestFailedCallIsNotARequest(t *testing.T) {
	e := newEnv(t, envOpts{limiter: planLimiter})
	key := e.account("acme", 100)
	e.subscribe("acme", "one")
	if r := e.post("/v1/chat/completions", key, limitBody(10, "status=500")); r.status != http.StatusBadGateway {
		t.Fatalf("failed call: %d %s", r.status, r.body)
	}
	e.sync()
	if r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusOK {
		t.Fatalf("the plan's one request after a failed call: %d %s", r.status, r.body)
	}
	if r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusTooManyRequests {
		t.Fatalf("past the plan's one request: %d %s", r.status, r.body)
	}
	e.sync()
	if u := e.planUsage("acme"); u.Requests != 1 || u.OutputTokens != 10 {
		t.Fatalf("usage %+v, want 1 request, 10 output tokens", u)
	}
	testledger.Assert(t, e.store, "acme")
}

// TestCallRefusedForCreditsIsNotARequest: a call admitted by its plan and
// then refused by Reserve (402) gives its admission back.
func TestCallRefusedForCreditsIsNotARequest(t *testing.T) {
	e := newEnv(t, envOpts{limiter: planLimiter})
	key := e.account("acme", 0)
	e.subscribe("acme", "one")
	if r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusPaymentRequired {
		t.Fatalf("without credits: %d %s", r.status, r.body)
	}
	if u := e.planUsage("acme"); u.Requests != 0 {
		t.Fatalf("usage %+v: a call refused for credits counted as a request", u)
	}
	if _, err := e.store.Credit(context.Background(), creditOf("acme", 10_000)); err != nil {
		t.Fatal(err)
	}
	if r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusOK {
		t.Fatalf("the plan's one request: %d %s", r.status, r.body)
	}
	e.sync()
	if u := e.planUsage("acme"); u.Requests != 1 || u.OutputTokens != 10 {
		t.Fatalf("usage %+v, want 1 request, 10 output tokens", u)
	}
	testledger.Assert(t, e.store, "acme")
}
