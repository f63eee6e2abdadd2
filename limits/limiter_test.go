package limits_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/limits"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/proxy"
)

var _ proxy.Limiter = (*limits.Limiter)(nil)

var _ limits.Store = (*metering.Store)(nil)

var testPlans = []config.Plan{
	{ID: "pro", Name: "Pro", StripePriceID: "price_pro", MinSeats: 1,
		Limits: config.PlanLimits{Requests: 3, RequestsPerMinute: 100}},
	{ID: "burst", Name: "Burst", StripePriceID: "price_burst", MinSeats: 1,
		Limits: config.PlanLimits{RequestsPerMinute: 1, PerSeat: true}},
	{ID: "tokens", Name: "Tokens", StripePriceID: "price_tokens", MinSeats: 1,
		Limits: config.PlanLimits{InputTokens: 100, OutputTokens: 1000, Credits: 1}},
	{ID: "seats", Name: "Seats", StripePriceID: "price_seats", MinSeats: 1,
		Limits: config.PlanLimits{Requests: 1, PerSeat: true}},
}

func setup(t *testing.T) (*metering.Store, context.Context) {
	t.Helper()
	st := metering.New(testredis.Start(t).Client(t), metering.Options{})
	return st, context.Background()
}

func subscribe(t *testing.T, st *metering.Store, account, plan string, seats int64, start time.Time) {
	t.Helper()
	if _, err := st.EnsureAccount(context.Background(), account); err != nil {
		t.Fatal(err)
	}
	_, err := st.SaveSubscription(context.Background(), account, metering.Subscription{ID: "sub_" + account,
		Plan: plan, Seats: seats, Status: "active", PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
}

// call is one call of account through the limiter: its hold request (id,
// the input cost as Fixed, output at 2 mc per token).
func call(account, id string, in, maxOut int64) proxy.LimitedCall {
	return proxy.LimitedCall{InputTokens: in, Choices: 1, Hold: metering.HoldRequest{
		Account: account, HoldID: id, Fixed: in, PerOutput: 2, MinOutput: min(maxOut, 1), MaxOutput: maxOut}}
}

// spend settles call id of account as the proxy would after Admit: cost mc
// for in and out tokens.
func spend(t *testing.T, st *metering.Store, account, id string, cost, in, out int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.Credit(ctx, metering.Credit{Account: account, Amount: cost, Reference: "fund-" + id}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Reserve(ctx, metering.HoldRequest{Account: account, HoldID: id, Fixed: cost}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Settle(ctx, metering.Settlement{Account: account, HoldID: id, Cost: cost,
		Record: metering.Record{RequestID: id, Input: in, Output: out}}); err != nil {
		t.Fatal(err)
	}
}

// admit admits c and settles it for cost, in and out.
func admit(t *testing.T, l *limits.Limiter, st *metering.Store, c proxy.LimitedCall, cost, in, out int64) {
	t.Helper()
	if _, err := l.Admit(context.Background(), c); err != nil {
		t.Fatalf("call %s: %v", c.Hold.HoldID, err)
	}
	spend(t, st, c.Hold.Account, c.Hold.HoldID, cost, in, out)
}

func wantLimit(t *testing.T, err error, limit string) *proxy.LimitError {
	t.Helper()
	var le *proxy.LimitError
	if !errors.As(err, &le) {
		t.Fatalf("error %v, want a *proxy.LimitError for %s", err, limit)
	}
	if le.Limit != limit || le.RetryAfter < 1 || !strings.Contains(le.Message, limit) {
		t.Fatalf("limit error %+v, want %s named, with a Retry-After", le, limit)
	}
	return le
}

func TestAdmitEnforcesPeriodLimits(t *testing.T) {
	t.Parallel()
	st, ctx := setup(t)
	l := limits.New(st, limits.Options{Plans: testPlans, CacheTTL: -1})
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	subscribe(t, st, "p", "pro", 1, start)
	for i := 0; i < 3; i++ {
		admit(t, l, st, call("p", "c"+string(rune('a'+i)), 1, 1), 10, 1, 1)
	}
	_, err := l.Admit(ctx, call("p", "cd", 1, 1))
	le := wantLimit(t, err, limits.LimitRequests)
	if renew := time.Until(start.AddDate(0, 1, 0)); le.RetryAfter < int(renew/time.Second)-5 || le.RetryAfter > int(renew/time.Second)+1 {
		t.Fatalf("Retry-After %ds, want the period's end in %v", le.RetryAfter, renew)
	}

	subscribe(t, st, "t", "tokens", 1, start)
	admit(t, l, st, call("t", "t1", 99, 5), 999, 99, 5)
	admit(t, l, st, call("t", "t2", 1, 0), 1, 1, 5) // under every limit
	_, err = l.Admit(ctx, call("t", "t3", 1, 1))
	wantLimit(t, err, limits.LimitInputTokens)

	subscribe(t, st, "c", "tokens", 1, start)
	admit(t, l, st, call("c", "c1", 1, 0), 1000, 1, 1)
	_, err = l.Admit(ctx, call("c", "c2", 1, 0))
	wantLimit(t, err, limits.LimitCredits)
}

// TestAdmitHoldsCallsInProgress: calls admitted and not ended yet hold their
// worst case; the output granted is what is left of the allowances.
func TestAdmitHoldsCallsInProgress(t *testing.T) {
	t.Parallel()
	st, ctx := setup(t)
	l := limits.New(st, limits.Options{Plans: testPlans, CacheTTL: -1})
	// tokens: 100 input, 1000 output tokens, 1 credit (1000 mc); output at 2 mc.
	subscribe(t, st, "i", "tokens", 1, time.Now().Add(-time.Hour))
	subscribe(t, st, "k", "tokens", 1, time.Now().Add(-time.Hour))
	for _, c := range []struct {
		name  string
		call  proxy.LimitedCall
		grant int64
		limit string
	}{
		{"input held", call("i", "a", 95, 0), 0, ""},
		{"input under the limit: past it by one call at most", call("i", "b", 10, 0), 0, ""},
		{"input reached by calls in progress", call("i", "c", 1, 0), 0, limits.LimitInputTokens},
		{"output capped by the credits left", call("k", "a", 10, 1000), 495, ""}, // (1000 − 10) / 2
		{"no credits left", call("k", "b", 10, 1000), 0, limits.LimitCredits},
	} {
		g, err := l.Admit(ctx, c.call)
		if c.limit != "" {
			le := wantLimit(t, err, c.limit)
			if !strings.Contains(le.Message, "held by calls in progress") {
				t.Fatalf("%s: %q", c.name, le.Message)
			}
			continue
		}
		if err != nil || !g.Held || g.MaxOutput != c.grant {
			t.Fatalf("%s: grant %+v, %v; want %d output tokens held", c.name, g, err, c.grant)
		}
	}
	// A call ends, failed: its allowance is free again, and it was no request.
	if err := st.Release(ctx, "k", "", "a", nil); err != nil {
		t.Fatal(err)
	}
	if g, err := l.Admit(ctx, call("k", "d", 10, 1000)); err != nil || g.MaxOutput != 495 {
		t.Fatalf("after the release: %+v, %v", g, err)
	}
	if _, u, err := st.PlanUsage(ctx, "k"); err != nil || u.Requests != 1 || u.HeldCredits != 1000 {
		t.Fatalf("usage %+v, %v: want 1 request, holding 1000 mc", u, err)
	}
}

// TestAdmitFollowsSubscriptionChanges: the limits sent with each call are
// the subscription's as last seen; when it changed, the store says so and
// the call is decided on the new limits.
func TestAdmitFollowsSubscriptionChanges(t *testing.T) {
	t.Parallel()
	st, ctx := setup(t)
	l := limits.New(st, limits.Options{Plans: testPlans, CacheTTL: -1})
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	subscribe(t, st, "s", "seats", 1, start) // one request per seat
	admit(t, l, st, call("s", "a", 1, 1), 1, 1, 1)
	_, err := l.Admit(ctx, call("s", "b", 1, 1))
	wantLimit(t, err, limits.LimitRequests)
	subscribe(t, st, "s", "seats", 2, start)
	admit(t, l, st, call("s", "c", 1, 1), 1, 1, 1)
	_, err = l.Admit(ctx, call("s", "d", 1, 1))
	wantLimit(t, err, limits.LimitRequests)
	subscribe(t, st, "s", "pro", 1, start) // three requests
	admit(t, l, st, call("s", "e", 1, 1), 1, 1, 1)
	if _, u, err := st.PlanUsage(ctx, "s"); err != nil || u.Requests != 3 {
		t.Fatalf("usage %+v, %v: want the 3 calls served", u, err)
	}
}

// TestAdmitIsExactAcrossReplicas: calls admitted at once by two limiters
// (two proxy replicas) over one Redis: exactly as many as the plan allows.
func TestAdmitIsExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	st, ctx := setup(t)
	subscribe(t, st, "r", "pro", 1, time.Now().Add(-time.Hour)) // 3 requests
	other := metering.New(st.Client(), metering.Options{})
	ls := []*limits.Limiter{limits.New(st, limits.Options{Plans: testPlans}), limits.New(other, limits.Options{Plans: testPlans})}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ls[i%2].Admit(ctx, call("r", fmt.Sprint("c", i), 1, 1))
			var le *proxy.LimitError
			switch {
			case err == nil:
				admitted.Add(1)
			case errors.As(err, &le) && le.Limit == limits.LimitRequests:
				refused.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 3 || refused.Load() != 47 {
		t.Fatalf("%d admitted, %d refused; want 3 and 47", admitted.Load(), refused.Load())
	}
}

func TestAdmitEnforcesRequestsPerMinutePerSeat(t *testing.T) {
	t.Parallel()
	st, ctx := setup(t)
	l := limits.New(st, limits.Options{Plans: testPlans, CacheTTL: -1})
	subscribe(t, st, "b", "burst", 2, time.Now().Add(-time.Hour))
	var err error
	admitted := 0
	for i := 0; i < 3 && err == nil; i++ {
		if _, err = l.Admit(ctx, call("b", fmt.Sprint("b", i), 1, 1)); err == nil {
			admitted++
		}
	}
	// Two seats, one request per minute each: the third in a minute is
	// refused (unless the minute turned between the calls).
	if admitted < 2 {
		t.Fatalf("admitted %d, want at least 2 (%v)", admitted, err)
	}
	if err != nil {
		le := wantLimit(t, err, limits.LimitRequestsPerMinute)
		if le.RetryAfter > 60 {
			t.Fatalf("Retry-After %d", le.RetryAfter)
		}
	}
}

func TestAccountsWithoutAPlanAreCached(t *testing.T) {
	t.Parallel()
	st, ctx := setup(t)
	now := time.Now()
	clock := func() time.Time { return now }
	l := limits.New(st, limits.Options{Plans: testPlans, CacheTTL: time.Second, Now: clock})
	if _, err := st.EnsureAccount(ctx, "free"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Admit(ctx, call("free", "f", 1, 1)); err != nil {
		t.Fatal(err)
	}
	// The account subscribes to a plan with one request per minute.
	subscribe(t, st, "free", "burst", 1, now.Add(-time.Hour))
	for i := 0; i < 3; i++ {
		if _, err := l.Admit(ctx, call("free", fmt.Sprint("g", i), 1, 1)); err != nil {
			t.Fatalf("within the cache TTL: %v", err)
		}
	}
	now = now.Add(1100 * time.Millisecond)
	refused := 0
	for i := 0; i < 3; i++ { // three calls: two of them fall in one minute
		if _, err := l.Admit(ctx, call("free", fmt.Sprint("h", i), 1, 1)); err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("after the cache TTL the plan's per-minute limit is not enforced")
	}
}

func TestAdmitIsRefusedWhenTheStoreIsDown(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	st := metering.New(srv.Client(t), metering.Options{})
	l := limits.New(st, limits.Options{Plans: testPlans})
	srv.Stop()
	if _, err := l.Admit(context.Background(), call("x", "x", 1, 1)); !errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("error %v, want ErrUnavailable", err)
	}
}

func BenchmarkAdmitWithoutPlan(b *testing.B) {
	st := metering.New(testredis.Start(b).Client(b), metering.Options{})
	l := limits.New(st, limits.Options{Plans: testPlans})
	ctx := context.Background()
	c := call("free", "f", 1, 16)
	_, _ = l.Admit(ctx, c)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Admit(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}
