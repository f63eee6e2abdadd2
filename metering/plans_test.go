package metering_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// call reserves and settles one call of cost mc with the given tokens.
func (e *env) call(t testing.TB, account, id string, cost, in, cached, out int64) metering.Charge {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: account, HoldID: id, Fixed: cost}); err != nil {
		t.Fatalf("Reserve %s: %v", id, err)
	}
	ch, err := e.st.Settle(ctx, metering.Settlement{Account: account, HoldID: id, Cost: cost,
		Record: metering.Record{RequestID: id, Model: "m", Input: in, CachedInput: cached, Output: out, Status: 200}})
	if err != nil {
		t.Fatalf("Settle %s: %v", id, err)
	}
	return ch
}

func usageOf(t testing.TB, st *metering.Store, account string) (metering.Subscription, metering.Usage) {
	t.Helper()
	sub, u, err := st.PlanUsage(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return sub, u
}

func liveSub(id string, start time.Time) metering.Subscription {
	return metering.Subscription{ID: id, Customer: "cus_1", Plan: "pro", Seats: 2, Status: "active",
		PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0)}
}

func TestSettleCountsBillingPeriodUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "u", 1_000_000)

	e.call(t, "u", "c1", 700, 100, 20, 50)
	e.call(t, "u", "c2", 300, 10, 0, 5)
	// A replayed settle counts nothing more.
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "u", HoldID: "c2", Cost: 300,
		Record: metering.Record{RequestID: "c2", Input: 10, Output: 5}}); err != nil {
		t.Fatal(err)
	}
	sub, u := usageOf(t, e.st, "u")
	month := metering.MonthStart(time.Now())
	if sub.ID != "" || !u.Period.Start.Equal(month) || !u.Period.End.Equal(month.AddDate(0, 1, 0)) {
		t.Fatalf("without a subscription the period is the month: %+v %+v", sub, u.Period)
	}
	if u.Requests != 2 || u.InputTokens != 130 || u.OutputTokens != 55 || u.Credits != 1000 {
		t.Fatalf("usage = %+v, want 2 requests, 130 in, 55 out, 1000 mc", u)
	}

	// Cache writes are input tokens too (plan limits count every input token).
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "u", HoldID: "cw", Fixed: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "u", HoldID: "cw", Cost: 10,
		Record: metering.Record{RequestID: "cw", Input: 1, CachedInput: 2, CacheWrite: 40, CacheWrite1h: 300, Output: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, u = usageOf(t, e.st, "u"); u.Requests != 3 || u.InputTokens != 130+343 || u.OutputTokens != 56 {
		t.Fatalf("usage after cache writes = %+v, want 3 requests, %d in, 56 out", u, 130+343)
	}

	// A subscription starts a new period: its counters start at zero.
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	if ok, err := e.st.SaveSubscription(ctx, "u", liveSub("sub_1", start), time.Now()); err != nil || !ok {
		t.Fatalf("SaveSubscription: %v %v", ok, err)
	}
	_, u = usageOf(t, e.st, "u")
	if !u.Period.Start.Equal(start) || u.Requests != 0 || u.Credits != 0 {
		t.Fatalf("new period: %+v", u)
	}
	e.call(t, "u", "c3", 50, 1, 0, 1)
	_, u = usageOf(t, e.st, "u")
	if u.Requests != 1 || u.Credits != 50 || u.InputTokens != 1 || u.OutputTokens != 1 {
		t.Fatalf("usage in the subscription's period: %+v", u)
	}

	// The subscription ends: back to the month, whose counters were reset.
	if ok, err := e.st.EndSubscription(ctx, "u", "sub_1", time.Now(), time.Now()); err != nil || !ok {
		t.Fatalf("EndSubscription: %v %v", ok, err)
	}
	sub, u = usageOf(t, e.st, "u")
	if sub.Live() || sub.Status != "canceled" || !u.Period.Start.Equal(month) || u.Requests != 0 {
		t.Fatalf("after the end: %+v %+v", sub, u)
	}
	e.call(t, "u", "c4", 10, 1, 0, 1)
	if _, u = usageOf(t, e.st, "u"); u.Requests != 1 || u.Credits != 10 {
		t.Fatalf("month counters after the end: %+v", u)
	}
	assertLedger(t, e.st, "u")
}

func TestSubscriptionEventsApplyInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "s", 0)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	at := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Second) }
	sub := func() metering.Subscription {
		s, err := e.st.Subscription(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	step := func(name string, applied bool, err error, want bool) {
		t.Helper()
		if err != nil || applied != want {
			t.Fatalf("%s: applied %v (%v), want %v", name, applied, err, want)
		}
	}

	s1 := liveSub("sub_1", t0)
	ok, err := e.st.SaveSubscription(ctx, "s", s1, at(10))
	step("created", ok, err, true)
	s1.Seats = 5
	ok, err = e.st.SaveSubscription(ctx, "s", s1, at(20))
	step("updated", ok, err, true)
	older := s1
	older.Seats, older.Status = 1, "incomplete"
	ok, err = e.st.SaveSubscription(ctx, "s", older, at(15))
	step("an older event", ok, err, false)
	if got := sub(); got.Seats != 5 || got.Status != "active" || got.Plan != "pro" || !got.PeriodStart.Equal(t0) {
		t.Fatalf("after reordering: %+v", got)
	}

	other := liveSub("sub_2", t0)
	other.Status = "incomplete"
	ok, err = e.st.SaveSubscription(ctx, "s", other, at(30))
	step("another subscription, not live", ok, err, false)
	ok, err = e.st.EndSubscription(ctx, "s", "sub_2", at(31), at(31))
	step("another subscription ends", ok, err, false)

	ok, err = e.st.SubscriptionPaymentFailed(ctx, "s", "sub_1", "card_declined", at(40))
	step("invoice failed", ok, err, true)
	if got := sub(); got.Status != "past_due" || !got.Live() || got.LastPaymentError != "card_declined" {
		t.Fatalf("after a failed invoice: %+v", got)
	}
	next := t0.AddDate(0, 1, 0)
	ok, err = e.st.SubscriptionPaid(ctx, "s", "sub_1", next, next.AddDate(0, 1, 0), at(50))
	step("invoice paid", ok, err, true)
	if got := sub(); got.Status != "active" || !got.PeriodStart.Equal(next) || got.LastPaymentError != "" {
		t.Fatalf("after a paid invoice: %+v", got)
	}
	ok, err = e.st.ScheduleCancel(ctx, "s", "sub_1", next.AddDate(0, 1, 0))
	step("cancel", ok, err, true)
	if got := sub(); !got.CancelAtPeriodEnd || !got.CancelAt.Equal(next.AddDate(0, 1, 0)) || !got.Live() {
		t.Fatalf("after cancel: %+v", got)
	}

	ok, err = e.st.EndSubscription(ctx, "s", "sub_1", at(60), at(60))
	step("deleted", ok, err, true)
	ok, err = e.st.SaveSubscription(ctx, "s", s1, at(70))
	step("an update after the deletion", ok, err, false)
	ok, err = e.st.SubscriptionPaid(ctx, "s", "sub_1", time.Time{}, time.Time{}, at(80))
	step("a paid invoice after the deletion", ok, err, false)
	if got := sub(); got.Live() || got.Status != "canceled" {
		t.Fatalf("deleted is final: %+v", got)
	}

	// A new live subscription replaces the ended one.
	ok, err = e.st.SaveSubscription(ctx, "s", liveSub("sub_3", next), at(90))
	step("a new subscription", ok, err, true)
	if got := sub(); got.ID != "sub_3" || !got.Live() || got.CancelAtPeriodEnd {
		t.Fatalf("new subscription: %+v", got)
	}
}

// admitReq is a call of account id asking up to maxOut output tokens (at
// least minOut) at 2 mc each, with 10 input tokens at 1 mc each, under the
// "pro" plan with 2 seats and lim.
func admitReq(account, id string, lim metering.Limits, minOut, maxOut int64) metering.AdmitRequest {
	return metering.AdmitRequest{Plan: "pro", Seats: 2, Limits: lim, InputTokens: 10, Choices: 1,
		Hold: metering.HoldRequest{Account: account, HoldID: id, Fixed: 10, PerOutput: 2, MinOutput: minOut, MaxOutput: maxOut}}
}

func admit(t testing.TB, st *metering.Store, r metering.AdmitRequest) metering.Admission {
	t.Helper()
	a, err := st.Admit(context.Background(), r)
	if err != nil {
		t.Fatalf("Admit %s: %v", r.Hold.HoldID, err)
	}
	return a
}

// wantHeld checks the period holds' sums and the period's counters.
func wantHeld(t testing.TB, st *metering.Store, account string, requests, in, out, mc int64) metering.Usage {
	t.Helper()
	_, u := usageOf(t, st, account)
	if u.Requests != requests || u.HeldInputTokens != in || u.HeldOutputTokens != out || u.HeldCredits != mc {
		t.Fatalf("usage %+v, want %d requests, held %d in, %d out, %d mc", u, requests, in, out, mc)
	}
	return u
}

func TestAdmitAnswers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	e.account(t, "a", 1_000_000)
	none := metering.Limits{}
	if a := admit(t, e.st, admitReq("a", "r0", none, 1, 100)); a.Live {
		t.Fatalf("no subscription: %+v", a)
	}
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	if _, err := e.st.SaveSubscription(context.Background(), "a", liveSub("sub_a", start), time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		r       metering.AdmitRequest
		want    metering.Admission // Live, Plan, Seats and Period are checked for every case
		counted bool               // the call is counted and held
	}{
		{"another plan", metering.AdmitRequest{Plan: "basic", Seats: 2, Hold: metering.HoldRequest{Account: "a", HoldID: "s1"}},
			metering.Admission{Stale: true}, false},
		{"other seats", metering.AdmitRequest{Plan: "pro", Seats: 3, Hold: metering.HoldRequest{Account: "a", HoldID: "s2"}},
			metering.Admission{Stale: true}, false},
		{"no limits", admitReq("a", "c1", none, 1, 100), metering.Admission{MaxOutput: 100}, true},
		{"output capped by output tokens", admitReq("a", "c2", metering.Limits{OutputTokens: 150}, 1, 100),
			metering.Admission{MaxOutput: 50}, true}, // c1 holds 100 of 150
		{"min output does not fit", admitReq("a", "c3", metering.Limits{OutputTokens: 200}, 60, 100),
			metering.Admission{Limit: metering.LimitOutputTokens, Used: 150, Max: 200, Needed: 60}, false},
		{"output capped by credits", admitReq("a", "c4", metering.Limits{Credits: 500}, 1, 100),
			// held: c1 210 mc, c2 110 mc; 500 − 320 − 10 fixed = 170 mc = 85 tokens
			metering.Admission{MaxOutput: 85}, true},
		{"credits reached", admitReq("a", "c5", metering.Limits{Credits: 500}, 0, 0),
			metering.Admission{Limit: metering.LimitCredits, Used: 500, Max: 500, Needed: 10}, false},
		{"requests reached", admitReq("a", "c6", metering.Limits{Requests: 3}, 1, 100),
			metering.Admission{Limit: metering.LimitRequests, Used: 3, Max: 3}, false},
		{"input reached", admitReq("a", "c7", metering.Limits{InputTokens: 30}, 1, 100),
			metering.Admission{Limit: metering.LimitInputTokens, Used: 30, Max: 30}, false},
		{"input under the limit", admitReq("a", "c8", metering.Limits{InputTokens: 31}, 1, 100),
			metering.Admission{MaxOutput: 100}, true}, // past it by at most this call's input
		{"a retried admit", admitReq("a", "c2", none, 1, 100), metering.Admission{MaxOutput: 50}, false},
	} {
		_, before := usageOf(t, e.st, "a")
		a := admit(t, e.st, c.r)
		got := a
		got.Live, got.Plan, got.Seats, got.Period, got.RequestsThisMinute, got.MinuteLeft = false, "", 0, metering.Period{}, 0, 0
		if got != c.want {
			t.Fatalf("%s: admission %+v, want %+v", c.name, a, c.want)
		}
		wantPlan, wantSeats := "pro", int64(2)
		if !a.Live || a.Plan != wantPlan || a.Seats != wantSeats || (!a.Stale && !a.Period.Start.Equal(start)) {
			t.Fatalf("%s: admission %+v, want the live pro subscription of 2 seats", c.name, a)
		}
		if !a.Stale && (a.MinuteLeft <= 0 || a.MinuteLeft > time.Minute || a.RequestsThisMinute < 1) {
			t.Fatalf("%s: minute %v, %d calls", c.name, a.MinuteLeft, a.RequestsThisMinute)
		}
		_, after := usageOf(t, e.st, "a")
		var dr, dmc int64
		if c.counted {
			dr, dmc = 1, 10+2*a.MaxOutput
		}
		if after.Requests-before.Requests != dr || after.HeldCredits-before.HeldCredits != dmc {
			t.Fatalf("%s: usage %+v after %+v, want %d more requests, %d mc more held", c.name, after, before, dr, dmc)
		}
	}
	if _, err := e.st.Generation(context.Background(), "a", "c1"); !errors.Is(err, metering.ErrNotFound) {
		t.Fatalf("a call in progress has no cost record yet: %v", err)
	}
}

