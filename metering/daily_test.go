package metering_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Charged calls are counted per UTC day and model, once, whether settled
// alone or in a lease batch, and replays and failed calls are not.
func TestDailyUsage(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "d", 1_000_000)
	rec := func(id, model string) metering.Record {
		return metering.Record{RequestID: id, Model: model, Input: 100, CachedInput: 20, CacheWrite: 5, Output: 7}
	}
	settle := func(id, model string, cost int64) {
		t.Helper()
		h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "d", HoldID: id, Fixed: 1000, PerOutput: 1, MinOutput: 1, MaxOutput: 100})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second settle is a replay
			if _, err := e.st.Settle(ctx, metering.Settlement{Account: "d", HoldID: h.ID, Cost: cost, Record: rec(id, model)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle("s1", "gpt-4o", 500)
	settle("s2", "gpt-4o", 700)
	settle("s3", "org:model/with:colons", 11)
	if err := e.st.Release(ctx, "d", "", "failed", &metering.Record{RequestID: "failed", Model: "gpt-4o", Input: 9, Failed: true}); err != nil {
		t.Fatal(err)
	}
	b := metering.LeaseBatch{Account: "d", LeaseID: "lease:x", TTL: time.Minute, Calls: []metering.LeaseCall{
		{Cost: 30, Record: rec("l1", "claude")}, {Cost: 40, Record: rec("l2", "claude")},
		{Cost: 5, Record: rec("l3", "gpt-4o")}, {Release: true, Record: rec("l4", "claude")}}}
	for range 2 { // resent: applied once
		if _, err := e.st.ApplyLease(ctx, b); err != nil {
			t.Fatal(err)
		}
	}

	now := time.Now().UTC()
	got, err := e.st.DailyUsage(ctx, "d", now.AddDate(0, 0, -29), now)
	if err != nil {
		t.Fatal(err)
	}
	today := now.Format(time.DateOnly)
	want := []metering.DayUsage{
		{Date: today, Model: "claude", Requests: 2, Input: 250, Output: 14, Credits: 70},
		{Date: today, Model: "gpt-4o", Requests: 3, Input: 375, Output: 21, Credits: 1205},
		{Date: today, Model: "org:model/with:colons", Requests: 1, Input: 125, Output: 7, Credits: 11},
	}
	if len(got) != len(want) {
		t.Fatalf("DailyUsage = %+v, want %+v", got, want)
	}
	var sum int64
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
		sum += got[i].Credits
	}
	if a := e.acct(t, "d"); a.Consumed != sum {
		t.Errorf("Σ daily credits %d ≠ consumed %d", sum, a.Consumed)
	}
	ttl := e.rdb.TTL(ctx, "{a:d}:day:"+today).Val()
	if ttl <= metering.DayTTL-time.Minute || ttl > metering.DayTTL {
		t.Errorf("day key TTL %v, want about %v", ttl, metering.DayTTL)
	}
	// Days outside the range, and an account without usage, read empty.
	if got, err := e.st.DailyUsage(ctx, "d", now.AddDate(0, 0, -10), now.AddDate(0, 0, -1)); err != nil || len(got) != 0 {
		t.Errorf("past days = %+v, %v; want none", got, err)
	}
	if got, err := e.st.DailyUsage(ctx, "nobody", now.AddDate(0, 0, -29), now); err != nil || len(got) != 0 {
		t.Errorf("unknown account = %+v, %v; want none", got, err)
	}
	assertLedger(t, e.st, "d")
}
