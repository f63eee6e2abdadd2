package main

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/pricing"
)

// TestWalkthrough is issue 3's walkthrough through the real processes: a
// signed JWT → packs → checkout (URL from stripe-mock) → a signed
// checkout.session.completed → /v1/api-credits shows +2,374,050 → history
// shows the purchase with balance_after → a self-service key → a metered call
// through the proxy lowers the balance and raises total_consumed.
func TestWalkthrough(t *testing.T) {
	rs := testredis.Start(t)
	sm := teststripe.Start(t)
	_, mockURL, err := mockllm.Start(mockllm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const whsec = "whsec_walkthrough_secret"
	jwtSecret := strings.Repeat("s", 40)
	t.Setenv("REDIS_URL", rs.URL())
	t.Setenv("OPENAI_BASE_URL", mockURL)
	t.Setenv("OPENAI_API_KEY", "sk-test")
	t.Setenv("STRIPE_SECRET_KEY", teststripe.SecretKey)
	t.Setenv("STRIPE_WEBHOOK_SECRET", whsec)
	t.Setenv("STRIPE_API_BASE", sm.URL)
	t.Setenv("TOLLGATE_JWT_SECRET", jwtSecret)
	t.Setenv("TOLLGATE_PUBLIC_URL", "https://app.example.com")
	paddr, baddr := freeAddr(t), freeAddr(t)
	start(t, "proxy", "--config", "../../configs/tollgate.yaml", "--addr", paddr)
	start(t, "billing", "--config", "../../configs/tollgate.yaml", "--addr", baddr)
	P, B := "http://"+paddr, "http://"+baddr
	waitHTTP(t, P+"/healthz")
	waitHTTP(t, B+"/healthz")

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "walker", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}

	st, _, packs := call(t, "GET", B+"/v1/billing/packs", "", "")
	growth := packs["data"].([]any)[1].(map[string]any)
	if st != 200 || growth["key"] != "growth" || growth["credits_after_fee"] != 2374050.0 || growth["note"] != "5% fee applied" {
		t.Fatalf("packs: %d %v", st, packs)
	}
	st, _, co := call(t, "POST", B+"/v1/billing/checkout", tok, `{"pack":"growth"}`)
	url, _ := co["url"].(string)
	session, _ := co["id"].(string)
	if st != 200 || url == "" || session == "" {
		t.Fatalf("checkout: %d %v", st, co)
	}
	ev := teststripe.Event("evt_walkthrough", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: session, Account: "walker", Pack: "growth", AmountTotal: 2499, PaymentIntent: "pi_walkthrough",
	}))
	if status, body, err := teststripe.Deliver(B+"/v1/billing/webhook", whsec, ev); err != nil || status != 200 {
		t.Fatalf("webhook: %d %s %v", status, body, err)
	}
	_, _, cr := call(t, "GET", B+"/v1/api-credits", tok, "")
	if cr["balance"] != 2374050.0 || cr["total_purchased"] != 2374050.0 {
		t.Fatalf("credits after purchase: %v", cr)
	}
	_, _, hist := call(t, "GET", B+"/v1/billing/history", tok, "")
	h0 := hist["data"].([]any)[0].(map[string]any)
	if h0["amount"] != 2374050.0 || h0["balance_after"] != 2374050.0 || h0["stripe_payment_id"] != "pi_walkthrough" {
		t.Fatalf("history: %v", hist)
	}

	st, _, k := call(t, "POST", B+"/v1/keys", tok, `{"name":"laptop"}`)
	key, _ := k["key"].(string)
	if st != 201 || !strings.HasPrefix(key, "tg-") {
		t.Fatalf("self-service key: %d %v", st, k)
	}
	st, hdr, resp := call(t, "POST", P+"/v1/chat/completions", key, `{"model":"gpt-4.1","messages":[{"role":"user","content":"hello from the walkthrough"}]}`)
	if st != 200 {
		t.Fatalf("metered call: %d %v", st, resp)
	}
	u := resp["usage"].(map[string]any)
	cost := int64(u["prompt_tokens"].(float64))*8 + int64(u["completion_tokens"].(float64))*16 // ultra
	if hdr.Get("X-Credits-Charged") != pricing.FormatCredits(cost) {
		t.Fatalf("charged %s, want %s", hdr.Get("X-Credits-Charged"), pricing.FormatCredits(cost))
	}
	// The proxy applies the charge just after answering: within moments.
	after := settled(t, func() (map[string]any, bool) {
		_, _, a := call(t, "GET", B+"/v1/api-credits", tok, "")
		return a, a["total_consumed"] == float64(cost)/1000 && a["balance"] == 2374050.0-float64(cost)/1000
	})
	// Replaying the webhook changes nothing.
	if status, _, _ := teststripe.Deliver(B+"/v1/billing/webhook", whsec, ev); status != 200 {
		t.Fatalf("replay: %d", status)
	}
	if _, _, again := call(t, "GET", B+"/v1/api-credits", tok, ""); again["balance"] != after["balance"] {
		t.Fatalf("replayed webhook credited again: %v → %v", after, again)
	}
}

// settled polls read until it reports done (the proxy applies a call's
// charge in Redis just after answering it), failing after 2 s.
func settled(t *testing.T, read func() (map[string]any, bool)) map[string]any {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		m, done := read()
		if done {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after 2 s: %v", m)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
