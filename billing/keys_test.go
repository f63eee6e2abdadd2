package billing

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

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
