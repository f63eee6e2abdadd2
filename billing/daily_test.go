package billing

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

func TestDailyUsageEndpoint(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if _, err := e.store.CreateAccount(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	e.admin("POST", "/admin/v1/accounts/u/credits", map[string]any{"credits": 100, "reference": "fund"})
	for i, c := range []struct {
		model string
		mc    int64
	}{{"gpt-4o", 1234}, {"gpt-4o", 1}, {"claude", 5000}} {
		hold := "h" + string(rune('a'+i))
		if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: "u", HoldID: hold, Fixed: c.mc}); err != nil {
			t.Fatal(err)
		}
		_, err := e.store.Settle(ctx, metering.Settlement{Account: "u", HoldID: hold, Cost: c.mc,
			Record: metering.Record{RequestID: hold, Model: c.model, Input: 10, CachedInput: 5, Output: 3, Status: 200}})
		if err != nil {
			t.Fatal(err)
		}
	}
	tok := e.token("u", nil)
	r := e.do("GET", "/api/billing/usage/daily?days=30", tok, nil)
	e.expect(r, http.StatusOK, "")
	today := time.Now().UTC().Format(time.DateOnly)
	want := `{"data":[{"date":"` + today + `","model":"claude","requests":1,"inputTokens":15,"outputTokens":3,"credits":5.000},` +
		`{"date":"` + today + `","model":"gpt-4o","requests":2,"inputTokens":30,"outputTokens":6,"credits":1.235}]}` + "\n"
	if r.raw != want {
		t.Errorf("body\n%s\nwant\n%s", r.raw, want)
	}

	// Another account sees nothing of u's; the default is 30 days.
	r = e.do("GET", "/api/billing/usage/daily", e.token("other", nil), nil)
	if r.status != http.StatusOK || r.raw != `{"data":[]}`+"\n" {
		t.Errorf("other account: %d %s", r.status, r.raw)
	}
	for _, q := range []string{"0", "32", "x", "-1", "1e1"} {
		e.expect(e.do("GET", "/api/billing/usage/daily?days="+q, tok, nil), http.StatusBadRequest, "invalid_days")
	}
	e.expect(e.do("GET", "/api/billing/usage/daily", "", nil), http.StatusUnauthorized, "invalid_token")
}
