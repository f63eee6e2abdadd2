package metering_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

func newCode(t *testing.T, st *metering.Store, p metering.PromoCode) {
	t.Helper()
	if err := st.CreatePromoCode(context.Background(), p); err != nil {
		t.Fatalf("CreatePromoCode(%+v): %v", p, err)
	}
}

// One account redeeming one code 50 times at once is credited once.
func TestRedeemOnceUnderConcurrency(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "one", 1000)
	newCode(t, e.st, metering.PromoCode{Code: "WELCOME", Credits: 5000, GrantExpiresIn: time.Hour})
	var ok, redeemed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.st.Redeem(ctx, "one", "WELCOME")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, metering.ErrPromoRedeemed):
				redeemed++
			default:
				t.Errorf("Redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || redeemed != 49 {
		t.Fatalf("redeemed %d times, refused %d times; want 1 and 49", ok, redeemed)
	}
	a := e.acct(t, "one")
	if a.Balance != 6000 || a.Promotional != 5000 || a.Paid() != 1000 || a.Promoted != 5000 {
		t.Fatalf("account = %+v", a)
	}
	assertLedger(t, e.st, "one")
}

// 50 accounts redeeming a code of max_redemptions M: exactly M grants.
func TestRedeemAtMostMaxRedemptions(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	const n, m = 50, 7
	for i := range n {
		e.account(t, fmt.Sprintf("acc%d", i), 0)
	}
	newCode(t, e.st, metering.PromoCode{Code: "FIRST7", Credits: 100, MaxRedemptions: m})
	var ok, exhausted int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.st.Redeem(ctx, fmt.Sprintf("acc%d", i), "FIRST7")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, metering.ErrPromoExhausted):
				exhausted++
			default:
				t.Errorf("Redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != m || exhausted != n-m {
		t.Fatalf("%d grants, %d exhausted; want %d and %d", ok, exhausted, m, n-m)
	}
	var granted int64
	for i := range n {
		id := fmt.Sprintf("acc%d", i)
		granted += e.acct(t, id).Promoted
		assertLedger(t, e.st, id)
	}
	p, err := e.st.PromoCode(ctx, "FIRST7")
	if err != nil || p.Redeemed != m || granted != m*100 {
		t.Fatalf("code %+v (%v), granted %d mc in all", p, err, granted)
	}
}

func TestRedeemRefusals(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "r", 0)
	newCode(t, e.st, metering.PromoCode{Code: "OLD", Credits: 100, ExpiresAt: time.Now().Add(-time.Second)})
	if err := e.st.CreatePromoCode(ctx, metering.PromoCode{Code: "OLD", Credits: 5}); !errors.Is(err, metering.ErrPromoExists) {
		t.Errorf("second CreatePromoCode = %v, want ErrPromoExists", err)
	}
	for _, tt := range []struct {
		code string
		want error
	}{
		{"NOPE", metering.ErrNotFound},
		{"bad code!", metering.ErrNotFound},
		{"OLD", metering.ErrPromoExpired},
	} {
		if _, err := e.st.Redeem(ctx, "r", tt.code); !errors.Is(err, tt.want) {
			t.Errorf("Redeem(%q) = %v, want %v", tt.code, err, tt.want)
		}
	}
	newCode(t, e.st, metering.PromoCode{Code: "ONE", Credits: 100, MaxRedemptions: 1})
	if _, err := e.st.Redeem(ctx, "ghost", "ONE"); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("Redeem for a missing account = %v, want ErrNoAccount", err)
	}
	if _, err := e.st.Redeem(ctx, "r", "ONE"); err != nil { // the missing account took no redemption
		t.Errorf("Redeem after a missing account's try: %v", err)
	}
	// A claim whose grant a crash cut short: the retry completes the grant,
	// once, even after the code is exhausted or expired.
	newCode(t, e.st, metering.PromoCode{Code: "CUT", Credits: 300, MaxRedemptions: 1})
	e.rdb.SAdd(ctx, "{p:CUT}:by", "r") // as promo_claim.lua leaves it
	e.rdb.HIncrBy(ctx, "{p:CUT}:code", "redeemed", 1)
	if got, err := e.st.Redeem(ctx, "r", "CUT"); err != nil || got.Credits != 300 {
		t.Fatalf("retry after a cut-short grant: %+v, %v", got, err)
	}
	if _, err := e.st.Redeem(ctx, "r", "CUT"); !errors.Is(err, metering.ErrPromoRedeemed) {
		t.Fatalf("second retry: %v", err)
	}
	if a := e.acct(t, "r"); a.Promoted != 400 {
		t.Fatalf("promoted %d, want 400", a.Promoted)
	}
	assertLedger(t, e.st, "r")
}

