package billing

import (
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/pricing"
)

// TestWalkthroughBillingHalf is the billing half of issue 3's walkthrough:
// a signed JWT → packs → checkout (URL from stripe-mock) → a signed
// checkout.session.completed → /v1/api-credits shows +2,374,050 → history
// shows the purchase with balance_after. The last step (a metered call
// through the proxy lowers the balance and raises total_consumed) is
// stood in for here by a hold and a settle on the same store, which is what
// the proxy does; the end-to-end test replaces it with a real proxy call.
func TestWalkthroughBillingHalf(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	tok := e.token("walker", nil)

	packs := e.do("GET", "/v1/billing/packs", "", nil)
	e.expect(packs, http.StatusOK, "")
	if packs.str("data.1.key") != "growth" || packs.num("data.1.credits_after_fee") != "2374050.000" {
		t.Fatalf("packs: %s", packs.raw)
	}

	co := e.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "growth"})
	e.expect(co, http.StatusOK, "")
	session := co.str("id")
	if co.str("url") == "" || session == "" {
		t.Fatalf("checkout: %s", co.raw)
	}

	before := e.do("GET", "/v1/api-credits", tok, nil)
	e.expect(before, http.StatusOK, "")
	if before.num("balance") != "0.000" {
		t.Fatalf("before paying: %s", before.raw)
	}
	event := teststripe.Event("evt_walk", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: session, Account: "walker", Pack: "growth", AmountTotal: growthPriceMinor, PaymentIntent: "pi_walk",
	}))
	if status, body := e.deliver(event); status != http.StatusOK {
		t.Fatalf("webhook: %d %s", status, body)
	}

	after := e.do("GET", "/v1/api-credits", tok, nil)
	if after.num("balance") != "2374050.000" || after.num("total_purchased") != "2374050.000" {
		t.Fatalf("after paying: %s", after.raw)
	}
	hist := e.do("GET", "/v1/billing/history", tok, nil)
	if len(hist.list()) != 1 || hist.str("data.0.type") != "purchase" || hist.num("data.0.amount") != "2374050.000" ||
		hist.num("data.0.balance_after") != "2374050.000" || hist.str("data.0.stripe_payment_id") != "pi_walk" {
		t.Fatalf("history: %s", hist.raw)
	}

	// Stand-in for a metered call through the proxy: 1,234 input and 567
	// output tokens of gpt-4o-mini (Core, 1/2 credits per 1K) cost 2.368 credits.
	m, err := e.catalog.Lookup("gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	cost := m.Cost(pricing.Usage{Input: 1234, Output: 567}, time.Now())
	e.spend("walker", "call_1", cost)
	final := e.do("GET", "/v1/api-credits", tok, nil)
	if final.num("balance") != "2374047.632" || final.num("total_consumed") != "2.368" {
		t.Fatalf("after a call: %s", final.raw)
	}
	e.invariant("walker")
}
