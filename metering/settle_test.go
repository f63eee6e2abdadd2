package metering_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

func sampleRecord(reqID string) metering.Record {
	return metering.Record{
		RequestID: reqID, Model: "claude-sonnet", Provider: "anthropic", Endpoint: "chat.completions",
		Input: 1200, CachedInput: 300, Output: 456, Reasoning: 56, CacheWrite: 188, CacheWrite1h: 100,
		Estimated: true, Streamed: true, Cancelled: false, Failed: false, Status: 200, Reason: "stop",
		Latency: 1234567 * time.Microsecond, TTFT: 89 * time.Millisecond,
		CreatedAt: time.UnixMilli(1_760_000_000_123).UTC(),
	}
}

func TestSettle(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	tests := []struct {
		name        string
		fund        int64
		req         metering.HoldRequest
		cost        int64
		wantCharged int64
		wantOver    int64 // charged past the hold: in full, and said
	}{
		{"below the hold", 100_000, metering.HoldRequest{Fixed: 1000, PerOutput: 10, MinOutput: 1, MaxOutput: 1000}, 4321, 4321, 0},
		{"exactly the hold", 100_000, metering.HoldRequest{Fixed: 1000, PerOutput: 10, MinOutput: 1, MaxOutput: 1000}, 11_000, 11_000, 0},
		{"above the hold is charged in full", 100_000, metering.HoldRequest{Fixed: 1000, PerOutput: 10, MinOutput: 1, MaxOutput: 1000}, 11_001, 11_001, 1},
		{"far above the hold", 100_000, metering.HoldRequest{Fixed: 1000, PerOutput: 10, MinOutput: 1, MaxOutput: 10}, 50_000, 50_000, 48_900},
		{"past the balance goes below zero by the excess", 5000, metering.HoldRequest{Fixed: 1000, PerOutput: 1, MinOutput: 1, MaxOutput: 1 << 20}, 7000, 7000, 2000},
		{"zero cost", 100_000, metering.HoldRequest{Fixed: 1000, PerOutput: 10, MinOutput: 1, MaxOutput: 10}, 0, 0, 0},
		{"whole balance", 5000, metering.HoldRequest{Fixed: 1000, PerOutput: 1, MinOutput: 1, MaxOutput: 1 << 20}, 5000, 5000, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("settle-%d", i)
			e.account(t, id, tt.fund)
			req := tt.req
			req.Account, req.HoldID = id, "req-"+id
			h, err := e.st.Reserve(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			rec := sampleRecord("req-" + id)
			before := len(e.entries(t, id))
			c, err := e.st.Settle(ctx, metering.Settlement{Account: id, HoldID: h.ID, Cost: tt.cost, Record: rec})
			if err != nil {
				t.Fatal(err)
			}
			want := metering.Charge{Charged: tt.wantCharged, BalanceAfter: tt.fund - tt.wantCharged, OverHold: tt.wantOver}
			if c != want {
				t.Errorf("Settle = %+v, want %+v", c, want)
			}
			a := e.acct(t, id)
			if a.Balance != tt.fund-tt.wantCharged || a.Reserved != 0 || a.Consumed != tt.wantCharged || a.Purchased != tt.fund {
				t.Errorf("account = %+v", a)
			}

			entries := e.entries(t, id)
			if len(entries) != before+1 {
				t.Fatalf("%d new ledger entries, want 1", len(entries)-before)
			}
			en := entries[len(entries)-1]
			if en.Type != "usage" || en.Amount != -tt.wantCharged || en.BalanceAfter != want.BalanceAfter || en.Reference != h.ID {
				t.Errorf("ledger entry = %+v", en)
			}
			if !en.CreatedAt.Equal(rec.CreatedAt) {
				t.Errorf("entry CreatedAt = %v, want the record's %v", en.CreatedAt, rec.CreatedAt)
			}
			wantFields := map[string]string{
				"request_id": rec.RequestID, "model": rec.Model, "provider": rec.Provider, "endpoint": rec.Endpoint,
				"input_tokens": "1200", "cached_input_tokens": "300", "output_tokens": "456", "reasoning_tokens": "56",
				"cache_write_tokens": "188", "cache_write_1h_tokens": "100",
				"estimated": "1", "streamed": "1", "cancelled": "0", "failed": "0", "status": "200", "reason": "stop",
				"latency_us": "1234567", "ttft_us": "89000", "capped": "0", "over_hold": strconv.FormatInt(tt.wantOver, 10),
			}
			for k, v := range wantFields {
				if en.Fields[k] != v {
					t.Errorf("entry field %s = %q, want %q", k, en.Fields[k], v)
				}
			}

			g, err := e.st.Generation(ctx, id, rec.RequestID)
			if err != nil {
				t.Fatal(err)
			}
			wantGen := metering.Generation{Record: rec, Charged: tt.wantCharged, BalanceAfter: want.BalanceAfter, OverHold: tt.wantOver}
			if g != wantGen {
				t.Errorf("Generation = %+v\nwant         %+v", g, wantGen)
			}
			if wantCalls := int64(min(tt.wantOver, 1)); a.OverHoldCalls != wantCalls || a.OverHold != tt.wantOver {
				t.Errorf("over-hold counters = %d calls, %d mc; want %d, %d", a.OverHoldCalls, a.OverHold, wantCalls, tt.wantOver)
			}
			assertLedger(t, e.st, id)
		})
	}
}

