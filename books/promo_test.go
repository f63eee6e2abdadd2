package books

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/metering"
)

// Promotional grants, charges they pay for and their expiries ship to the
// journal, reconcile, and a restore rebuilds the paid/promotional split and
// what is left of each grant.
func TestPromoShipReconcileRestore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "pr", 10_000)
	e.account(t, "late", 1)
	bs := e.b.NewStore(e.St)
	if err := e.b.NewStore(e.St).SetLowBalance(ctx, "pr", 4321); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []metering.PromoCode{
		{Code: "SHORT", Credits: 3000, GrantExpiresIn: time.Minute},
		{Code: "LONG", Credits: 2000, GrantExpiresIn: 48 * time.Hour},
		{Code: "EVER", Credits: 1000, MaxRedemptions: 1},
	} {
		if err := bs.CreatePromoCode(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := e.St.Redeem(ctx, "pr", p.Code); err != nil {
			t.Fatal(err)
		}
	}
	e.call(t, e.St, "pr", "m", 1000) // from SHORT
	if _, err := e.St.SweepPromos(ctx, time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err) // SHORT's 2000 expire
	}
	e.call(t, e.St, "pr", "m", 2500) // LONG's 2000, EVER's 500
	want := e.Acct(t, "pr")
	if want.Balance != 10_000+6000-1000-2000-2500 || want.Promotional != 500 {
		t.Fatalf("before shipping: %+v", want)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.assertShipped(t, "pr")
	e.reconcileClean(t, 5*time.Second)
	testledger.Assert(t, e.St, "pr")

	e.Srv.Flush(t)
	res, err := e.b.Restore(ctx, e.St, io.Discard)
	if err != nil || res.Restored != 2 {
		t.Fatalf("Restore = %+v, %v", res, err)
	}
	got := e.Acct(t, "pr")
	if got.Balance != want.Balance || got.Promotional != want.Promotional || got.Promoted != want.Promoted ||
		got.Purchased != want.Purchased || got.Consumed != want.Consumed {
		t.Fatalf("after restore %+v, want %+v", got, want)
	}
	if low, err := e.St.LowBalance(ctx, "pr"); err != nil || low != 4321 {
		t.Fatalf("low-balance alert after restore: %d, %v", low, err)
	}
	grants, err := e.St.PromoGrants(ctx, "pr")
	if err != nil || fmt.Sprint(grants) != "[{promo:EVER 500 0001-01-01 00:00:00 +0000 UTC}]" {
		t.Fatalf("grants after restore: %v %v", grants, err)
	}
	// Spending goes on from the restored split; a code redeemed before is
	// still redeemed.
	e.call(t, e.St, "pr", "m", 700)
	if a := e.Acct(t, "pr"); a.Promotional != 0 || a.Paid() != want.Paid()-200 {
		t.Fatalf("after a call: %+v", a)
	}
	// The codes come back from the books, their redemptions counted.
	if _, err := e.St.Redeem(ctx, "pr", "EVER"); !errors.Is(err, metering.ErrPromoRedeemed) {
		t.Fatalf("a code redeemed again after restore: %v", err)
	}
	if _, err := e.St.Redeem(ctx, "late", "EVER"); !errors.Is(err, metering.ErrPromoExhausted) {
		t.Fatalf("a code past its max_redemptions after restore: %v", err)
	}
	if p, err := e.St.PromoCode(ctx, "LONG"); err != nil || p.Redeemed != 1 || p.Credits != 2000 || p.GrantExpiresIn != 48*time.Hour {
		t.Fatalf("code LONG after restore: %+v, %v", p, err)
	}
	if _, err := e.St.Redeem(ctx, "late", "LONG"); err != nil {
		t.Fatalf("redeeming a restored code: %v", err)
	}
	// (Redis holds only the entries since the restore: the books check the rest.)
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.reconcileClean(t, 5*time.Second)
}
