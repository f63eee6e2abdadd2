package teststripe

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/webhook"
)

func TestStartServesStripeAPI(t *testing.T) {
	s := Start(t)
	cfg := &stripe.BackendConfig{URL: stripe.String(s.URL), LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}}
	sc := client.New(SecretKey, &stripe.Backends{API: stripe.GetBackendWithConfig(stripe.APIBackend, cfg)})
	c, err := sc.Customers.New(&stripe.CustomerParams{Description: stripe.String("teststripe")})
	if err != nil {
		t.Fatalf("creating a customer on stripe-mock: %v", err)
	}
	if c.ID == "" {
		t.Fatal("stripe-mock returned a customer without id")
	}
}

func TestTwoServersRunSideBySide(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.URL == b.URL {
		t.Fatalf("both servers on %s", a.URL)
	}
}

func TestSignedEventVerifies(t *testing.T) {
	const secret = "whsec_test"
	payload := Event("evt_1", "checkout.session.completed", CheckoutSession(Session{
		ID: "cs_1", Account: "acme", AmountTotal: 2499, PaymentIntent: "pi_1",
	}))
	opts := webhook.ConstructEventOptions{IgnoreAPIVersionMismatch: true}
	ev, err := webhook.ConstructEventWithOptions(payload, Sign(payload, secret, time.Now()), secret, opts)
	if err != nil {
		t.Fatalf("verifying a signed event: %v", err)
	}
	var sess stripe.CheckoutSession
	if err := json.Unmarshal(ev.Data.Raw, &sess); err != nil {
		t.Fatal(err)
	}
	if sess.ID != "cs_1" || sess.ClientReferenceID != "acme" || sess.AmountTotal != 2499 ||
		sess.PaymentIntent == nil || sess.PaymentIntent.ID != "pi_1" || sess.PaymentStatus != "paid" {
		t.Fatalf("session decoded as %+v", sess)
	}
	// Strict by default: the built events carry a newer API version.
	if _, err := webhook.ConstructEvent(payload, Sign(payload, secret, time.Now()), secret); err == nil {
		t.Fatal("ConstructEvent accepted a newer API version: the receiver's IgnoreAPIVersionMismatch is not being exercised")
	}
	if _, err := webhook.ConstructEventWithOptions(payload, Sign(payload, "whsec_other", time.Now()), secret, opts); err == nil {
		t.Fatal("an event signed with another secret verified")
	}
	if _, err := webhook.ConstructEventWithOptions(payload, Sign(payload, secret, time.Now().Add(-10*time.Minute)), secret, opts); err == nil {
		t.Fatal("a 10-minute-old signature verified")
	}
}
