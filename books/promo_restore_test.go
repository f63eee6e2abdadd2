package books

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Promotional codes are in the books and who redeemed them in the journal: a
// restore brings them back, so that a code's redemptions are not counted afresh and an
// account that has one cannot take another.
func TestPromoCodeBoundSurvivesRestore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	st := e.b.NewStore(e.St)
	for _, a := range []string{"c1", "c2", "c3"} {
		e.account(t, a, 1000)
	}
	exp := time.Now().Add(24 * time.Hour).Truncate(time.Millisecond).UTC()
	p := metering.PromoCode{Code: "TWO", Credits: 100, MaxRedemptions: 2, ExpiresAt: exp, GrantExpiresIn: time.Hour}
	if err := st.CreatePromoCode(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.CreatePromoCode(ctx, p); !errors.Is(err, metering.ErrPromoExists) {
		t.Fatalf("CreatePromoCode again = %v, want ErrPromoExists", err)
	}
	if _, err := st.Redeem(ctx, "c1", "TWO"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.Srv.Flush(t)
	if _, err := e.b.Restore(ctx, e.St, io.Discard); err != nil {
		t.Fatal(err)
	}
	got, err := st.PromoCode(ctx, "TWO")
	p.Redeemed = 1
	if err != nil || fmt.Sprint(got) != fmt.Sprint(p) {
		t.Fatalf("PromoCode after restore = %+v, %v; want %+v", got, err, p)
	}
	if _, err := st.Redeem(ctx, "c1", "TWO"); !errors.Is(err, metering.ErrPromoRedeemed) {
		t.Fatalf("Redeem by c1 again = %v, want ErrPromoRedeemed", err)
	}
	if _, err := st.Redeem(ctx, "c2", "TWO"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Redeem(ctx, "c3", "TWO"); !errors.Is(err, metering.ErrPromoExhausted) {
		t.Fatalf("Redeem past the bound = %v, want ErrPromoExhausted", err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.reconcileClean(t, 5*time.Second)
}

// What a won dispute gave back to a grant comes back with a restore (the
// replay reads its promo_grants field).
func TestPromoDisputeWonRestored(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "dw", 10_000)
	if err := e.St.CreatePromoCode(ctx, metering.PromoCode{Code: "DW", Credits: 100_000, GrantExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Redeem(ctx, "dw", "DW"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Credit(ctx, metering.Credit{Account: "dw", Amount: -8000, Reference: "adj", Type: metering.Adjustment}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []metering.Reversal{
		{Account: "dw", PaymentID: "pi_fund-dw", Kind: metering.Dispute, Reference: "dispute:dp", Linked: "dispute_won:dp", Minor: 100},
		{Account: "dw", PaymentID: "pi_fund-dw", Kind: metering.DisputeWon, Reference: "dispute_won:dp", Linked: "dispute:dp"},
	} {
		if res, err := e.St.ReversePurchase(ctx, r); err != nil || !res.Applied {
			t.Fatalf("ReversePurchase(%s) = %+v, %v", r.Kind, res, err)
		}
	}
	want := e.Acct(t, "dw")
	wantGrants, err := e.St.PromoGrants(ctx, "dw")
	if err != nil || want.Promotional != 100_000 || want.Paid() != 2000 {
		t.Fatalf("before restore: %+v %v", want, err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.Srv.Flush(t)
	if _, err := e.b.Restore(ctx, e.St, io.Discard); err != nil {
		t.Fatal(err)
	}
	got := e.Acct(t, "dw")
	grants, err := e.St.PromoGrants(ctx, "dw")
	if err != nil || got.Balance != want.Balance || got.Promotional != want.Promotional || fmt.Sprint(grants) != fmt.Sprint(wantGrants) {
		t.Fatalf("after restore %+v grants %v (%v), want %+v grants %v", got, grants, err, want, wantGrants)
	}
	e.reconcileClean(t, 5*time.Second)
}