// Promotional credits pay first, earliest-expiring grant first, on every
// debit path; what is left of a grant expires as its own ledger entry; a
// debit that is not a charge takes from them only what paid credits cannot.
func TestPromoSpentFirstAndExpires(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "p", 10_000)
	newCode(t, e.st, metering.PromoCode{Code: "A", Credits: 3000, GrantExpiresIn: time.Hour})
	newCode(t, e.st, metering.PromoCode{Code: "B", Credits: 2000})
	newCode(t, e.st, metering.PromoCode{Code: "C", Credits: 1000, GrantExpiresIn: 10 * time.Minute})
	for _, c := range []string{"A", "B", "C"} {
		if _, err := e.st.Redeem(ctx, "p", c); err != nil {
			t.Fatal(err)
		}
	}
	left := func(want map[string]int64) {
		t.Helper()
		gs, err := e.st.PromoGrants(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, g := range gs {
			got[g.ID] = g.Left
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("grants left %v, want %v", got, want)
		}
		assertLedger(t, e.st, "p")
	}
	left(map[string]int64{"promo:A": 3000, "promo:B": 2000, "promo:C": 1000})

	// settle: 1500 = all of C (earliest) and 500 of A.
	h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "p", HoldID: "s1", Fixed: 2000, PerOutput: 1, MinOutput: 1, MaxOutput: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "p", HoldID: h.ID, Cost: 1500, Record: metering.Record{RequestID: "s1", Model: "m"}}); err != nil {
		t.Fatal(err)
	}
	left(map[string]int64{"promo:A": 2500, "promo:B": 2000})

	// lease flush: 600 + 2400 = A's 2500, then 500 of B; resent, applied once.
	b := metering.LeaseBatch{Account: "p", LeaseID: "lease:r1", TTL: time.Minute, Calls: []metering.LeaseCall{
		{Cost: 600, Record: metering.Record{RequestID: "l1", Model: "m"}},
		{Cost: 2400, Record: metering.Record{RequestID: "l2", Model: "m"}}}}
	for range 2 {
		if _, err := e.st.ApplyLease(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	left(map[string]int64{"promo:B": 1500})
	a := e.acct(t, "p")
	if a.Balance != 11_500 || a.Promotional != 1500 || a.Paid() != 10_000 {
		t.Fatalf("after charges: %+v", a)
	}

	// A refund of the whole purchase: the paid credits cover 10,000 of it.
	if _, err := e.st.ReversePurchase(ctx, metering.Reversal{Account: "p", PaymentID: "pi_fund-p", Kind: metering.Refund,
		Reference: "refund:ch:100", Minor: 100}); err != nil {
		t.Fatal(err)
	}
	left(map[string]int64{"promo:B": 1500})
	// A negative adjustment past the paid credits is a debt: B pays none of it.
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "p", Amount: -1000, Reference: "adj", Type: metering.Adjustment}); err != nil {
		t.Fatal(err)
	}
	left(map[string]int64{"promo:B": 1500})
	if a := e.acct(t, "p"); a.Balance != 500 || a.Paid() != -1000 || a.Promotional != 1500 {
		t.Fatalf("after reversals: %+v", a)
	}
}

