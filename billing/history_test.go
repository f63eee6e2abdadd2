package billing

import (
	"fmt"
	"net/http"
	"testing"
)

func TestHistoryPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.token("acme", nil)
	// Five purchases with usage in between, and a refund of the third.
	for i := 1; i <= 5; i++ {
		s := fmt.Sprintf("cs_h%d", i)
		p := e.sell("acme", s, "starter")
		e.paid("evt_h"+s, "acme", s, fmt.Sprintf("pi_h%d", i), p)
		e.spend("acme", fmt.Sprintf("hold_%d", i), 1234)
	}
	e.refund("evt_rf", "ch_h3", "pi_h3", 999, 999)
	e.invariant("acme")

	var ids, types []string
	var pi []string
	after := ""
	for page := 0; ; page++ {
		q := "/v1/billing/history?limit=2"
		if after != "" {
			q += "&starting_after=" + after
		}
		r := e.do("GET", q, tok, nil)
		e.expect(r, http.StatusOK, "")
		if n := len(r.list()); n == 0 || n > 2 {
			t.Fatalf("page of %d: %s", n, r.raw)
		}
		for _, it := range r.list() {
			m := response{json: it.(map[string]any)}
			ids = append(ids, m.str("id"))
			types = append(types, m.str("type"))
			pi = append(pi, m.str("stripe_payment_id"))
			for _, f := range []string{"id", "amount", "balance_after", "stripe_payment_id", "created_at"} {
				if m.get(f) == nil {
					t.Fatalf("history item lacks %q: %v", f, m.json)
				}
			}
			after = m.str("id")
		}
		if r.get("has_more") != true {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	want := []string{"refund", "purchase", "purchase", "purchase", "purchase", "purchase"}
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("types newest first %v, want %v (usage must not appear)", types, want)
	}
	if fmt.Sprint(pi) != "[pi_h3 pi_h5 pi_h4 pi_h3 pi_h2 pi_h1]" {
		t.Fatalf("payments newest first: %v", pi)
	}
	for i := 1; i < len(ids); i++ {
		var ms0, seq0, ms1, seq1 int64
		fmt.Sscanf(ids[i-1], "%d-%d", &ms0, &seq0)
		fmt.Sscanf(ids[i], "%d-%d", &ms1, &seq1)
		if ms1 > ms0 || ms1 == ms0 && seq1 >= seq0 {
			t.Fatalf("ids not strictly newest first: %v", ids)
		}
	}

	r := e.do("GET", "/v1/billing/history", tok, nil)
	if len(r.list()) != 6 || r.get("has_more") != false {
		t.Fatalf("default page: %s", r.raw)
	}
	// The newest purchase's balance_after is the balance right after it:
	// 5 × 949,050 credits less 4 × 1.234 spent before it.
	r = e.do("GET", "/v1/billing/history?limit=1&starting_after="+ids[0], tok, nil)
	if r.num("data.0.balance_after") != "4745245.064" || r.num("data.0.amount") != "949050.000" ||
		r.str("data.0.type") != "purchase" || r.str("data.0.pack") != "starter" {
		t.Fatalf("fifth purchase: %s", r.raw)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "starting_after=abc", "starting_after=1-"} {
		e.expect(e.do("GET", "/v1/billing/history?"+q, tok, nil), http.StatusBadRequest, "")
	}
	e.expect(e.do("GET", "/v1/billing/history?limit=100", tok, nil), http.StatusOK, "")
}