// TestEndingCallsDropPeriodHolds: settle, release and a lease batch each drop
// the call's period hold; a served call is counted once, a failed one not.
func TestEndingCallsDropPeriodHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "a", 1_000_000)
	if _, err := e.st.SaveSubscription(ctx, "a", liveSub("sub_a", time.Now().Add(-time.Hour).Truncate(time.Second)), time.Now()); err != nil {
		t.Fatal(err)
	}
	lim := metering.Limits{Requests: 100}
	for _, id := range []string{"settled", "released", "lease-s", "lease-r"} {
		if a := admit(t, e.st, admitReq("a", id, lim, 1, 10)); a.MaxOutput != 10 {
			t.Fatalf("admit %s: %+v", id, a)
		}
	}
	wantHeld(t, e.st, "a", 4, 40, 40, 4*30)
	rec := func(id string) metering.Record { return metering.Record{RequestID: id, Input: 8, Output: 5} }
	ends := []struct {
		name string
		end  func() error
		// counters after it: requests, held (per call: 10 in, 10 out, 30 mc), output tokens
		requests, held, out int64
	}{
		{"settle", func() error {
			_, err := e.st.Settle(ctx, metering.Settlement{Account: "a", HoldID: "settled", Cost: 18, Record: rec("settled")})
			return err
		}, 4, 3, 5},
		{"settle again", func() error {
			_, err := e.st.Settle(ctx, metering.Settlement{Account: "a", HoldID: "settled", Cost: 18, Record: rec("settled")})
			return err
		}, 4, 3, 5},
		{"release", func() error { r := rec("released"); return e.st.Release(ctx, "a", "", "released", &r) }, 3, 2, 5},
		{"release again", func() error { r := rec("released"); return e.st.Release(ctx, "a", "", "released", &r) }, 3, 2, 5},
		{"lease batch", func() error {
			b := metering.LeaseBatch{Account: "a", LeaseID: "lease:x", TTL: time.Minute, Calls: []metering.LeaseCall{
				{Cost: 18, Record: rec("lease-s")}, {Release: true, Record: rec("lease-r")}}}
			if _, err := e.st.ApplyLease(ctx, b); err != nil {
				return err
			}
			_, err := e.st.ApplyLease(ctx, b) // resent: applied once
			return err
		}, 2, 0, 10},
	}
	for _, c := range ends {
		if err := c.end(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if u := wantHeld(t, e.st, "a", c.requests, 10*c.held, 10*c.held, 30*c.held); u.OutputTokens != c.out {
			t.Fatalf("%s: usage %+v, want %d output tokens", c.name, u, c.out)
		}
	}
	// A call never admitted (no plan at its start) counts at its settle.
	e.call(t, "a", "unplanned", 7, 1, 0, 1)
	wantHeld(t, e.st, "a", 3, 0, 0, 0)
	assertLedger(t, e.st, "a")
}

