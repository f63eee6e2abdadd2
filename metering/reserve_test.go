package metering_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// grant is the spec of Reserve (docs/architecture.md §4, §5), computed independently:
// the output tokens granted are the most in [MinOutput, MaxOutput] that
// `available` can pay for at Fixed + PerOutput × tokens.
func grant(available int64, r metering.HoldRequest) (amount, out int64, ok bool) {
	cost := func(n int64) int64 { return r.Fixed + r.PerOutput*n }
	if available < cost(r.MinOutput) {
		return 0, 0, false
	}
	// Largest n in [MinOutput, MaxOutput] with cost(n) ≤ available, by bisection.
	lo, hi := r.MinOutput, r.MaxOutput
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if cost(mid) <= available {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return cost(lo), lo, true
}

func TestReserve(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	tests := []struct {
		name    string
		balance int64
		req     metering.HoldRequest
	}{
		{"plenty", 1_000_000, metering.HoldRequest{Fixed: 1000, PerOutput: 16, MinOutput: 1, MaxOutput: 4096}},
		{"affordable below max", 10_000, metering.HoldRequest{Fixed: 1000, PerOutput: 16, MinOutput: 1, MaxOutput: 4096}},
		{"exactly the minimum", 1000 + 16*10, metering.HoldRequest{Fixed: 1000, PerOutput: 16, MinOutput: 10, MaxOutput: 4096}},
		{"one short of the minimum", 1000 + 16*10 - 1, metering.HoldRequest{Fixed: 1000, PerOutput: 16, MinOutput: 10, MaxOutput: 4096}},
		{"exactly the maximum", 1000 + 16*4096, metering.HoldRequest{Fixed: 1000, PerOutput: 16, MinOutput: 1, MaxOutput: 4096}},
		{"one short of the maximum", 1000 + 16*4096 - 1, metering.HoldRequest{Fixed: 1000, PerOutput: 16, MinOutput: 1, MaxOutput: 4096}},
		{"no per-token price", 5000, metering.HoldRequest{Fixed: 4000, PerOutput: 0, MinOutput: 1, MaxOutput: 100}},
		{"fixed above balance", 5000, metering.HoldRequest{Fixed: 5001, PerOutput: 0, MinOutput: 0, MaxOutput: 0}},
		{"empty account", 0, metering.HoldRequest{Fixed: 1, PerOutput: 1, MinOutput: 1, MaxOutput: 10}},
		{"free call on empty account", 0, metering.HoldRequest{Fixed: 0, PerOutput: 5, MinOutput: 0, MaxOutput: 10}},
		{"min equals max", 100_000, metering.HoldRequest{Fixed: 10, PerOutput: 3, MinOutput: 50, MaxOutput: 50}},
		{"odd division", 1_000_003, metering.HoldRequest{Fixed: 17, PerOutput: 7, MinOutput: 0, MaxOutput: 1 << 30}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("reserve-%d", i)
			e.account(t, id, tt.balance)
			r := tt.req
			r.Account, r.HoldID = id, "hold-1"
			wantAmount, wantOut, ok := grant(tt.balance, r)
			h, err := e.st.Reserve(ctx, r)
			if !ok {
				wantInsufficient(t, err, r.Fixed+r.PerOutput*r.MinOutput, tt.balance, false)
				if a := e.acct(t, id); a.Reserved != 0 || a.Balance != tt.balance {
					t.Errorf("a refused reserve changed the account: %+v", a)
				}
				return
			}
			if err != nil {
				t.Fatalf("Reserve: %v", err)
			}
			want := metering.Hold{ID: "hold-1", Amount: wantAmount, OutputTokens: wantOut, Available: tt.balance - wantAmount}
			if h != want {
				t.Errorf("Reserve = %+v, want %+v", h, want)
			}
			if a := e.acct(t, id); a.Reserved != wantAmount || a.Balance != tt.balance || a.Available() != tt.balance-wantAmount {
				t.Errorf("account after reserve = %+v, want reserved %d", a, wantAmount)
			}
			assertLedger(t, e.st, id)
		})
	}
}

func TestReserveSeesOtherHolds(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "shared", 10_000)
	req := metering.HoldRequest{Account: "shared", Fixed: 1000, PerOutput: 10, MinOutput: 100, MaxOutput: 300}
	avail := int64(10_000)
	for i := 0; ; i++ {
		r := req
		r.HoldID = fmt.Sprintf("h%d", i)
		wantAmount, wantOut, ok := grant(avail, r)
		h, err := e.st.Reserve(ctx, r)
		if !ok {
			wantInsufficient(t, err, 2000, avail, false)
			break
		}
		if err != nil || h.Amount != wantAmount || h.OutputTokens != wantOut || h.Available != avail-wantAmount {
			t.Fatalf("hold %d = %+v, %v; want amount %d out %d", i, h, err, wantAmount, wantOut)
		}
		avail -= wantAmount
	}
	if a := e.acct(t, "shared"); a.Available() != avail || a.Balance != 10_000 {
		t.Errorf("account = %+v, want available %d", a, avail)
	}
	assertLedger(t, e.st, "shared")
}

