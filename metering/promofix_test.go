package metering_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// assertReplay checks that the journal replays to the live grants (restore).
func assertReplay(t *testing.T, e *env, account string) {
	t.Helper()
	live, err := e.st.PromoGrants(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	if got := metering.ReplayPromo(e.entries(t, account)); fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("ReplayPromo = %+v, live grants %+v", got, live)
	}
}

// Promotional credits never pay a debt: paid = balance − promo through a
// grant to an account in debt, a negative adjustment, a dispute and its won
// closing, and the expiry.
func TestPromoNeverPaysDebt(t *testing.T) {
	for _, tc := range []struct {
		name string
		fund int64
		run  func(t *testing.T, e *env, ctx context.Context)
		// paid (balance − promotional) and promotional after the steps, and
		// the balance after the grant expired
		paid, promo, afterExpiry int64
	}{
		{name: "adjustment in debt", run: func(t *testing.T, e *env, ctx context.Context) {
			credit(t, e, -50_000, "debt")
			redeem(t, e, "DEBT")
			// paid is a debt: it covers nothing, the grant pays the 10,000
			// (the clamp took 60,000: the debt was paid off).
			credit(t, e, -10_000, "more")
		}, paid: -50_000, promo: 90_000, afterExpiry: -50_000},
		{name: "dispute in debt, won", fund: 10_000, run: func(t *testing.T, e *env, ctx context.Context) {
			credit(t, e, -60_000, "debt")
			redeem(t, e, "DEBT")
			dispute(t, e, false)
			dispute(t, e, true)
		}, paid: -50_000, promo: 100_000, afterExpiry: -50_000},
		{name: "dispute past paid, won", fund: 10_000, run: func(t *testing.T, e *env, ctx context.Context) {
			redeem(t, e, "DEBT")
			credit(t, e, -8_000, "adj")
			dispute(t, e, false) // paid 2000 pays 2000, the grant 8000
			if a := e.acct(t, "d"); a.Balance != 92_000 || a.Promotional != 92_000 {
				t.Fatalf("after the dispute: %+v", a)
			}
			dispute(t, e, true) // the 8000 go back to the grant
		}, paid: 2_000, promo: 100_000, afterExpiry: 2_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, metering.Options{})
			ctx := context.Background()
			e.account(t, "d", tc.fund)
			newCode(t, e.st, metering.PromoCode{Code: "DEBT", Credits: 100_000, GrantExpiresIn: time.Hour})
			tc.run(t, e, ctx)
			a := e.acct(t, "d")
			if a.Paid() != tc.paid || a.Promotional != tc.promo {
				t.Fatalf("account %+v: paid %d, want %d and promotional %d", a, a.Paid(), tc.paid, tc.promo)
			}
			assertLedger(t, e.st, "d")
			assertReplay(t, e, "d")
			if _, err := e.st.ExpirePromos(ctx, "d", time.Now().Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if a := e.acct(t, "d"); a.Balance != tc.afterExpiry || a.Promotional != 0 {
				t.Fatalf("after expiry: %+v, want balance %d", a, tc.afterExpiry)
			}
			assertLedger(t, e.st, "d")
			assertReplay(t, e, "d")
		})
	}
}

func credit(t *testing.T, e *env, mc int64, ref string) {
	t.Helper()
	if _, err := e.st.Credit(context.Background(), metering.Credit{Account: "d", Amount: mc, Reference: ref, Type: metering.Adjustment}); err != nil {
		t.Fatal(err)
	}
}

func redeem(t *testing.T, e *env, code string) {
	t.Helper()
	if _, err := e.st.Redeem(context.Background(), "d", code); err != nil {
		t.Fatal(err)
	}
}

func dispute(t *testing.T, e *env, won bool) {
	t.Helper()
	r := metering.Reversal{Account: "d", PaymentID: "pi_fund-d", Kind: metering.Dispute, Reference: "dispute:dp_1",
		Linked: "dispute_won:dp_1", Minor: 100}
	if won {
		r.Kind, r.Reference, r.Linked = metering.DisputeWon, "dispute_won:dp_1", "dispute:dp_1"
	}
	if res, err := e.st.ReversePurchase(context.Background(), r); err != nil || !res.Applied {
		t.Fatalf("ReversePurchase(%+v) = %+v, %v", r, res, err)
	}
}

// An expiry leaves what live holds need: a call reserved against
// promotional credits and settled after its grant expired is paid by them,
// and the part kept back expires when the hold has ended.
func TestPromoExpiryLeavesHolds(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "h", 0)
	newCode(t, e.st, metering.PromoCode{Code: "HOLD", Credits: 1000, GrantExpiresIn: time.Hour})
	redeem := func() {
		if _, err := e.st.Redeem(ctx, "h", "HOLD"); err != nil {
			t.Fatal(err)
		}
	}
	redeem()
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "h", HoldID: "c1", Fixed: 800}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(2 * time.Hour)
	if n, err := e.st.SweepPromos(ctx, at, 0); err != nil || n != 1 {
		t.Fatalf("SweepPromos = %d, %v", n, err)
	}
	if a := e.acct(t, "h"); a.Balance != 800 || a.Promotional != 800 {
		t.Fatalf("after the expiry with a hold of 800: %+v", a)
	}
	// Due again shortly, not at once.
	if n, err := e.st.SweepPromos(ctx, at, 0); err != nil || n != 0 {
		t.Fatalf("SweepPromos again = %d, %v", n, err)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "h", HoldID: "c1", Cost: 500, Record: metering.Record{RequestID: "c1", Model: "m"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.SweepPromos(ctx, at.Add(time.Minute), 0); err != nil || n != 1 {
		t.Fatalf("SweepPromos after the settle = %d, %v", n, err)
	}
	a := e.acct(t, "h")
	if a.Balance != 0 || a.Promotional != 0 || a.Consumed != 500 {
		t.Fatalf("after the settle and the second expiry: %+v", a)
	}
	var expired int64
	for _, en := range e.entries(t, "h") {
		if en.Type == metering.PromoExpired {
			expired -= en.Amount
		}
	}
	if expired != 500 {
		t.Fatalf("promo_expired entries take %d, want the 500 left unspent", expired)
	}
	assertLedger(t, e.st, "h")
	assertReplay(t, e, "h")
	n, err := e.rdb.ZCard(ctx, "tg:promo:due").Result()
	if err != nil || n != 0 {
		t.Fatalf("sweeper index holds %d accounts (%v), want none", n, err)
	}
}
