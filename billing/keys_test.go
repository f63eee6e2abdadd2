package billing

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
)

func TestSelfServiceKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.token("acme", nil)
	ctx := context.Background()

	r := e.do("POST", "/v1/keys", tok, map[string]any{"name": "ci", "credit_limit": "0.5"})
	e.expect(r, http.StatusCreated, "")
	id, secret := r.str("id"), r.str("key")
	if !strings.HasPrefix(secret, metering.KeyPrefix) || r.num("credit_limit") != "0.500" || r.num("used") != "0.000" {
		t.Fatalf("created key: %s", r.raw)
	}
	ident, err := e.store.Authenticate(ctx, []byte(secret))
	if err != nil || ident.Account != "acme" || ident.KeyID != id {
		t.Fatalf("the key authenticates as %+v, %v", ident, err)
	}

	// The limit is what the proxy's reserve enforces: funded with 100
	// credits, the key may still hold at most 0.5.
	if _, err := e.store.Credit(ctx, metering.Credit{Account: "acme", Amount: 100_000, Reference: "seed"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: id, HoldID: "h1", Fixed: 501})
	var insufficient *metering.InsufficientError
	if !errors.As(err, &insufficient) || !insufficient.KeyLimit || insufficient.Available != 500 {
		t.Fatalf("a 0.501-credit hold on a 0.5-credit key: %v", err)
	}
	if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: id, HoldID: "h2", Fixed: 500}); err != nil {
		t.Fatalf("a hold within the key limit: %v", err)
	}

	r = e.do("POST", "/v1/keys", tok, map[string]any{"name": "unlimited"})
	e.expect(r, http.StatusCreated, "")
	if r.get("credit_limit") != nil {
		t.Fatalf("credit_limit of a key without limit: %s", r.raw)
	}
	r = e.do("GET", "/v1/keys", tok, nil)
	e.expect(r, http.StatusOK, "")
	if len(r.list()) != 2 || strings.Contains(r.raw, secret) || !strings.Contains(r.raw, `"id":"`+id+`"`) {
		t.Fatalf("key list: %s", r.raw)
	}

	e.expect(e.do("DELETE", "/v1/keys/"+id, tok, nil), http.StatusNoContent, "")
	if _, err := e.store.Authenticate(ctx, []byte(secret)); !errors.Is(err, metering.ErrBadKey) {
		t.Fatalf("a revoked key authenticates: %v", err)
	}
	r = e.do("GET", "/v1/keys", tok, nil)
	for _, it := range r.list() {
		k := it.(map[string]any)
		if (k["id"] == id) != (k["revoked"] == true) {
			t.Fatalf("after revoking %s: %s", id, r.raw)
		}
	}
	e.expect(e.do("DELETE", "/v1/keys/key_ffffffffffffffff", tok, nil), http.StatusNotFound, "key_not_found")
	e.expect(e.do("DELETE", "/v1/keys/a{b}", tok, nil), http.StatusNotFound, "key_not_found")

	for body, code := range map[string]string{
		`{"name":"x","credit_limit":-1}`:                   "invalid_amount",
		`{"name":"x","credit_limit":0}`:                    "invalid_amount",
		`{"name":"x","credit_limit":"1e3"}`:                "invalid_amount",
		`{"name":"x","credit_limit":0.0005}`:               "invalid_amount",
		`{"name":"x","limit":5}`:                           "unknown_field",
		`{"name":` + `"` + strings.Repeat("n", 101) + `"}`: "invalid_name",
		`[]`: "invalid_json",
	} {
		e.expect(e.do("POST", "/v1/keys", tok, body), http.StatusBadRequest, code)
	}
}

func TestSelfServiceKeysAreCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{adjustOpts: func(o *Options) { o.MaxKeysPerAccount = 2 }})
	tok := e.token("acme", nil)
	first := e.do("POST", "/v1/keys", tok, map[string]any{"name": "a"})
	e.expect(first, http.StatusCreated, "")
	e.expect(e.do("POST", "/v1/keys", tok, map[string]any{"name": "b"}), http.StatusCreated, "")
	e.expect(e.do("POST", "/v1/keys", tok, map[string]any{"name": "c"}), http.StatusConflict, "too_many_keys")
	e.expect(e.do("DELETE", "/v1/keys/"+first.str("id"), tok, nil), http.StatusNoContent, "")
	e.expect(e.do("POST", "/v1/keys", tok, map[string]any{"name": "c"}), http.StatusCreated, "")
}

// TestKeyCapsHoldUnderConcurrency: twelve POST /v1/keys at once against a
// cap of 3 create exactly 3 keys; the other nine get the cap's 409, whichever
// cap is the lower one (the plan's api_keys limit or the per-account cap). An
// operator's key (admin API, uncapped) counts against the cap all the same.
func TestKeyCapsHoldUnderConcurrency(t *testing.T) {
	t.Parallel()
	plan := func(keys int64) []config.Plan {
		return []config.Plan{{ID: "trio", Name: "Trio", StripePriceID: "price_trio", MinSeats: 1,
			Limits: config.PlanLimits{APIKeys: keys}}}
	}
	for _, tt := range []struct {
		name     string
		plans    []config.Plan // the account subscribes to the first, when any
		maxKeys  int
		wantCode string
	}{
		{"plan allows 3", plan(3), 100, "plan_limit_reached"},
		{"per-account cap 3, no plan", nil, 3, "too_many_keys"},
		{"per-account cap 3 below a plan of 5", plan(5), 3, "too_many_keys"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{plans: tt.plans, adjustOpts: func(o *Options) { o.MaxKeysPerAccount = tt.maxKeys }})
			ctx := context.Background()
			if _, err := e.store.EnsureAccount(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if len(tt.plans) > 0 {
				now := time.Now()
				if _, err := e.store.SaveSubscription(ctx, "acme", metering.Subscription{ID: "sub_trio", Plan: tt.plans[0].ID,
					Seats: 1, Status: "active", PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(time.Hour)}, now); err != nil {
					t.Fatal(err)
				}
			}
			tok := e.token("acme", nil)
			const callers = 12
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				answers = make([]response, callers)
			)
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					answers[i] = e.do("POST", "/v1/keys", tok, map[string]any{"name": "k" + strconv.Itoa(i)})
				}()
			}
			close(start)
			wg.Wait()
			created, refused := 0, 0
			for _, r := range answers {
				switch {
				case r.status == http.StatusCreated:
					created++
				case r.status == http.StatusConflict && r.str("error.code") == tt.wantCode:
					refused++
				default:
					t.Errorf("unexpected answer %d: %s", r.status, r.raw)
				}
			}
			keys, err := e.store.Keys(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if created != 3 || refused != callers-3 || len(keys) != 3 {
				t.Fatalf("%d created, %d refused with %s, %d keys stored; want 3, %d, 3", created, refused, tt.wantCode, len(keys), callers-3)
			}

			// Revoking one makes room for one; an operator's key fills it.
			e.expect(e.do("DELETE", "/v1/keys/"+keys[0].ID, tok, nil), http.StatusNoContent, "")
			e.expect(e.admin("POST", "/admin/v1/accounts/acme/keys", map[string]any{"name": "ops"}), http.StatusCreated, "")
			e.expect(e.do("POST", "/v1/keys", tok, map[string]any{"name": "late"}), http.StatusConflict, tt.wantCode)
			// The admin API is not capped: an operator may go past the cap.
			e.expect(e.admin("POST", "/admin/v1/accounts/acme/keys", map[string]any{"name": "ops2"}), http.StatusCreated, "")
		})
	}
}
