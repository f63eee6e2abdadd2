package billing

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/metering"
)

func TestPromoCodeRoutes(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tt := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"ok", map[string]any{"code": "SPRING", "credits": 50, "max_redemptions": 2, "grant_expires_in": "720h"}, 201, ""},
		{"taken", map[string]any{"code": "SPRING", "credits": 5}, 409, "code_exists"},
		{"bad code", map[string]any{"code": "no spaces", "credits": 5}, 400, "invalid_code"},
		{"zero", map[string]any{"code": "Z", "credits": 0}, 400, "invalid_amount"},
		{"float-ish credits", map[string]any{"code": "F", "credits": "0.0001"}, 400, "invalid_amount"},
		{"bad duration", map[string]any{"code": "D", "credits": 1, "grant_expires_in": "soon"}, 400, "invalid_grant_expires_in"},
		{"bad time", map[string]any{"code": "T", "credits": 1, "expires_at": "tomorrow"}, 400, "invalid_expires_at"},
		{"negative max", map[string]any{"code": "M", "credits": 1, "max_redemptions": -1}, 400, "invalid_max_redemptions"},
		{"expired", map[string]any{"code": "GONE", "credits": 1, "expires_at": "2001-01-01T00:00:00Z"}, 201, ""},
	} {
		t.Run(tt.name, func(t *testing.T) { e.expect(e.admin("POST", "/admin/v1/promo-codes", tt.body), tt.status, tt.code) })
	}
	tok := e.token("alice", nil)
	r := e.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "SPRING"})
	e.expect(r, 200, "")
	if r.num("credits") != "50.000" || r.num("balance") != "50.000" || r.str("expires_at") == "" {
		t.Fatalf("redeem: %s", r.raw)
	}
	e.expect(e.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "SPRING"}), 409, "code_already_redeemed")
	e.expect(e.do("POST", "/v1/billing/redeem", e.token("bob", nil), map[string]any{"code": "SPRING"}), 200, "")
	e.expect(e.do("POST", "/v1/billing/redeem", e.token("carol", nil), map[string]any{"code": "SPRING"}), 409, "code_exhausted")
	e.expect(e.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "NOPE"}), 400, "invalid_code")
	e.expect(e.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "GONE"}), 400, "code_expired")
	e.expect(e.do("POST", "/v1/billing/redeem", tok, map[string]any{}), 400, "missing_code")

	// The split: 50 promotional, spent first.
	e.grant("alice", 20, "paid-ish")
	e.spend("alice", "call-1", 30_000)
	c := e.do("GET", "/v1/api-credits", tok, nil)
	if c.num("balance") != "40.000" || c.num("paid") != "20.000" || c.num("promotional") != "20.000" || c.str("promotional_expires_at") == "" {
		t.Fatalf("api-credits: %s", c.raw)
	}
	p := e.do("GET", "/api/billing/credits", tok, nil)
	if p.num("paid") != "20.000" || p.num("promotional") != "20.000" || p.str("promotionalExpiresAt") == "" {
		t.Fatalf("credits: %s", p.raw)
	}
	testledger.Assert(t, e.store, "alice")
}

// 50 concurrent HTTP redeems of one account: one 200, 49 409.
func TestRedeemConcurrentHTTP(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.expect(e.admin("POST", "/admin/v1/promo-codes", map[string]any{"code": "ONCE", "credits": 7}), 201, "")
	tok := e.token("dave", nil)
	e.do("GET", "/v1/api-credits", tok, nil) // the account exists before the race
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "ONCE"})
			mu.Lock()
			got[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got[http.StatusOK] != 1 || got[http.StatusConflict] != 49 {
		t.Fatalf("statuses %v", got)
	}
	if a := e.account("dave"); a.Balance != 7000 || a.Promotional != 7000 {
		t.Fatalf("dave: %+v", a)
	}
	testledger.Assert(t, e.store, "dave")
}

// A grant past its expiry is taken back when the balance is read, before the
// sweeper gets to it, and the sweeper expires the rest.
func TestPromoExpiresLazilyAndBySweeper(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if err := e.store.CreatePromoCode(ctx, metering.PromoCode{Code: "BRIEF", Credits: 900, GrantExpiresIn: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"lazy", "swept"} {
		if _, err := e.store.EnsureAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Redeem(ctx, a, "BRIEF"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(60 * time.Millisecond)
	c := e.do("GET", "/v1/api-credits", e.token("lazy", nil), nil)
	if c.num("balance") != "0.000" || c.num("promotional") != "0.000" || c.get("promotional_expires_at") != nil {
		t.Fatalf("api-credits after expiry: %s", c.raw)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.srv.RunPromoSweeper(sctx, 10*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.account("swept").Promotional != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not expire the grant")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	for _, a := range []string{"lazy", "swept"} {
		testledger.Assert(t, e.store, a)
		if got := e.account(a); got.Balance != 0 || got.Promoted != 0 {
			t.Errorf("%s: %+v", a, got)
		}
	}
}

// A grant past its expiry that a call in flight holds is kept for it: the
// balance is shown (the lazy expiry does not loop), with its expiry.
func TestPromoKeptForHoldShown(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if err := e.store.CreatePromoCode(ctx, metering.PromoCode{Code: "HELD", Credits: 900, GrantExpiresIn: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.EnsureAccount(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Redeem(ctx, "held", "HELD"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: "held", HoldID: "c1", Fixed: 900}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	done := make(chan response, 1)
	go func() { done <- e.do("GET", "/v1/api-credits", e.token("held", nil), nil) }()
	select {
	case c := <-done:
		if c.num("balance") != "0.900" || c.num("promotional") != "0.900" || c.get("promotional_expires_at") == nil {
			t.Fatalf("api-credits with the grant kept for a call: %s", c.raw)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("api-credits did not answer")
	}
	testledger.Assert(t, e.store, "held")
}
