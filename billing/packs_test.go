package billing

import (
	"net/http"
	"strconv"
	"testing"
)

func TestPacksFromTheSeedCatalog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{}) // no Stripe: packs are still served
	r := e.do("GET", "/v1/billing/packs", "", nil)
	e.expect(r, http.StatusOK, "")

	want := []struct {
		key, name, price string
		minor            int64
	}{
		{"starter", "Starter", "9.99", 999},
		{"growth", "Growth", "24.99", 2499},
		{"scale", "Scale", "49.99", 4999},
		{"business", "Business", "99.99", 9999},
		{"enterprise", "Enterprise", "199.99", 19999},
	}
	data := r.list()
	if len(data) != len(want) {
		t.Fatalf("%d packs, want %d: %s", len(data), len(want), r.raw)
	}
	for i, w := range want {
		p := response{json: data[i].(map[string]any)}
		// Computed here independently: 100,000 credits per USD is 1,000 credits
		// per cent, 1,000 mc per credit, less the 5% fee.
		mc := w.minor * 1000 * 1000 * 9500 / 10000
		fee := (w.minor*500 + 5000) / 10000
		checks := map[string]string{
			"key": w.key, "name": w.name, "price": w.price, "currency": "usd", "note": "5% fee applied",
		}
		for f, v := range checks {
			if p.str(f) != v {
				t.Errorf("%s.%s = %q, want %q", w.key, f, p.str(f), v)
			}
		}
		nums := map[string]string{
			"price_minor": strconv.FormatInt(w.minor, 10), "fee_bps": "500", "fee_minor": strconv.FormatInt(fee, 10),
			"credits_mc": strconv.FormatInt(mc, 10), "credits_after_fee": strconv.FormatInt(mc/1000, 10) + ".000",
		}
		for f, v := range nums {
			if p.num(f) != v {
				t.Errorf("%s.%s = %s, want %s", w.key, f, p.num(f), v)
			}
		}
	}
	growth := response{json: data[1].(map[string]any)}
	if growth.num("credits_after_fee") != "2374050.000" || growth.num("credits_mc") != "2374050000" {
		t.Fatalf("growth must buy exactly 2,374,050 credits: %v", growth.json)
	}
}