func TestSettleReplay(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "replay", 50_000)
	h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "replay", HoldID: "r1", Fixed: 500, PerOutput: 5, MinOutput: 1, MaxOutput: 2000})
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.st.Settle(ctx, metering.Settlement{Account: "replay", HoldID: h.ID, Cost: 7777, Record: sampleRecord("r1")})
	if err != nil || first.Replay {
		t.Fatalf("first Settle = %+v, %v", first, err)
	}
	// Another call runs meanwhile: the replay must still answer the first figures.
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "replay", Amount: 1000, Reference: "top-up"}); err != nil {
		t.Fatal(err)
	}
	acctBefore, entriesBefore := e.acct(t, "replay"), len(e.entries(t, "replay"))
	for _, cost := range []int64{7777, 1, 9_999_999} {
		rec := sampleRecord("r1")
		rec.Model = "another" // a replay's record changes nothing either
		again, err := e.st.Settle(ctx, metering.Settlement{Account: "replay", HoldID: h.ID, Cost: cost, Record: rec})
		if err != nil {
			t.Fatal(err)
		}
		want := first
		want.Replay = true
		if again != want {
			t.Errorf("replayed Settle(cost %d) = %+v, want %+v", cost, again, want)
		}
	}
	if a := e.acct(t, "replay"); a != acctBefore {
		t.Errorf("replays changed the account: %+v → %+v", acctBefore, a)
	}
	if n := len(e.entries(t, "replay")); n != entriesBefore {
		t.Errorf("replays wrote %d ledger entries", n-entriesBefore)
	}
	if g, err := e.st.Generation(ctx, "replay", "r1"); err != nil || g.Model != "claude-sonnet" {
		t.Errorf("a replay rewrote the cost record: %+v, %v", g, err)
	}
	// A record under another request id would not be found by a replay.
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "replay", HoldID: h.ID, Cost: 1, Record: sampleRecord("r1-other")}); !errors.Is(err, metering.ErrRequestID) {
		t.Errorf("Settle under another request id: %v, want ErrRequestID", err)
	}
	assertLedger(t, e.st, "replay")
}

// A call that outlives its hold (hold TTL shorter than the call) is charged
// what the account has free, never more: the balance never goes negative.
func TestSettleAfterHoldExpired(t *testing.T) {
	const ttl = 200 * time.Millisecond
	e := newEnv(t, metering.Options{HoldTTL: ttl})
	ctx := context.Background()
	e.account(t, "slow", 10_000)
	a, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "slow", HoldID: "A", Fixed: 10_000, MaxOutput: 0})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 150*time.Millisecond)
	// Another call sweeps A and takes 8000.
	b, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "slow", HoldID: "B", Fixed: 8000, MaxOutput: 0})
	if err != nil || b.Available != 2000 {
		t.Fatalf("hold B = %+v, %v", b, err)
	}
	c, err := e.st.Settle(ctx, metering.Settlement{Account: "slow", HoldID: a.ID, Cost: 5000, Record: metering.Record{RequestID: "A"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Charged != 2000 || !c.Capped || c.BalanceAfter != 8000 {
		t.Errorf("late Settle = %+v, want 2000 charged (what was free), capped, balance 8000", c)
	}
	c, err = e.st.Settle(ctx, metering.Settlement{Account: "slow", HoldID: b.ID, Cost: 8000, Record: metering.Record{RequestID: "B"}})
	if err != nil || c.Charged != 8000 || c.BalanceAfter != 0 || c.Capped {
		t.Errorf("Settle B = %+v, %v", c, err)
	}
	// With nothing free, a late settle charges nothing.
	e.account(t, "broke", 3000)
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "broke", HoldID: "X", Fixed: 3000}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 150*time.Millisecond)
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "broke", HoldID: "Y", Fixed: 3000}); err != nil {
		t.Fatal(err)
	}
	c, err = e.st.Settle(ctx, metering.Settlement{Account: "broke", HoldID: "X", Cost: 1000, Record: metering.Record{RequestID: "X"}})
	if err != nil || c.Charged != 0 || !c.Capped || c.BalanceAfter != 3000 {
		t.Errorf("late Settle with nothing free = %+v, %v", c, err)
	}
	for _, id := range []string{"slow", "broke"} {
		if a := e.acct(t, id); a.Balance < 0 || a.Available() < 0 {
			t.Errorf("%s overdrawn: %+v", id, a)
		}
		assertLedger(t, e.st, id)
	}
}

