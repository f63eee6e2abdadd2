package soak

import (
	"strconv"
	"testing"

	"github.com/tollgate/tollgate/metering"
)

// TestPriceListCacheWrites: the soak's own reading of the shipped catalog
// knows every kind — cache reads at their fractional rate, cache writes,
// web searches — and the ledger audit prices each at its own rate, the
// exact sum rounded up once: a cache write or read charged as plain input is
// a wrong charge.
func TestPriceListCacheWrites(t *testing.T) {
	p := loadPrices(t)
	// configs/tollgate.yaml, ultra: input 8, cached_input 0.8, output 16,
	// cache_write 10, cache_write_1h 16, web_search 2,500,000 per 1K.
	if got, want := p.models["claude-sonnet-4-5"].rates, (rates{in: 8 * nano, cached: nano * 8 / 10, out: 16 * nano, cw: 10 * nano, cw1h: 16 * nano,
		ws: 2_500_000 * nano}); got != want {
		t.Fatalf("claude-sonnet-4-5 rates %+v, want %+v", got, want)
	}
	if got, want := p.tiers["core"].rates, (rates{in: nano, cached: nano / 10, out: 2 * nano, cw: 2 * nano, cw1h: 2 * nano, ws: 2_500_000 * nano}); got != want {
		t.Fatalf("core rates %+v, want %+v", got, want)
	}
	entry := func(mc int64) metering.Entry {
		f := map[string]string{"model": "claude-sonnet", "input_tokens": "21", "cached_input_tokens": "2047",
			"cache_write_tokens": "188", "cache_write_1h_tokens": "100", "output_tokens": "393", "web_search_requests": "1", "capped": "0"}
		return metering.Entry{Type: "usage", Amount: -mc, Fields: f}
	}
	// 2047 × 0.8 = 1637.6 mc: the call's total is rounded up once.
	exact := int64(21*8+188*10+100*16+393*16+2_500_000) + 1638
	if p := pricedProblem(p, entry(exact)); p != "" {
		t.Fatalf("exact charge %d flagged: %s", exact, p)
	}
	for _, wrong := range []int64{
		int64((21+188+100)*8+393*16+2_500_000) + 1638,       // cache writes as input
		int64(21*8+188*10+100*16+393*16+2_500_000) + 2047*8, // cache reads as input
		int64(21*8+188*10+100*16+393*16) + 1638,             // the search free
		exact - 1,                                           // rounded down
	} {
		if p := pricedProblem(p, entry(wrong)); p == "" {
			t.Fatalf("wrong charge %d mc (want %s) not flagged", wrong, strconv.FormatInt(exact, 10))
		}
	}
}
