package metering_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// outbox reads an account's outbox (the events its scripts appended), of
// type typ ("": every type).
func outbox(t *testing.T, e *env, account string, typ ...string) []map[string]any {
	t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), "{a:"+account+"}:events", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, m := range msgs {
		if len(typ) == 0 || m.Values["type"] == typ[0] {
			out = append(out, m.Values)
		}
	}
	return out
}

// balance.low is emitted once per downward crossing, whatever the
// concurrency and whichever debit path crosses: settle, lease flush, an
// adjustment; a credit that brings the balance back above re-arms it.
func TestBalanceLowOncePerCrossing(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "low", 10_000)
	if err := e.st.SetLowBalance(ctx, "low", 5000); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("c%d", i)
			h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "low", HoldID: id, Fixed: 150})
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := e.st.Settle(ctx, metering.Settlement{Account: "low", HoldID: h.ID, Cost: 150, Record: metering.Record{RequestID: id, Model: "m"}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ev := outbox(t, e, "low", "balance.low")
	if len(ev) != 1 || ev[0]["type"] != "balance.low" || ev[0]["balance_mc"] == nil || ev[0]["threshold_mc"] != "5000" {
		t.Fatalf("after 50 concurrent calls: %v", ev)
	}
	if b := e.acct(t, "low").Balance; b != 2500 {
		t.Fatalf("balance %d", b)
	}
	// Further debits under the threshold: nothing more.
	b := metering.LeaseBatch{Account: "low", LeaseID: "lease:r", TTL: time.Minute, Calls: []metering.LeaseCall{
		{Cost: 100, Record: metering.Record{RequestID: "l1", Model: "m"}}}}
	if _, err := e.st.ApplyLease(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n := len(outbox(t, e, "low", "balance.low")); n != 1 {
		t.Fatalf("a debit under the threshold emitted again: %d events", n)
	}
	// Back above (a grant), then a lease flush crosses again: a second event.
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "low", Amount: 5000, Reference: "top", Type: metering.Grant}); err != nil {
		t.Fatal(err)
	}
	b.Calls = []metering.LeaseCall{{Cost: 2000, Record: metering.Record{RequestID: "l2", Model: "m"}}, {Cost: 1000, Record: metering.Record{RequestID: "l3", Model: "m"}}}
	if _, err := e.st.ApplyLease(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Back above, then an adjustment crosses: a third.
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "low", Amount: 9000, Reference: "top2", Type: metering.Grant}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "low", Amount: -9000, Reference: "adj", Type: metering.Adjustment}); err != nil {
		t.Fatal(err)
	}
	ev = outbox(t, e, "low", "balance.low")
	if len(ev) != 3 || ev[1]["type"] != "balance.low" || ev[2]["type"] != "balance.low" {
		t.Fatalf("events: %v", ev)
	}
	// No threshold: no event.
	if err := e.st.SetLowBalance(ctx, "low", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "low", Amount: 9000, Reference: "top3", Type: metering.Grant}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "low", Amount: -9000, Reference: "adj2", Type: metering.Adjustment}); err != nil {
		t.Fatal(err)
	}
	if n := len(outbox(t, e, "low", "balance.low")); n != 3 {
		t.Fatalf("an event without a threshold: %d", n)
	}
	assertLedger(t, e.st, "low")
}

// A purchase and its refund are events, appended by the scripts that apply
// them; the outbox moves to the webhook queue once per entry, with stable ids.
func TestPurchaseEventsQueued(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "buyer", 4000)
	if _, err := e.st.ReversePurchase(ctx, metering.Reversal{Account: "buyer", PaymentID: "pi_fund-buyer", Kind: metering.Refund,
		Reference: "refund:x:50", Minor: 50}); err != nil {
		t.Fatal(err)
	}
	ev := outbox(t, e, "buyer")
	if len(ev) != 2 || ev[0]["type"] != "credits.purchased" || ev[0]["credits_mc"] != "4000" ||
		ev[1]["type"] != "credits.reversed" || ev[1]["credits_mc"] != "2000" || ev[1]["kind"] != "refund" {
		t.Fatalf("events: %v", ev)
	}
	if err := e.st.EnsureEventGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.MoveEvents(ctx, "buyer"); err != nil || n != 2 {
		t.Fatalf("MoveEvents = %d, %v", n, err)
	}
	if n, err := e.st.MoveEvents(ctx, "buyer"); err != nil || n != 0 {
		t.Fatalf("second MoveEvents = %d, %v", n, err)
	}
	got, err := e.st.ReadEvents(ctx, "g", "c", 10, 0)
	if err != nil || len(got) != 2 || got[0].Type != "credits.purchased" || got[0].Account != "buyer" ||
		got[0].Data["credits_mc"] != "4000" || got[0].ID == got[1].ID || got[0].ID[:4] != "evt_" {
		t.Fatalf("ReadEvents = %+v, %v", got, err)
	}
}

// key.budget_exhausted: once per key and budget period, however many calls
// the budget refuses, from two replicas at once.
func TestKeyBudgetExhaustedOnce(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	k := governed(t, e, "kb", metering.KeySettings{Budget: 100, BudgetPeriod: metering.PeriodDay})
	other := e.replica(t, metering.Options{})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := e.st
			if i%2 == 1 {
				st = other
			}
			_, _ = st.Reserve(ctx, holdFor(k, fmt.Sprintf("b%d", i), 30, 1, 1))
		}()
	}
	wg.Wait()
	ev := outbox(t, e, "kb", "key.budget_exhausted")
	if len(ev) != 1 || ev[0]["key"] != k.ID || ev[0]["budget_mc"] != "100" || ev[0]["period"] != "day" {
		t.Fatalf("events: %v", ev)
	}
}

// plan.limit_reached: once per limit and period.
func TestPlanLimitReachedOnce(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "pl", 1_000_000)
	if _, err := e.st.SaveSubscription(ctx, "pl", liveSub("sub_pl", time.Now().Add(-time.Minute).Truncate(time.Second)), time.Now()); err != nil {
		t.Fatal(err)
	}
	lim := metering.Limits{Requests: 3}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = e.st.Admit(ctx, admitReq("pl", fmt.Sprintf("p%d", i), lim, 1, 10))
		}()
	}
	wg.Wait()
	ev := outbox(t, e, "pl", "plan.limit_reached")
	if len(ev) != 1 || ev[0]["limit"] != "requests" || ev[0]["plan"] != "pro" || ev[0]["max"] != "3" {
		t.Fatalf("events: %v", ev)
	}
}