// TestPeriodHoldsExpire: a call admitted by a proxy that then died holds the
// allowance until the hold TTL; the next admit after it sweeps the hold (the
// request stays counted).
func TestPeriodHoldsExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{HoldTTL: 300 * time.Millisecond})
	e.account(t, "a", 1_000_000)
	if _, err := e.st.SaveSubscription(context.Background(), "a", liveSub("sub_a", time.Now().Add(-time.Hour).Truncate(time.Second)), time.Now()); err != nil {
		t.Fatal(err)
	}
	lim := metering.Limits{OutputTokens: 100}
	if a := admit(t, e.st, admitReq("a", "dead", lim, 100, 100)); a.MaxOutput != 100 {
		t.Fatalf("admit: %+v", a)
	}
	other := e.replica(t, metering.Options{})
	if a := admit(t, other, admitReq("a", "r1", lim, 1, 100)); a.Limit != metering.LimitOutputTokens {
		t.Fatalf("while the dead call's period hold lives: %+v", a)
	}
	for i := 2; ; i++ {
		a := admit(t, other, admitReq("a", fmt.Sprintf("r%d", i), lim, 1, 100))
		if a.Limit == "" {
			if a.MaxOutput != 100 {
				t.Fatalf("after the sweep: %+v, want all 100 tokens", a)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantHeld(t, e.st, "a", 2, 10, 100, 210)
}

// TestAdmitIsAtomic: calls admitted at once, through two stores over one
// Redis, never hold more than the limits allow.
func TestAdmitIsAtomic(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	e.account(t, "a", 1_000_000)
	if _, err := e.st.SaveSubscription(context.Background(), "a", liveSub("sub_a", time.Now().Add(-time.Hour).Truncate(time.Second)), time.Now()); err != nil {
		t.Fatal(err)
	}
	stores := []*metering.Store{e.st, e.replica(t, metering.Options{})}
	lim := metering.Limits{Requests: 30, OutputTokens: 1000, Credits: 3000}
	var admitted, granted atomic.Int64
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := stores[i%2].Admit(context.Background(), admitReq("a", fmt.Sprintf("c%d", i), lim, 10, 60))
			if err != nil {
				t.Error(err)
				return
			}
			if a.Limit == "" {
				admitted.Add(1)
				granted.Add(a.MaxOutput)
			}
		}()
	}
	wg.Wait()
	u := wantHeld(t, e.st, "a", admitted.Load(), 10*admitted.Load(), granted.Load(), 10*admitted.Load()+2*granted.Load())
	if admitted.Load() == 0 || u.HeldOutputTokens > lim.OutputTokens || u.HeldCredits > lim.Credits || u.Requests > lim.Requests {
		t.Fatalf("%d admitted: usage %+v past the limits %+v", admitted.Load(), u, lim)
	}
	t.Logf("%d of 100 admitted, %d output tokens granted", admitted.Load(), granted.Load())
}

func BenchmarkAdmit(b *testing.B) {
	e := newEnv(b, metering.Options{})
	ctx := context.Background()
	e.account(b, "b", 0)
	if _, err := e.st.SaveSubscription(ctx, "b", liveSub("sub_b", time.Now().Add(-time.Hour)), time.Now()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := admitReq("b", "bench-"+strconv.Itoa(i), metering.Limits{}, 1, 16)
		if _, err := e.st.Admit(ctx, r); err != nil {
			b.Fatal(fmt.Sprint(err))
		}
	}
}
