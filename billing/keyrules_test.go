package billing

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// TestKeyRulesAPI: POST /v1/keys takes the rules, GET shows them under the
// same names with period_used, PATCH changes them (null removes one), and
// the store holds what the proxy enforces.
func TestKeyRulesAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.token("acme", nil)
	ctx := context.Background()
	model := e.catalog.Models()[0]
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	r := e.do("POST", "/v1/keys", tok, map[string]any{"name": "ci",
		"budget": map[string]any{"credits": "2.5", "period": "day"}, "models": []string{model.ID},
		"expires_at": exp, "rpm": 60, "tpm": 10000, "max_parallel": 4})
	e.expect(r, http.StatusCreated, "")
	id, secret := r.str("id"), r.str("key")
	if r.num("budget.credits") != "2.500" || r.str("budget.period") != "day" || r.str("models.0") != model.ID ||
		r.str("expires_at") != exp || r.num("rpm") != "60" || r.num("tpm") != "10000" || r.num("max_parallel") != "4" ||
		r.num("period_used") != "0.000" {
		t.Fatalf("created key: %s", r.raw)
	}
	ident, err := e.store.Authenticate(ctx, []byte(secret))
	if err != nil || !ident.Limited {
		t.Fatalf("a key with rules must be held call by call: %+v %v", ident, err)
	}

	// The budget is enforced by the store's reserve, and GET shows its use.
	if _, err := e.store.Credit(ctx, metering.Credit{Account: "acme", Amount: 100_000, Reference: "seed"}); err != nil {
		t.Fatal(err)
	}
	hr := metering.HoldRequest{Account: "acme", KeyID: id, KeyLimited: true, HoldID: "h1", Model: model.ID, Fixed: 1000}
	if _, err := e.store.Reserve(ctx, hr); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Settle(ctx, metering.Settlement{Account: "acme", KeyID: id, HoldID: "h1", Cost: 1000}); err != nil {
		t.Fatal(err)
	}
	hr.HoldID, hr.Fixed = "h2", 1501
	if _, err := e.store.Reserve(ctx, hr); err == nil {
		t.Fatal("a hold past the budget was placed")
	}
	r = e.do("GET", "/v1/keys", tok, nil)
	e.expect(r, http.StatusOK, "")
	if r.num("data.0.period_used") != "1.000" || r.num("data.0.rpm") != "60" {
		t.Fatalf("listed: %s", r.raw)
	}

	// PATCH: null removes a rule, absent fields stay.
	r = e.do("PATCH", "/v1/keys/"+id, tok, map[string]any{"rpm": nil, "models": nil, "name": "renamed"})
	e.expect(r, http.StatusOK, "")
	if r.get("rpm") != nil || r.get("models") != nil || r.num("tpm") != "10000" || r.str("name") != "renamed" ||
		r.num("period_used") != "1.000" {
		t.Fatalf("patched: %s", r.raw)
	}
	r = e.do("PATCH", "/v1/keys/"+id, tok, map[string]any{"budget": nil, "expires_at": nil, "tpm": nil, "max_parallel": nil})
	e.expect(r, http.StatusOK, "")
	if r.get("budget") != nil || r.get("expires_at") != nil {
		t.Fatalf("patched: %s", r.raw)
	}
	if ident, err := e.store.Authenticate(ctx, []byte(secret)); err != nil || ident.Limited {
		t.Fatalf("a key without rules goes back to the lease path: %+v %v", ident, err)
	}

	// Another account's key is not found; so is a revoked one.
	other := e.token("other", nil)
	e.expect(e.do("PATCH", "/v1/keys/"+id, other, map[string]any{"rpm": 5}), http.StatusNotFound, "key_not_found")
	e.expect(e.do("DELETE", "/v1/keys/"+id, tok, nil), http.StatusNoContent, "")
	e.expect(e.do("PATCH", "/v1/keys/"+id, tok, map[string]any{"rpm": 5}), http.StatusNotFound, "key_not_found")

	// The admin API takes the same rules.
	e.store.EnsureAccount(ctx, "corp")
	r = e.admin("POST", "/admin/v1/accounts/corp/keys", map[string]any{"name": "k", "rpm": 5})
	e.expect(r, http.StatusCreated, "")
	r = e.admin("PATCH", "/admin/v1/accounts/corp/keys/"+r.str("id"), map[string]any{"budget": map[string]any{"credits": 1, "period": "month"}})
	e.expect(r, http.StatusOK, "")
	if r.num("rpm") != "5" || r.str("budget.period") != "month" {
		t.Fatalf("admin patched: %s", r.raw)
	}
}

func TestKeyRulesInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.token("acme", nil)
	for body, param := range map[string]string{
		`{"budget":{"credits":0,"period":"day"}}`:       "budget.credits",
		`{"budget":{"credits":1,"period":"year"}}`:      "budget.period",
		`{"budget":{"credits":1}}`:                      "budget.period",
		`{"budget":5}`:                                  "budget",
		`{"budget":{"credits":1,"period":"day","x":1}}`: "budget",
		`{"models":[]}`:                                 "models",
		`{"models":["no-such-model"]}`:                  "models",
		`{"models":"gpt"}`:                              "models",
		`{"expires_at":"tomorrow"}`:                     "expires_at",
		`{"expires_at":12}`:                             "expires_at",
		`{"rpm":0}`:                                     "rpm",
		`{"rpm":1.5}`:                                   "rpm",
		`{"tpm":-3}`:                                    "tpm",
		`{"max_parallel":"2"}`:                          "max_parallel",
		`{"rpm":10000000000}`:                           "rpm",
	} {
		r := e.do("POST", "/v1/keys", tok, body)
		if r.status != http.StatusBadRequest || r.str("error.param") != param {
			t.Errorf("%s: %d %s, want 400 naming %s", body, r.status, r.raw, param)
		}
	}
	r := e.do("POST", "/v1/keys", tok, map[string]any{"name": "ok"})
	e.expect(r, http.StatusCreated, "")
	r = e.do("PATCH", "/v1/keys/"+r.str("id"), tok, `{"rpm":0}`)
	e.expect(r, http.StatusBadRequest, "invalid_rpm")
}