func TestReserveIdempotent(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "idem", 50_000)
	req := metering.HoldRequest{Account: "idem", HoldID: "req-1", Fixed: 2000, PerOutput: 8, MinOutput: 1, MaxOutput: 1000}
	first, err := e.st.Reserve(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		again, err := e.st.Reserve(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID || again.Amount != first.Amount || again.OutputTokens != first.OutputTokens {
			t.Errorf("retry %d = %+v, first %+v", i, again, first)
		}
	}
	if a := e.acct(t, "idem"); a.Reserved != first.Amount || first.Amount != 2000+8*1000 {
		t.Errorf("reserved %d after retried reserves, want one hold of %d", a.Reserved, first.Amount)
	}
	// One settle undoes the single hold entirely.
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "idem", HoldID: "req-1", Cost: 100, Record: metering.Record{RequestID: "req-1"}}); err != nil {
		t.Fatal(err)
	}
	if a := e.acct(t, "idem"); a.Reserved != 0 || a.Balance != 49_900 {
		t.Errorf("after settle: %+v", a)
	}
	assertLedger(t, e.st, "idem")
}

func TestReserveInvalid(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "inv", 1000)
	for _, r := range []metering.HoldRequest{
		{Account: "inv", HoldID: "a", Fixed: -1, MaxOutput: 1},
		{Account: "inv", HoldID: "b", PerOutput: -1, MaxOutput: 1},
		{Account: "inv", HoldID: "c", MinOutput: -1, MaxOutput: 1},
		{Account: "inv", HoldID: "d", MinOutput: 5, MaxOutput: 4},
	} {
		if _, err := e.st.Reserve(ctx, r); err == nil || errors.Is(err, metering.ErrInsufficient) || errors.Is(err, metering.ErrUnavailable) {
			t.Errorf("Reserve(%+v) error = %v, want a validation error", r, err)
		}
	}
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "ghost", HoldID: "x", MaxOutput: 1}); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("Reserve(unknown account) error = %v, want ErrNoAccount", err)
	}
	if a := e.acct(t, "inv"); a.Reserved != 0 {
		t.Errorf("invalid requests reserved %d", a.Reserved)
	}
	assertLedger(t, e.st, "inv")
}

func TestReserveKeyCreditLimit(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "team", 1_000_000)
	key, _, err := e.st.CreateKey(ctx, "team", "intern", 5000)
	if err != nil {
		t.Fatal(err)
	}
	if key.CreditLimit != 5000 {
		t.Fatalf("CreditLimit = %d", key.CreditLimit)
	}
	req := metering.HoldRequest{Account: "team", KeyID: key.ID, Fixed: 1000, PerOutput: 10, MinOutput: 1, MaxOutput: 1000}

	// The key may spend 5000 in all: the hold is sized to it, not to the balance.
	r := req
	r.HoldID = "k1"
	h, err := e.st.Reserve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if wantOut := (5000 - 1000) / 10; h.Amount != 5000 || h.OutputTokens != int64(wantOut) || h.Available != 0 {
		t.Errorf("key-limited hold = %+v, want 5000 mc, %d tokens, 0 left", h, wantOut)
	}
	// Its whole limit is held: a second call through the key is refused by the key, not the balance.
	r.HoldID = "k2"
	_, err = e.st.Reserve(ctx, r)
	wantInsufficient(t, err, 1010, 0, true)
	// Without the key the balance still allows it.
	nokey := req
	nokey.KeyID, nokey.HoldID = "", "nk"
	if h, err := e.st.Reserve(ctx, nokey); err != nil || h.Amount != 1000+10*1000 {
		t.Errorf("Reserve without key = %+v, %v", h, err)
	}
	if err := e.st.Release(ctx, "team", "", "nk", nil); err != nil {
		t.Fatal(err)
	}

	// Spending 3000 leaves 2000 on the key.
	if c, err := e.st.Settle(ctx, metering.Settlement{Account: "team", KeyID: key.ID, HoldID: "k1", Cost: 3000, Record: metering.Record{RequestID: "k1"}}); err != nil || c.Charged != 3000 {
		t.Fatalf("Settle = %+v, %v", c, err)
	}
	r.HoldID = "k3"
	h, err = e.st.Reserve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if h.Amount != 2000 || h.OutputTokens != 100 {
		t.Errorf("hold after spending 3000 of 5000 = %+v, want 2000 mc / 100 tokens", h)
	}
	if err := e.st.Release(ctx, "team", key.ID, "k3", nil); err != nil {
		t.Fatal(err)
	}
	// The minimum above what is left on the key: refused, KeyLimit set.
	r.HoldID, r.Fixed = "k4", 1995
	_, err = e.st.Reserve(ctx, r)
	wantInsufficient(t, err, 2005, 2000, true)

	keys, err := e.st.Keys(ctx, "team")
	if err != nil || len(keys) != 1 || keys[0].Used != 3000 {
		t.Errorf("Keys = %+v, %v; want one key with 3000 used", keys, err)
	}

	// When the balance is below the key's remaining limit, the balance is the constraint.
	e.account(t, "poor", 1500)
	k2, _, err := e.st.CreateKey(ctx, "poor", "big", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.st.Reserve(ctx, metering.HoldRequest{Account: "poor", KeyID: k2.ID, HoldID: "p", Fixed: 2000, MaxOutput: 0})
	wantInsufficient(t, err, 2000, 1500, false)
	assertLedger(t, e.st, "team")
	assertLedger(t, e.st, "poor")
}