func TestPromoExpiry(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "x", 500)
	e.account(t, "y", 0)
	newCode(t, e.st, metering.PromoCode{Code: "SOON", Credits: 3000, GrantExpiresIn: time.Minute})
	newCode(t, e.st, metering.PromoCode{Code: "LATER", Credits: 700, GrantExpiresIn: 2 * time.Hour})
	for _, a := range []string{"x", "y"} {
		for _, c := range []string{"SOON", "LATER"} {
			if _, err := e.st.Redeem(ctx, a, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	h, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "x", HoldID: "c1", Fixed: 1000, PerOutput: 1, MinOutput: 1, MaxOutput: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "x", HoldID: h.ID, Cost: 1000, Record: metering.Record{RequestID: "c1", Model: "m"}}); err != nil {
		t.Fatal(err)
	}
	// Nothing due yet.
	if n, err := e.st.SweepPromos(ctx, time.Now(), 0); err != nil || n != 0 {
		t.Fatalf("SweepPromos now = %d, %v", n, err)
	}
	at := time.Now().Add(90 * time.Minute)
	for range 2 { // a second sweep finds nothing more
		if _, err := e.st.SweepPromos(ctx, at, 0); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string][2]int64{"x": {1200, 700}, "y": {700, 700}} {
		a := e.acct(t, id)
		if a.Balance != want[0] || a.Promotional != want[1] {
			t.Errorf("%s after the first expiry: balance %d promotional %d, want %v", id, a.Balance, a.Promotional, want)
		}
		assertLedger(t, e.st, id)
	}
	var expired []metering.Entry
	for _, en := range e.entries(t, "x") {
		if en.Type == metering.PromoExpired {
			expired = append(expired, en)
		}
	}
	if len(expired) != 1 || expired[0].Amount != -2000 || expired[0].Fields["grant"] != "promo:SOON" {
		t.Fatalf("expiry entries of x: %+v", expired)
	}
	if _, err := e.st.SweepPromos(ctx, time.Now().Add(3*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if a := e.acct(t, "y"); a.Balance != 0 || a.Promotional != 0 || a.Promoted != 0 {
		t.Errorf("y after every expiry: %+v", a)
	}
	assertLedger(t, e.st, "x")
	assertLedger(t, e.st, "y")
}

// Charges from two replicas (per-call settles and lease flushes) race
// grants' expiries and new redemptions: every invariant holds after, and
// every mc charged is a priced call's.
func TestPromoSplitUnderConcurrency(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "race", 200_000)
	other := e.replica(t, metering.Options{})
	for i, ttl := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, time.Hour, 0} {
		newCode(t, e.st, metering.PromoCode{Code: fmt.Sprintf("R%d", i), Credits: 40_000, GrantExpiresIn: ttl})
	}
	var charged sync.Map // request id → cost
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // the sweeper
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.st.SweepPromos(ctx, time.Now(), 0); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Add(1)
	go func() { // redemptions while calls run
		defer wg.Done()
		for i := range 4 {
			if _, err := e.st.Redeem(ctx, "race", fmt.Sprintf("R%d", i)); err != nil {
				t.Error(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var calls sync.WaitGroup
	for w := range 8 {
		calls.Add(1)
		go func() {
			defer calls.Done()
			st := e.st
			if w%2 == 1 {
				st = other
			}
			for i := range 40 {
				id := fmt.Sprintf("w%d-%d", w, i)
				cost := int64(100 + (w*37+i*11)%400)
				if w < 4 {
					h, err := st.Reserve(ctx, metering.HoldRequest{Account: "race", HoldID: id, Fixed: 500})
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := st.Settle(ctx, metering.Settlement{Account: "race", HoldID: h.ID, Cost: cost, Record: metering.Record{RequestID: id, Model: "m"}}); err != nil {
						t.Error(err)
						return
					}
				} else {
					b := metering.LeaseBatch{Account: "race", LeaseID: fmt.Sprintf("lease:w%d", w), TTL: time.Minute,
						Calls: []metering.LeaseCall{{Cost: cost, Record: metering.Record{RequestID: id, Model: "m"}}}}
					if _, err := st.ApplyLease(ctx, b); err != nil {
						t.Error(err)
						return
					}
				}
				charged.Store(id, cost)
			}
		}()
	}
	calls.Wait()
	time.Sleep(80 * time.Millisecond) // past the short grants' expiry
	close(stop)
	wg.Wait()
	if _, err := e.st.SweepPromos(ctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	assertLedger(t, e.st, "race")
	var want, got, promo int64
	charged.Range(func(_, v any) bool { want += v.(int64); return true })
	for _, en := range e.entries(t, "race") {
		if en.Type == "usage" {
			got -= en.Amount
		}
	}
	a := e.acct(t, "race")
	if got != want || a.Consumed != want {
		t.Fatalf("usage debits %d, consumed %d, priced %d", got, a.Consumed, want)
	}
	gs, err := e.st.PromoGrants(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if !g.ExpiresAt.IsZero() && g.ExpiresAt.Before(time.Now()) {
			t.Errorf("grant %s past its expiry still holds %d", g.ID, g.Left)
		}
		promo += g.Left
	}
	if promo != a.Promotional {
		t.Fatalf("grants hold %d, promotional %d", promo, a.Promotional)
	}
}

// A lost sweeper index is rebuilt from the accounts' grant sets.
func TestPromoIndexBackstop(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "lost", 0)
	newCode(t, e.st, metering.PromoCode{Code: "LOST", Credits: 50, GrantExpiresIn: time.Minute})
	if _, err := e.st.Redeem(ctx, "lost", "LOST"); err != nil {
		t.Fatal(err)
	}
	e.rdb.Del(ctx, "tg:promo:due")
	later := time.Now().Add(time.Hour)
	if _, err := e.st.SweepPromos(ctx, later, 0); err != nil {
		t.Fatal(err)
	}
	if a := e.acct(t, "lost"); a.Promotional != 50 {
		t.Fatalf("swept without an index: %+v", a)
	}
	var seen []string
	if err := e.st.PromoAccounts(ctx, func(a string) error { seen = append(seen, a); return e.st.IndexPromos(ctx, a) }); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.SweepPromos(ctx, later, 0); err != nil || n != 1 || fmt.Sprint(seen) != "[lost]" {
		t.Fatalf("SweepPromos = %d, %v (accounts %v)", n, err, seen)
	}
	if a := e.acct(t, "lost"); a.Promotional != 0 || a.Balance != 0 {
		t.Fatalf("after the rebuilt sweep: %+v", a)
	}
	assertLedger(t, e.st, "lost")
}
