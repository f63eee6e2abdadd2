package billing

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

func TestAdminAccountsContract(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	r := e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"})
	e.expect(r, http.StatusCreated, "")
	if r.str("id") != "acme" || r.num("balance") != "0.000" {
		t.Fatalf("created account: %s", r.raw)
	}
	// Amounts are JSON numbers written from integers, with three decimals.
	for _, f := range []string{`"balance":0.000`, `"reserved":0.000`, `"total_purchased":0.000`, `"total_granted":0.000`,
		`"total_adjusted":0.000`, `"total_consumed":0.000`, `"over_hold_calls":0`, `"over_hold":0.000`} {
		if !strings.Contains(r.raw, f) {
			t.Errorf("body lacks %s: %s", f, r.raw)
		}
	}

	e.expect(e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"}), http.StatusConflict, "account_exists")
	for _, bad := range []string{`{"id":""}`, `{"id":"a{b}"}`, `{"id":"has space"}`, `{"id":"` + strings.Repeat("x", 129) + `"}`} {
		e.expect(e.admin("POST", "/admin/v1/accounts", bad), http.StatusBadRequest, "invalid_account_id")
	}
	e.expect(e.admin("POST", "/admin/v1/accounts", `{"id":"x","extra":1}`), http.StatusBadRequest, "unknown_field")
	e.expect(e.admin("POST", "/admin/v1/accounts", `{"id":`), http.StatusBadRequest, "invalid_json")

	r = e.admin("GET", "/admin/v1/accounts/acme", nil)
	e.expect(r, http.StatusOK, "")
	for _, f := range []string{"id", "balance", "reserved", "total_purchased", "total_granted", "total_adjusted", "total_consumed"} {
		if r.get(f) == nil {
			t.Errorf("GET account lacks %q: %s", f, r.raw)
		}
	}
	e.expect(e.admin("GET", "/admin/v1/accounts/nobody", nil), http.StatusNotFound, "account_not_found")
}

func TestAdminKeysContract(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.expect(e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"}), http.StatusCreated, "")

	r := e.admin("POST", "/admin/v1/accounts/acme/keys", map[string]any{"name": "ci"})
	e.expect(r, http.StatusCreated, "")
	id, secret := r.str("id"), r.str("key")
	if !strings.HasPrefix(id, "key_") || !strings.HasPrefix(secret, metering.KeyPrefix) || r.str("name") != "ci" {
		t.Fatalf("created key: %s", r.raw)
	}
	if r.get("credit_limit") != nil {
		t.Fatalf("a key without limit shows credit_limit %v", r.get("credit_limit"))
	}
	ident, err := e.store.Authenticate(context.Background(), []byte(secret))
	if err != nil || ident.Account != "acme" || ident.KeyID != id {
		t.Fatalf("the key does not authenticate as acme/%s: %+v %v", id, ident, err)
	}

	r = e.admin("POST", "/admin/v1/accounts/acme/keys", map[string]any{"name": "capped", "credit_limit": 12.5})
	e.expect(r, http.StatusCreated, "")
	if r.num("credit_limit") != "12.500" {
		t.Fatalf("credit_limit: %s", r.raw)
	}

	r = e.admin("GET", "/admin/v1/accounts/acme/keys", nil)
	e.expect(r, http.StatusOK, "")
	if len(r.list()) != 2 || strings.Contains(r.raw, secret) {
		t.Fatalf("key list (must hold 2 keys and never a secret): %s", r.raw)
	}

	e.expect(e.admin("DELETE", "/admin/v1/accounts/acme/keys/"+id, nil), http.StatusNoContent, "")
	if _, err := e.store.Authenticate(context.Background(), []byte(secret)); !errors.Is(err, metering.ErrBadKey) {
		t.Fatalf("a revoked key still authenticates: %v", err)
	}
	e.expect(e.admin("DELETE", "/admin/v1/accounts/acme/keys/key_0000000000000000", nil), http.StatusNotFound, "key_not_found")
	e.expect(e.admin("POST", "/admin/v1/accounts/nobody/keys", map[string]any{"name": "x"}), http.StatusNotFound, "account_not_found")
	e.expect(e.admin("GET", "/admin/v1/accounts/nobody/keys", nil), http.StatusNotFound, "account_not_found")
}

func TestAdminCreditsContract(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.expect(e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"}), http.StatusCreated, "")

	credit := func(body string) response { return e.admin("POST", "/admin/v1/accounts/acme/credits", body) }
	r := credit(`{"credits":1000,"reference":"grant-1"}`)
	e.expect(r, http.StatusOK, "")
	if r.num("balance") != "1000.000" || r.get("applied") != true {
		t.Fatalf("first grant: %s", r.raw)
	}
	r = credit(`{"credits":1000,"reference":"grant-1"}`)
	e.expect(r, http.StatusOK, "")
	if r.num("balance") != "1000.000" || r.get("applied") != false {
		t.Fatalf("the same reference credited twice: %s", r.raw)
	}
	e.invariant("acme")

	// Exact to 0.001, as a number or a decimal string; negative is an adjustment.
	e.expect(credit(`{"credits":"0.001","reference":"g2"}`), http.StatusOK, "")
	e.expect(credit(`{"credits":0.123,"reference":"g3"}`), http.StatusOK, "")
	r = credit(`{"credits":-500.5,"reference":"adj-1","description":"goodwill reversal"}`)
	e.expect(r, http.StatusOK, "")
	if r.num("balance") != "499.624" {
		t.Fatalf("balance after 1000 + 0.001 + 0.123 − 500.5: %s", r.raw)
	}
	// 1.005 and 4.35 credits are 1004 and 4349 mc through a float64 (×1000, truncated).
	before := e.account("acme").Balance
	e.expect(credit(`{"credits":1.005,"reference":"f1"}`), http.StatusOK, "")
	e.expect(credit(`{"credits":"4.35","reference":"f2"}`), http.StatusOK, "")
	if got := e.account("acme").Balance - before; got != 1005+4350 {
		t.Fatalf("credits went through a float: +%d mc, want 5355", got)
	}
	e.invariant("acme")

	for body, code := range map[string]string{
		`{"credits":0.0001,"reference":"x"}`:   "invalid_amount",
		`{"credits":"1e3","reference":"x"}`:    "invalid_amount",
		`{"credits":"abc","reference":"x"}`:    "invalid_json",
		`{"credits":0,"reference":"x"}`:        "invalid_amount",
		`{"reference":"x"}`:                    "missing_amount",
		`{"credits":10}`:                       "invalid_reference",
		`{"credits":10,"reference":""}`:        "invalid_reference",
		`{"credits":true,"reference":"x"}`:     "invalid_json",
		`{"credits":10,"reference":"x","a":1}`: "unknown_field",
	} {
		e.expect(credit(body), http.StatusBadRequest, code)
	}
	e.expect(e.admin("POST", "/admin/v1/accounts/nobody/credits", `{"credits":1,"reference":"r"}`), http.StatusNotFound, "account_not_found")

	// Grants and adjustments are not purchases: each has its own total.
	r = e.admin("GET", "/admin/v1/accounts/acme", nil)
	if r.num("total_purchased") != "0.000" || r.num("total_granted") != "1005.479" || r.num("total_adjusted") != "-500.500" ||
		r.num("balance") != "504.979" || r.num("total_consumed") != "0.000" {
		t.Fatalf("account: %s", r.raw)
	}
}

func TestAdminCreditSameReferenceConcurrently(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.expect(e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"}), http.StatusCreated, "")
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.admin("POST", "/admin/v1/accounts/acme/credits", `{"credits":7,"reference":"once"}`)
			if r.status == http.StatusOK && r.get("applied") == true {
				mu.Lock()
				applied++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if applied != 1 || e.account("acme").Balance != 7000 {
		t.Fatalf("applied %d times, balance %d mc", applied, e.account("acme").Balance)
	}
	e.invariant("acme")
}

func TestAdminLedgerPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.expect(e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"}), http.StatusCreated, "")
	for i := range 5 {
		e.expect(e.admin("POST", "/admin/v1/accounts/acme/credits",
			map[string]any{"credits": i + 1, "reference": "r" + string(rune('a'+i))}), http.StatusOK, "")
	}
	var seen []string
	after := ""
	for page := 0; ; page++ {
		q := "/admin/v1/accounts/acme/ledger?limit=2"
		if after != "" {
			q += "&starting_after=" + after
		}
		r := e.admin("GET", q, nil)
		e.expect(r, http.StatusOK, "")
		for _, it := range r.list() {
			m := it.(map[string]any)
			seen = append(seen, m["amount"].(interface{ String() string }).String())
			after = m["id"].(string)
		}
		if r.get("has_more") != true {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if strings.Join(seen, ",") != "5.000,4.000,3.000,2.000,1.000" {
		t.Fatalf("ledger newest first across pages: %v", seen)
	}
	e.expect(e.admin("GET", "/admin/v1/accounts/acme/ledger?limit=0", nil), http.StatusBadRequest, "invalid_limit")
	e.expect(e.admin("GET", "/admin/v1/accounts/acme/ledger?starting_after=nope", nil), http.StatusBadRequest, "invalid_cursor")
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, tok := range []string{"", "wrong", testAdminToken[:len(testAdminToken)-1], testAdminToken + "x", e.token("acme", nil)} {
		r := e.do("POST", "/admin/v1/accounts", tok, map[string]any{"id": "acme"})
		e.expect(r, http.StatusUnauthorized, "invalid_admin_token")
	}
	if _, err := e.store.Account(context.Background(), "acme"); !errors.Is(err, metering.ErrNoAccount) {
		t.Fatalf("an unauthenticated request created the account: %v", err)
	}
}

func TestAdminOffWithoutToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noAdmin: true})
	for _, route := range [][2]string{
		{"POST", "/admin/v1/accounts"}, {"GET", "/admin/v1/accounts/acme"}, {"POST", "/admin/v1/accounts/acme/credits"},
		{"DELETE", "/admin/v1/accounts/acme/keys/key_1"},
	} {
		r := e.do(route[0], route[1], "", `{"id":"acme"}`)
		e.expect(r, http.StatusNotFound, "not_found")
	}
}

func TestNewRefusesShortAdminToken(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	store := metering.New(nil, metering.Options{})
	_, err := New(Options{Config: config.Billing{AdminToken: strings.Repeat("x", 31)}, Catalog: cat, Store: store})
	if err == nil || !strings.Contains(err.Error(), "admin_token") {
		t.Fatalf("New accepted a 31-character admin token: %v", err)
	}
	if _, err := New(Options{Config: config.Billing{AdminToken: strings.Repeat("x", 32)}, Catalog: cat, Store: store}); err != nil {
		t.Fatalf("New refused a 32-character admin token: %v", err)
	}
	if _, err := New(Options{Catalog: cat}); err == nil {
		t.Fatal("New accepted options without a store")
	}
}

// TestOperatorCreditsAreNotPurchases: an operator's credit whose reference
// reads like a checkout's ("checkout:<session>") never marks that checkout
// as credited, and operators' grants and adjustments are counted apart from
// purchases. total_purchased is what was bought less what refunds and
// disputes took back (the sum of the billing history), whatever operators
// did; total_granted and total_adjusted are theirs.
func TestOperatorCreditsAreNotPurchases(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_op", "growth")
	credit := func(credits, ref string) func() {
		return func() {
			r := e.admin("POST", "/admin/v1/accounts/acme/credits", `{"credits":`+credits+`,"reference":"`+ref+`"}`)
			e.expect(r, http.StatusOK, "")
			if r.get("applied") != true {
				t.Fatalf("credit %s %s not applied: %s", credits, ref, r.raw)
			}
		}
	}
	refunded := int64(growthCreditsMC*1000+growthPriceMinor-1) / growthPriceMinor // $10.00 of $24.99, rounded up
	steps := []struct {
		name                         string
		do                           func()
		purchased, granted, adjusted int64 // mc after the step
	}{
		{"grant under the checkout's reference", credit("10", "checkout:cs_op"), 0, 10_000, 0},
		{"the checkout is paid", func() { e.paid("evt_op", "acme", "cs_op", "pi_op", p) }, growthCreditsMC, 10_000, 0},
		{"negative adjustment", credit("-500.5", "adj-1"), growthCreditsMC, 10_000, -500_500},
		{"another grant", credit("0.25", "g-2"), growthCreditsMC, 10_250, -500_500},
		{"partial refund", func() { e.refund("evt_rf", "ch_op", "pi_op", growthPriceMinor, 1000) },
			growthCreditsMC - refunded, 10_250, -500_500},
	}
	tok := e.token("acme", nil)
	for _, st := range steps {
		st.do()
		balance := st.purchased + st.granted + st.adjusted
		want := map[string]int64{"balance": balance, "total_purchased": st.purchased, "total_granted": st.granted,
			"total_adjusted": st.adjusted, "total_consumed": 0}
		for view, r := range map[string]response{
			"GET /v1/api-credits":         e.do("GET", "/v1/api-credits", tok, nil),
			"GET /admin/v1/accounts/acme": e.admin("GET", "/admin/v1/accounts/acme", nil),
		} {
			e.expect(r, http.StatusOK, "")
			for f, mc := range want {
				if r.num(f) != pricing.FormatCredits(mc) {
					t.Errorf("after %s, %s %s = %q, want %s: %s", st.name, view, f, r.num(f), pricing.FormatCredits(mc), r.raw)
				}
			}
		}
		e.invariant("acme")
	}
}