// A proxy killed mid-call never settles nor releases its hold; the credits
// come back within the hold TTL, at the next reserve on the account.
func TestHoldExpiry(t *testing.T) {
	const ttl = 200 * time.Millisecond
	e := newEnv(t, metering.Options{HoldTTL: ttl})
	ctx := context.Background()
	if e.st.HoldTTL() != ttl {
		t.Fatalf("HoldTTL = %v", e.st.HoldTTL())
	}
	e.account(t, "crashy", 20_000)
	req := metering.HoldRequest{Account: "crashy", Fixed: 1000, PerOutput: 10, MinOutput: 100, MaxOutput: 100_000}
	r := req
	r.HoldID = "orphan"
	h, err := e.st.Reserve(ctx, r)
	if err != nil || h.Amount != 20_000 {
		t.Fatalf("orphan hold = %+v, %v; want the whole balance", h, err)
	}
	r.HoldID = "blocked"
	_, err = e.st.Reserve(ctx, r)
	wantInsufficient(t, err, 2000, 0, false)

	time.Sleep(ttl + 150*time.Millisecond)

	r.HoldID = "after"
	h, err = e.st.Reserve(ctx, r)
	if err != nil {
		t.Fatalf("reserve after the TTL: %v", err)
	}
	if h.Amount != 20_000 || h.Available != 0 || h.OutputTokens != (20_000-1000)/10 {
		t.Errorf("hold after the TTL = %+v, want the full balance again", h)
	}
	if a := e.acct(t, "crashy"); a.Reserved != 20_000 || a.Balance != 20_000 {
		t.Errorf("account = %+v, want only the new hold reserved", a)
	}
	// The new hold expires as well.
	time.Sleep(ttl + 150*time.Millisecond)
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "crashy", HoldID: "sweep", Fixed: 0, MaxOutput: 0}); err != nil {
		t.Fatal(err)
	}
	if a := e.acct(t, "crashy"); a.Reserved != 0 {
		t.Errorf("reserved %d after every hold expired", a.Reserved)
	}
	assertLedger(t, e.st, "crashy")
}

// Amounts are integers end to end, including inside the Lua scripts, where
// numbers are doubles: exact up to 2^53.
func TestLargeAmountsExact(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	const fund = int64(4_000_000_000_000_007)
	e.account(t, "whale", fund)
	amounts := []int64{1_234_567_890_123_457, 100_000_000_000_001, 99_999_999_999_999, 123_456_789_012_345}
	var charged int64
	for i, amt := range amounts {
		id := fmt.Sprintf("big-%d", i)
		h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "whale", HoldID: id, Fixed: amt, MaxOutput: 0})
		if err != nil || h.Amount != amt {
			t.Fatalf("Reserve(%d) = %+v, %v", amt, h, err)
		}
		if a := e.acct(t, "whale"); a.Reserved != amt {
			t.Fatalf("reserved %d, want %d", a.Reserved, amt)
		}
		if i%2 == 0 {
			c, err := e.st.Settle(ctx, metering.Settlement{Account: "whale", HoldID: id, Cost: amt - 1, Record: metering.Record{RequestID: id}})
			if err != nil || c.Charged != amt-1 || c.Capped {
				t.Fatalf("Settle = %+v, %v", c, err)
			}
			charged += amt - 1
		} else if err := e.st.Release(ctx, "whale", "", id, nil); err != nil {
			t.Fatal(err)
		}
		if a := e.acct(t, "whale"); a.Reserved != 0 || a.Balance != fund-charged {
			t.Errorf("after hold %d of %d: reserved %d balance %d, want 0 and %d", i, amt, a.Reserved, a.Balance, fund-charged)
		}
	}
	assertLedger(t, e.st, "whale")
}
