package books

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// A checkout sold before Redis lost its data and paid after the restore is
// credited: the books keep the sale, and the restore brings it back with
// its expiry. Before, the webhook found no checkout of ours and was ignored,
// so the customer paid and got nothing (found by review). An expired one
// stays gone, and a checkout already credited is not credited again.
func TestCheckoutSoldBeforeTheLossIsCreditedAfter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bs := e.b.NewStore(e.St)
	e.account(t, "buyer", 1000)
	sold := time.Now().Add(-time.Hour)
	for _, c := range []metering.Checkout{
		{SessionID: "cs_pending", Account: "buyer", Pack: "growth", Credits: 2_374_050_000, PriceMinor: 2499, Currency: "usd", CreatedAt: sold},
		{SessionID: "cs_stale", Account: "buyer", Pack: "growth", Credits: 5, PriceMinor: 1, Currency: "usd", CreatedAt: time.Now().Add(-metering.CheckoutTTL - time.Hour)},
	} {
		if err := bs.SaveCheckout(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := e.St.Account(ctx, "buyer")
	if err != nil {
		t.Fatal(err)
	}
	before := a.Balance
	e.Srv.Flush(t)
	if _, err := e.b.Restore(ctx, e.St, io.Discard); err != nil {
		t.Fatal(err)
	}
	ttl := e.Srv.Client(t).PTTL(ctx, "{a:buyer}:co:cs_pending").Val()
	if want := time.Until(sold.Add(metering.CheckoutTTL)); ttl < want-time.Minute || ttl > want+time.Minute {
		t.Fatalf("restored checkout expires in %v, want %v", ttl, want)
	}
	f, err := bs.FulfilCheckout(ctx, metering.Fulfilment{Account: "buyer", SessionID: "cs_pending", PaymentID: "pi_pending", AmountMinor: 2499, Currency: "usd"})
	if err != nil || !f.Applied || f.Credits != 2_374_050_000 || f.BalanceAfter != before+2_374_050_000 {
		t.Fatalf("fulfilling the checkout sold before the loss: %+v, %v", f, err)
	}
	if _, err := bs.FulfilCheckout(ctx, metering.Fulfilment{Account: "buyer", SessionID: "cs_stale", PaymentID: "pi_stale", AmountMinor: 1, Currency: "usd"}); !errors.Is(err, metering.ErrNotFound) {
		t.Fatalf("an expired checkout: %v, want ErrNotFound", err)
	}
	// The funding checkout was credited before the loss: never again.
	if f, err := bs.FulfilCheckout(ctx, metering.Fulfilment{Account: "buyer", SessionID: "fund-buyer", PaymentID: "pi_fund-buyer", AmountMinor: 100, Currency: "usd"}); err == nil && f.Applied {
		t.Fatalf("a checkout credited before the loss was credited again: %+v", f)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.reconcileClean(t, 5*time.Second)
}

// A dispute won before it was opened (Stripe's events out of order) takes
// nothing when it opens, after a restore too: the early win is on the
// payment record the books keep, not only among the references, which a
// restore rebuilds from the journal where it left no entry (found by review).
func TestDisputeWonFirstSurvivesRestore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bs := e.b.NewStore(e.St)
	e.account(t, "dw1", 50_000)
	won := metering.Reversal{Account: "dw1", PaymentID: "pi_fund-dw1", Kind: metering.DisputeWon, Reference: "dispute_won:dp1", Linked: "dispute:dp1"}
	if r, err := bs.ReversePurchase(ctx, won); err != nil || r.Applied {
		t.Fatalf("the win first: %+v %v", r, err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.Srv.Flush(t)
	if _, err := e.b.Restore(ctx, e.St, io.Discard); err != nil {
		t.Fatal(err)
	}
	opened := metering.Reversal{Account: "dw1", PaymentID: "pi_fund-dw1", Kind: metering.Dispute, Reference: "dispute:dp1", Linked: "dispute_won:dp1", Minor: 100}
	r, err := bs.ReversePurchase(ctx, opened)
	if err != nil || r.Applied {
		t.Fatalf("the dispute opened after its win and a restore: %+v %v (it took credits back)", r, err)
	}
	a, err := e.St.Account(ctx, "dw1")
	if err != nil || a.Balance != 50_000 {
		t.Fatalf("balance %d (%v), want 50,000", a.Balance, err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.reconcileClean(t, 5*time.Second)
}
