package billing

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

var testPlans = []config.Plan{
	{ID: "pro", Name: "Pro", StripePriceID: "price_pro", MinSeats: 1, MaxSeats: 10,
		Limits: config.PlanLimits{Requests: 2, Credits: 1000, APIKeys: 1, RequestsPerMinute: 100, PerSeat: true}},
	{ID: "burst", Name: "Burst", StripePriceID: "price_burst", MinSeats: 1,
		Limits: config.PlanLimits{RequestsPerMinute: 1}},
}

// TestSubscriptionWalkthrough is issue 4's first done-when, against
// stripe-mock, signed webhooks and a real proxy: subscribe → usage shows the
// plan's limits → the proxy refuses the call past a limit with 429 → portal
// URL → cancel shows cancelAt at the period's end → a
// customer.subscription.deleted ends the plan.
func TestSubscriptionWalkthrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true, plans: testPlans})
	gw := e.gateway(gatewayOptions{plans: testPlans})
	tok := e.token("team", nil)

	// Subscribe: Checkout in subscription mode, the plan's price × seats.
	co := e.do("POST", "/api/billing/checkout", tok, map[string]any{"planId": "pro", "seats": 2})
	e.expect(co, http.StatusOK, "")
	if !strings.HasPrefix(co.str("url"), "https://") || len(co.json) != 1 {
		t.Fatalf("checkout answer: %s", co.raw)
	}
	sent := e.stripe.requests("/v1/checkout/sessions")
	if len(sent) != 1 {
		t.Fatalf("%d checkout sessions created", len(sent))
	}
	f := sent[0].form
	if f.Get("mode") != "subscription" || f.Get("line_items[0][price]") != "price_pro" || f.Get("line_items[0][quantity]") != "2" ||
		f.Get("client_reference_id") != "team" || f.Get("subscription_data[metadata][account]") != "team" ||
		f.Get("success_url") != "http://app.example?billing=success" || f.Get("customer") == "" {
		t.Fatalf("checkout session params: %v", f)
	}
	customer := f.Get("customer")

	// Stripe tells us about the subscription.
	start := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Second)
	end := start.AddDate(0, 1, 0)
	e.deliverOK(subscriptionEvent("evt_sub_1", "customer.subscription.created", "sub_team", customer, "team", "price_pro",
		2, "active", start, end, false))

	u := e.do("GET", "/api/billing/usage", tok, nil)
	e.expect(u, http.StatusOK, "")
	if u.str("plan") != "pro" || u.str("subscription.planName") != "Pro" || u.str("subscription.status") != "active" ||
		u.num("subscription.seats") != "2" || u.get("subscription.cancelAt") != nil ||
		u.str("period.start") != start.Format(time.RFC3339) || u.str("period.end") != end.Format(time.RFC3339) {
		t.Fatalf("usage after subscribing: %s", u.raw)
	}
	// Per-seat limits × 2 seats.
	for path, want := range map[string]string{
		"usage.requests.used": "0", "usage.requests.limit": "4", "usage.credits.limit": "2000.000",
		"usage.apiKeys.limit": "2", "usage.requestsPerMinute.limit": "200", "usage.credits.used": "0.000",
	} {
		if got := u.num(path); got != want {
			t.Fatalf("%s = %q, want %q: %s", path, got, want, u.raw)
		}
	}
	if u.get("usage.inputTokens.limit") != nil || u.get("usage.outputTokens.limit") != nil {
		t.Fatalf("unlimited tokens must be null: %s", u.raw)
	}

	// The proxy enforces the plan: four calls, then 429.
	e.grant("team", 1000, "seed")
	key := e.apiKey("team")
	for i := 0; i < 4; i++ {
		if status, _, body := gw.chat(key, "gpt-4o-mini", 5); status != http.StatusOK {
			t.Fatalf("call %d: %d %s", i+1, status, body)
		}
	}
	status, hdr, body := gw.chat(key, "gpt-4o-mini", 5)
	if status != http.StatusTooManyRequests || !strings.Contains(body, `"code":"rate_limit_exceeded"`) ||
		!strings.Contains(body, "requests") || !strings.Contains(body, "Pro plan") {
		t.Fatalf("past the limit: %d %s", status, body)
	}
	ra, err := strconv.Atoi(hdr.Get("Retry-After"))
	if err != nil || ra < int(time.Until(end)/time.Second)-60 || ra > int(time.Until(end)/time.Second)+1 {
		t.Fatalf("Retry-After %q, want the period's end (%v away)", hdr.Get("Retry-After"), time.Until(end))
	}
	u = e.do("GET", "/api/billing/usage", tok, nil)
	if u.num("usage.requests.used") != "4" || u.num("usage.apiKeys.used") != "1" || u.num("usage.inputTokens.used") == "0" ||
		u.num("usage.outputTokens.used") != "20" || u.num("usage.credits.used") == "0.000" {
		t.Fatalf("usage after the calls: %s", u.raw)
	}
	// The same counters as the ledger: 4 usage entries, their sum is the credits used.
	a := e.account("team")
	if got := u.num("usage.credits.used"); got != creditsText(a.Consumed) {
		t.Fatalf("credits used %s, consumed %d mc", got, a.Consumed)
	}

	// Portal.
	p := e.do("POST", "/api/billing/portal", tok, nil)
	e.expect(p, http.StatusOK, "")
	if p.str("url") == "" {
		t.Fatalf("portal: %s", p.raw)
	}
	if ps := e.stripe.requests("/v1/billing_portal/sessions"); len(ps) != 1 || ps[0].form.Get("customer") != customer ||
		ps[0].form.Get("return_url") != "http://app.example" {
		t.Fatalf("portal session params: %+v", ps)
	}

	// Cancel at period end: the plan stays until then.
	c := e.do("POST", "/api/billing/cancel", tok, nil)
	e.expect(c, http.StatusOK, "")
	if c.str("status") != "cancelled" || c.str("cancelAt") != end.Format(time.RFC3339) {
		t.Fatalf("cancel: %s", c.raw)
	}
	if us := e.stripe.requests("/v1/subscriptions/sub_team"); len(us) != 1 || us[0].form.Get("cancel_at_period_end") != "true" {
		t.Fatalf("subscription update: %+v", us)
	}
	e.deliverOK(subscriptionEvent("evt_sub_2", "customer.subscription.updated", "sub_team", customer, "team", "price_pro",
		2, "active", start, end, true))
	u = e.do("GET", "/api/billing/usage", tok, nil)
	if u.str("plan") != "pro" || u.str("subscription.cancelAt") != end.Format(time.RFC3339) || u.num("usage.requests.limit") != "4" {
		t.Fatalf("usage after cancelling: %s", u.raw)
	}

	// The period ends: Stripe deletes the subscription; the plan is gone.
	e.deliverOK(subscriptionEvent("evt_sub_3", "customer.subscription.deleted", "sub_team", customer, "team", "price_pro",
		2, "canceled", start, end, true))
	u = e.do("GET", "/api/billing/usage", tok, nil)
	if u.get("plan") != nil || u.get("subscription") != nil || u.get("usage.requests.limit") != nil {
		t.Fatalf("usage after the end: %s", u.raw)
	}
	if status, _, body := gw.chat(key, "gpt-4o-mini", 5); status != http.StatusOK {
		t.Fatalf("without a plan the call is admitted: %d %s", status, body)
	}
	e.expect(e.do("POST", "/api/billing/cancel", tok, nil), http.StatusNotFound, "no_subscription")
	e.invariant("team")
}

