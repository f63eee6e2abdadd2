package billing

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/webhooks"
)

// The low-balance alert set through the API reaches a real receiver as a
// signed balance.low delivery, listed for the operator.
func TestLowBalanceAlertDelivered(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := newOASClient(t, e)
	const secret = "hook-secret-0123456789"
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhooks.Verify(r.Header.Get(webhooks.SignatureHeader), body, secret, time.Minute); err != nil {
			t.Errorf("bad signature: %v", err)
		}
		got.Add(1)
	}))
	defer rcv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_ = webhooks.New(webhooks.Options{Queue: e.store, Poll: 10 * time.Millisecond,
			Endpoints: []config.Webhook{{URL: rcv.URL, Secret: secret, Events: []string{"balance.low"}}}}).Run(ctx)
		close(done)
	}()
	defer func() { cancel(); <-done }()

	tok := e.token("hooked", nil)
	r := c.do("PUT", "/api/billing/credits/alerts", tok, map[string]any{"lowBalance": 5})
	if r.status != 200 || r.num("lowBalance") != "5.000" {
		t.Fatalf("PUT alerts: %d %s", r.status, r.raw)
	}
	if p := c.do("GET", "/api/billing/credits", tok, nil); p.num("alerts.lowBalance") != "5.000" {
		t.Fatalf("credits page: %s", p.raw)
	}
	e.grant("hooked", 10, "seed")
	e.spend("hooked", "call-1", 6000)
	e.spend("hooked", "call-2", 1000) // still under: no second event
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if got.Load() != 1 {
		t.Fatalf("%d deliveries, want 1", got.Load())
	}
	var d response
	for time.Now().Before(deadline) {
		d = c.do("GET", "/admin/v1/webhooks/deliveries", testAdminToken, nil)
		if len(d.list()) == 1 && d.str("data.0.state") == "delivered" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(d.list()) != 1 || d.str("data.0.state") != "delivered" || d.str("data.0.type") != "balance.low" ||
		d.str("data.0.account") != "hooked" || d.num("data.0.attempts") != "1" {
		t.Fatalf("deliveries: %s", d.raw)
	}
	r = c.do("PUT", "/api/billing/credits/alerts", tok, map[string]any{"lowBalance": nil})
	if r.status != 200 || r.get("lowBalance") != nil {
		t.Fatalf("PUT alerts null: %d %s", r.status, r.raw)
	}
}
