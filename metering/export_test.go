package metering_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Usage entries name the API key they charged — settled alone (the key the
// hold was placed under) or in a lease batch (each call's key) — and the
// Redis usage export lists them by charge time, per call and per day and
// model, the days agreeing with the daily counters.
func TestUsageEntriesNameTheirKey(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "u", 1_000_000)
	k, _, err := e.st.CreateKey(ctx, "u", "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(id string) metering.Record {
		return metering.Record{RequestID: id, Model: "gpt-4o", Input: 100, CachedInput: 20, CacheWrite: 5, Output: 7}
	}
	from := time.Now().Add(-time.Second)
	for _, c := range []struct{ id, key string }{{"s-key", k.ID}, {"s-none", ""}} {
		if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "u", KeyID: c.key, HoldID: c.id, Fixed: 1000}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.Settle(ctx, metering.Settlement{Account: "u", KeyID: c.key, HoldID: c.id, Cost: 500, Record: rec(c.id)}); err != nil {
			t.Fatal(err)
		}
	}
	b := metering.LeaseBatch{Account: "u", LeaseID: "lease:x", TTL: time.Minute, Calls: []metering.LeaseCall{
		{KeyID: k.ID, Cost: 30, Record: rec("l-key")}, {Cost: 40, Record: rec("l-none")}}}
	if _, err := e.st.ApplyLease(ctx, b); err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(time.Second)
	want := map[string]string{"s-key": k.ID, "s-none": "", "l-key": k.ID, "l-none": ""}
	var calls []metering.CallUsage
	if err := e.st.UsageCalls(ctx, "u", from, to, func(u metering.CallUsage) error { calls = append(calls, u); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(calls) != len(want) {
		t.Fatalf("UsageCalls = %+v", calls)
	}
	var sum int64
	for _, u := range calls {
		if key, ok := want[u.RequestID]; !ok || u.KeyID != key || u.Input != 125 || u.Output != 7 || u.Model != "gpt-4o" {
			t.Errorf("call %+v, want key %q", u, key)
		}
		sum += u.Credits
	}
	if a := e.acct(t, "u"); sum != a.Consumed || sum != 1070 {
		t.Fatalf("exported %d mc, consumed %d", sum, a.Consumed)
	}
	var days []metering.DayUsage
	if err := e.st.UsageDays(ctx, "u", from, to, func(d metering.DayUsage) error { days = append(days, d); return nil }); err != nil {
		t.Fatal(err)
	}
	daily, err := e.st.DailyUsage(ctx, "u", from, to)
	if err != nil || len(days) != len(daily) || len(days) == 0 || days[0] != daily[0] {
		t.Fatalf("UsageDays %+v, DailyUsage %+v %v", days, daily, err)
	}
	// Outside the range: nothing.
	n := 0
	if err := e.st.UsageCalls(ctx, "u", to, to.Add(time.Hour), func(metering.CallUsage) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("after the calls: %d %v", n, err)
	}
}