func creditsText(mc int64) string {
	b, _ := Credits(mc).MarshalJSON()
	return string(b)
}

func TestRequestsPerMinuteThroughTheProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true, plans: testPlans})
	gw := e.gateway(gatewayOptions{plans: testPlans})
	key := e.apiKey("burst")
	e.grant("burst", 100, "seed")
	now := time.Now()
	e.deliverOK(subscriptionEvent("evt_b", "customer.subscription.created", "sub_burst", "cus_burst", "burst", "price_burst",
		1, "active", now.Add(-time.Hour), now.Add(time.Hour), false))
	var refused []string
	for i := 0; i < 3; i++ { // 1 per minute: of three calls at least one shares a minute with another
		if status, hdr, body := gw.chat(key, "gpt-4o-mini", 3); status == http.StatusTooManyRequests {
			ra, _ := strconv.Atoi(hdr.Get("Retry-After"))
			if ra < 1 || ra > 60 || !strings.Contains(body, "requests_per_minute") {
				t.Fatalf("429: Retry-After %q, %s", hdr.Get("Retry-After"), body)
			}
			refused = append(refused, body)
		} else if status != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, status, body)
		}
	}
	if len(refused) == 0 {
		t.Fatal("three calls in a row under a 1/minute plan were all admitted")
	}
}

func TestSubscriptionCheckoutValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true, plans: testPlans, adjustOpts: func(o *Options) {
		o.Config.AllowedOrigins = []string{"http://app.example", "https://shop.example:8443", "*"}
	}})
	tok := e.token("v", nil)
	for _, c := range []struct {
		name, code string
		body       map[string]any
	}{
		{"unknown plan", "unknown_plan", map[string]any{"planId": "gold"}},
		{"too many seats", "invalid_seats", map[string]any{"planId": "pro", "seats": 11}},
		{"no seats", "invalid_seats", map[string]any{"planId": "pro", "seats": 0}},
		{"fractional seats", "invalid_seats", map[string]any{"planId": "pro", "seats": 1.5}},
		{"open redirect", "invalid_redirect_url", map[string]any{"planId": "pro", "successUrl": "https://evil.example/x"}},
		{"look-alike host", "invalid_redirect_url", map[string]any{"planId": "pro", "successUrl": "http://app.example.evil.example/"}},
		{"user info", "invalid_redirect_url", map[string]any{"planId": "pro", "cancelUrl": "http://app.example@evil.example/"}},
		{"wrong port", "invalid_redirect_url", map[string]any{"planId": "pro", "cancelUrl": "https://shop.example/x"}},
		{"relative", "invalid_redirect_url", map[string]any{"planId": "pro", "cancelUrl": "/billing"}},
		{"scheme", "invalid_redirect_url", map[string]any{"planId": "pro", "cancelUrl": "javascript:alert(1)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.expect(e.do("POST", "/api/billing/checkout", tok, c.body), http.StatusBadRequest, c.code)
		})
	}
	if n := len(e.stripe.requests("/v1/checkout/sessions")); n != 0 {
		t.Fatalf("%d sessions created for refused requests", n)
	}
	ok := e.do("POST", "/api/billing/checkout", tok, map[string]any{"planId": "pro",
		"successUrl": "https://shop.example:8443/done?x=1", "cancelUrl": "http://APP.example/back"})
	e.expect(ok, http.StatusOK, "")
	f := e.stripe.requests("/v1/checkout/sessions")[0].form
	if f.Get("success_url") != "https://shop.example:8443/done?x=1" || f.Get("cancel_url") != "http://APP.example/back" ||
		f.Get("line_items[0][quantity]") != "1" {
		t.Fatalf("session params: %v", f)
	}
	e.expect(e.do("POST", "/api/billing/portal", tok, map[string]any{"returnUrl": "https://evil.example"}),
		http.StatusBadRequest, "invalid_redirect_url")

	// A second subscription while one is live: 409, use the portal.
	e.deliverOK(subscriptionEvent("evt_v", "customer.subscription.created", "sub_v", "cus_v", "v", "price_pro",
		1, "active", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), false))
	e.expect(e.do("POST", "/api/billing/checkout", tok, map[string]any{"planId": "burst"}), http.StatusConflict, "already_subscribed")
}

func TestPlanLimitsAPIKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true, plans: testPlans})
	e.deliverOK(subscriptionEvent("evt_k", "customer.subscription.created", "sub_k", "cus_k", "k", "price_pro",
		1, "active", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), false))
	tok := e.token("k", nil)
	e.expect(e.do("POST", "/v1/keys", tok, map[string]any{"name": "one"}), http.StatusCreated, "")
	r := e.do("POST", "/v1/keys", tok, map[string]any{"name": "two"})
	e.expect(r, http.StatusConflict, "plan_limit_reached")
	if !strings.Contains(r.str("error.message"), "api_keys") {
		t.Fatalf("the refusal does not name the limit: %s", r.raw)
	}
}

// TestSubscriptionWebhooksKeepState: out-of-order events, invoices and
// events that are not ours.
func TestSubscriptionWebhooksKeepState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true, plans: testPlans})
	tok := e.token("w", nil)
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	end := start.AddDate(0, 1, 0)
	created := subscriptionEvent("evt_w1", "customer.subscription.created", "sub_w", "cus_w", "w", "price_pro",
		1, "incomplete", start, end, false)
	updated := subscriptionEvent("evt_w2", "customer.subscription.updated", "sub_w", "cus_w", "w", "price_pro",
		3, "active", start, end, false)
	// Stripe delivers the update first; the older "created" must not undo it.
	e.deliverOK(withCreated(updated, time.Now().Unix()))
	e.deliverOK(withCreated(created, time.Now().Unix()-5))
	u := e.do("GET", "/api/billing/usage", tok, nil)
	if u.str("subscription.status") != "active" || u.num("subscription.seats") != "3" {
		t.Fatalf("after reordered events: %s", u.raw)
	}

	e.deliverOK(invoiceEvent("evt_i1", "invoice.payment_failed", "in_1", "sub_w", "cus_w", start, end))
	if u = e.do("GET", "/api/billing/usage", tok, nil); u.str("subscription.status") != "past_due" || u.str("plan") != "pro" {
		t.Fatalf("after a failed invoice: %s", u.raw)
	}
	next, nextEnd := end, end.AddDate(0, 1, 0)
	e.deliverOK(invoiceEvent("evt_i2", "invoice.paid", "in_2", "sub_w", "cus_w", next, nextEnd))
	u = e.do("GET", "/api/billing/usage", tok, nil)
	if u.str("subscription.status") != "active" || u.str("period.start") != next.Format(time.RFC3339) || u.str("period.end") != nextEnd.Format(time.RFC3339) {
		t.Fatalf("after a paid renewal: %s", u.raw)
	}

	// Not ours: another customer, another price.
	body := e.deliverOK(subscriptionEvent("evt_x", "customer.subscription.created", "sub_x", "cus_unknown", "", "price_pro",
		1, "active", start, end, false))
	if !strings.Contains(body, `"ignored":true`) {
		t.Fatalf("a stranger's subscription: %s", body)
	}
	body = e.deliverOK(subscriptionEvent("evt_y", "customer.subscription.updated", "sub_w", "cus_w", "w", "price_other",
		1, "active", start, end, false))
	if !strings.Contains(body, `"ignored":true`) {
		t.Fatalf("an unknown price: %s", body)
	}
	// A replayed deletion of another subscription does not end this one.
	e.deliverOK(subscriptionEvent("evt_z", "customer.subscription.deleted", "sub_old", "cus_w", "w", "price_pro",
		1, "canceled", start, end, false))
	if u = e.do("GET", "/api/billing/usage", tok, nil); u.str("plan") != "pro" {
		t.Fatalf("another subscription's deletion ended the plan: %s", u.raw)
	}
	sub, err := e.store.Subscription(context.Background(), "w")
	if err != nil || sub.Seats != 3 || sub.Customer != "cus_w" {
		t.Fatalf("stored: %+v %v", sub, err)
	}
}

// withCreated sets an event's created time.
func withCreated(event []byte, created int64) []byte {
	s := string(event)
	i := strings.Index(s, `"created":`)
	j := i + len(`"created":`)
	k := j
	for k < len(s) && s[k] >= '0' && s[k] <= '9' {
		k++
	}
	return []byte(s[:j] + strconv.FormatInt(created, 10) + s[k:])
}
