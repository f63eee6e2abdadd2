package billing

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestCheckoutCreatesAStripeSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	tok := e.token("acme", nil)

	r := e.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "growth"})
	e.expect(r, http.StatusOK, "")
	url, session := r.str("url"), r.str("id")
	if !strings.HasPrefix(url, "https://checkout.stripe.com/") || session == "" {
		t.Fatalf("checkout answer: %s", r.raw)
	}

	// What Stripe was asked.
	customers := e.stripe.requests("/v1/customers")
	sessions := e.stripe.requests("/v1/checkout/sessions")
	if len(customers) != 1 || len(sessions) != 1 {
		t.Fatalf("%d customer and %d session creations, want 1 and 1", len(customers), len(sessions))
	}
	if customers[0].idempotencyKey != "customer-acme" || customers[0].form.Get("metadata[account]") != "acme" {
		t.Errorf("customer creation: key %q, form %v", customers[0].idempotencyKey, customers[0].form)
	}
	f := sessions[0].form
	cus, err := e.store.StripeCustomer(context.Background(), "acme")
	if err != nil || cus == "" {
		t.Fatalf("the customer was not remembered: %q %v", cus, err)
	}
	want := map[string]string{
		"mode": "payment", "client_reference_id": "acme", "customer": cus,
		"line_items[0][quantity]":                       "1",
		"line_items[0][price_data][currency]":           "usd",
		"line_items[0][price_data][unit_amount]":        "2499",
		"line_items[0][price_data][product_data][name]": "Growth credit pack",
		"metadata[account]":                             "acme",
		"metadata[pack]":                                "growth",
		"metadata[credits_mc]":                          "2374050000",
		"metadata[price_minor]":                         "2499",
		"metadata[currency]":                            "usd",
		"payment_intent_data[metadata][account]":        "acme",
		"success_url":                                   "http://app.example?billing=success",
		"cancel_url":                                    "http://app.example?billing=cancel",
	}
	for k, v := range want {
		if got := f.Get(k); got != v {
			t.Errorf("session %s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(sessions[0].idempotencyKey, "checkout-acme-") {
		t.Errorf("session idempotency key %q", sessions[0].idempotencyKey)
	}

	// Our record, which the webhook will credit from.
	co, err := e.store.Checkout(context.Background(), "acme", session)
	if err != nil {
		t.Fatal(err)
	}
	if co.Credits != growthCreditsMC || co.PriceMinor != growthPriceMinor || co.Currency != "usd" || co.Pack != "growth" || co.Fulfilled {
		t.Fatalf("recorded checkout %+v", co)
	}

	// A second checkout reuses the customer.
	e.expect(e.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "starter"}), http.StatusOK, "")
	if n := len(e.stripe.requests("/v1/customers")); n != 1 {
		t.Fatalf("a second checkout created another customer (%d creations)", n)
	}
	if got := e.stripe.requests("/v1/checkout/sessions")[1].form.Get("customer"); got != cus {
		t.Fatalf("second session for customer %q, want %q", got, cus)
	}
	// Nothing is credited by a checkout.
	if b := e.account("acme").Balance; b != 0 {
		t.Fatalf("checkout credited %d mc before any payment", b)
	}
}

func TestCheckoutRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	tok := e.token("acme", nil)
	r := e.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "mega"})
	e.expect(r, http.StatusBadRequest, "unknown_pack")
	for _, k := range []string{"starter", "growth", "scale", "business", "enterprise"} {
		if !strings.Contains(r.str("error.message"), k) {
			t.Errorf("unknown-pack message does not list %q: %s", k, r.raw)
		}
	}
	e.expect(e.do("POST", "/v1/billing/checkout", "", map[string]any{"pack": "growth"}), http.StatusUnauthorized, "invalid_token")
	e.expect(e.do("POST", "/v1/billing/checkout", tok, `{"pack":`), http.StatusBadRequest, "invalid_json")
	if n := len(e.stripe.requests("/v1/checkout/sessions")); n != 0 {
		t.Fatalf("refused checkouts reached Stripe %d times", n)
	}
}

func TestCheckoutIdempotencyKeyFromCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	req := func() {
		hreq, _ := http.NewRequest("POST", e.http.URL+"/v1/billing/checkout", strings.NewReader(`{"pack":"growth"}`))
		hreq.Header.Set("Authorization", "Bearer "+e.token("acme", nil))
		hreq.Header.Set("Idempotency-Key", "click-42")
		res, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	req()
	req()
	s := e.stripe.requests("/v1/checkout/sessions")
	if len(s) != 2 || s[0].idempotencyKey != "checkout-acme-growth-click-42" || s[1].idempotencyKey != s[0].idempotencyKey {
		t.Fatalf("idempotency keys %+v", s)
	}
}

func TestWithoutStripe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noWebhook: true})
	tok := e.token("acme", nil)
	e.expect(e.do("GET", "/v1/billing/packs", "", nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v1/api-credits", tok, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v1/billing/history", tok, nil), http.StatusOK, "")
	r := e.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "growth"})
	e.expect(r, http.StatusServiceUnavailable, "payments_not_configured")
	e.expect(e.do("POST", "/v1/billing/webhook", "", `{}`), http.StatusServiceUnavailable, "webhooks_not_configured")
}
