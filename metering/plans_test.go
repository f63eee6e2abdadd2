package metering_test

import (
	"context"
	"fmt"
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

func TestAdmitReadsCountersAndCountsTheMinute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "a", 1_000_000)
	if _, ok, err := e.st.Admit(ctx, "a"); ok || err != nil {
		t.Fatalf("no subscription: ok %v, %v", ok, err)
	}
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	if _, err := e.st.SaveSubscription(ctx, "a", liveSub("sub_a", start), time.Now()); err != nil {
		t.Fatal(err)
	}
	e.call(t, "a", "c1", 123, 10, 0, 7)
	var last metering.Admission
	for i := 1; i <= 3; i++ {
		a, ok, err := e.st.Admit(ctx, "a")
		if err != nil || !ok {
			t.Fatalf("Admit: %v %v", ok, err)
		}
		last = a
	}
	u := last.Usage
	if last.Plan != "pro" || last.Seats != 2 || last.Status != "active" || !u.Period.Start.Equal(start) ||
		u.Requests != 1 || u.InputTokens != 10 || u.OutputTokens != 7 || u.Credits != 123 {
		t.Fatalf("admission: %+v", last)
	}
	// Three calls within the same minute, unless the minute turned meanwhile.
	if u.RequestsThisMinute != 3 && u.RequestsThisMinute != 1 && u.RequestsThisMinute != 2 {
		t.Fatalf("requests this minute = %d", u.RequestsThisMinute)
	}
	if last.MinuteLeft <= 0 || last.MinuteLeft > time.Minute {
		t.Fatalf("minute left = %v", last.MinuteLeft)
	}
	if _, pu := usageOf(t, e.st, "a"); pu.Requests != u.Requests || pu.Credits != u.Credits {
		t.Fatalf("PlanUsage %+v and Admit %+v disagree", pu, u)
	}
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
		if _, _, err := e.st.Admit(ctx, "b"); err != nil {
			b.Fatal(fmt.Sprint(err))
		}
	}
}