func TestSettleErrors(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "s", 1000)
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "s", HoldID: "h", Fixed: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "s", HoldID: "h", Cost: -1}); err == nil || errors.Is(err, metering.ErrUnavailable) {
		t.Errorf("Settle(negative cost) error = %v", err)
	}
	if a := e.acct(t, "s"); a.Reserved != 100 || a.Balance != 1000 {
		t.Errorf("a rejected settle changed the account: %+v", a)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "ghost", HoldID: "h", Cost: 1}); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("Settle(unknown account) error = %v, want ErrNoAccount", err)
	}
	if _, err := e.st.Generation(ctx, "s", "never"); !errors.Is(err, metering.ErrNotFound) {
		t.Errorf("Generation(unknown) error = %v, want ErrNotFound", err)
	}
	assertLedger(t, e.st, "s")
}

func TestRelease(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "rel", 20_000)
	key, _, err := e.st.CreateKey(ctx, "rel", "k", 15_000)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "rel", KeyID: key.ID, HoldID: "call-1", Fixed: 2000, PerOutput: 10, MinOutput: 1, MaxOutput: 5000})
	if err != nil || h.Amount != 15_000 {
		t.Fatalf("Reserve = %+v, %v", h, err)
	}
	entriesBefore := len(e.entries(t, "rel"))

	rec := metering.Record{RequestID: "req-1", Model: "gpt-4.1", Provider: "openai", Endpoint: "chat.completions",
		Output: 37, Streamed: true, Failed: true, Status: 502, Reason: "upstream cut the stream",
		Latency: 2 * time.Second, CreatedAt: time.UnixMilli(1_760_000_000_000).UTC()}
	if err := e.st.Release(ctx, "rel", key.ID, h.ID, &rec); err != nil {
		t.Fatal(err)
	}
	a := e.acct(t, "rel")
	if a.Balance != 20_000 || a.Reserved != 0 || a.Consumed != 0 {
		t.Errorf("after release: %+v, want nothing charged, nothing reserved", a)
	}
	if n := len(e.entries(t, "rel")); n != entriesBefore {
		t.Errorf("release wrote %d ledger entries", n-entriesBefore)
	}
	g, err := e.st.Generation(ctx, "rel", "req-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (metering.Generation{Record: rec}); g != want {
		t.Errorf("Generation = %+v\nwant         %+v", g, want)
	}
	// The key's whole limit is free again.
	h2, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "rel", KeyID: key.ID, HoldID: "call-2", Fixed: 2000, PerOutput: 10, MinOutput: 1, MaxOutput: 5000})
	if err != nil || h2.Amount != 15_000 {
		t.Errorf("Reserve after release = %+v, %v; want the key's full 15000", h2, err)
	}
	// Releasing twice, or a hold that never was, is harmless.
	for _, id := range []string{"call-2", "call-2", "nope"} {
		if err := e.st.Release(ctx, "rel", key.ID, id, nil); err != nil {
			t.Errorf("Release(%s): %v", id, err)
		}
	}
	if a := e.acct(t, "rel"); a.Reserved != 0 || a.Balance != 20_000 {
		t.Errorf("after double release: %+v", a)
	}
	if _, err := e.st.Generation(ctx, "rel", "call-2"); !errors.Is(err, metering.ErrNotFound) {
		t.Errorf("Release without a record stored one: %v", err)
	}
	assertLedger(t, e.st, "rel")
}

// A hold can be worth 0 mc (a free tier, a zero-rate model). Settling,
// releasing and sweeping it must work like any other hold.
func TestZeroAmountHolds(t *testing.T) {
	const ttl = 200 * time.Millisecond
	e := newEnv(t, metering.Options{HoldTTL: ttl})
	ctx := context.Background()
	e.account(t, "free", 1000)
	key, _, err := e.st.CreateKey(ctx, "free", "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	zero := func(hold, kid string) {
		t.Helper()
		h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "free", KeyID: kid, HoldID: hold, Fixed: 0, PerOutput: 0, MinOutput: 0, MaxOutput: 4096})
		if err != nil || h.Amount != 0 || h.OutputTokens != 4096 {
			t.Fatalf("zero hold %s = %+v, %v", hold, h, err)
		}
	}
	zero("settled", key.ID)
	c, err := e.st.Settle(ctx, metering.Settlement{Account: "free", KeyID: key.ID, HoldID: "settled", Cost: 0, Record: metering.Record{RequestID: "settled"}})
	if err != nil || c.Charged != 0 || c.BalanceAfter != 1000 {
		t.Errorf("Settle(zero hold) = %+v, %v", c, err)
	}
	zero("released", key.ID)
	if err := e.st.Release(ctx, "free", key.ID, "released", nil); err != nil {
		t.Errorf("Release(zero hold): %v", err)
	}
	zero("orphan", key.ID)
	zero("orphan-nokey", "")
	time.Sleep(ttl + 150*time.Millisecond)
	// The next reserve sweeps the expired zero holds.
	h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "free", HoldID: "next", Fixed: 1000})
	if err != nil || h.Amount != 1000 {
		t.Errorf("Reserve after zero holds expired = %+v, %v", h, err)
	}
	if err := e.st.Release(ctx, "free", "", "next", nil); err != nil {
		t.Error(err)
	}
	if a := e.acct(t, "free"); a.Reserved != 0 || a.Balance != 1000 {
		t.Errorf("account = %+v", a)
	}
	assertLedger(t, e.st, "free")
}
