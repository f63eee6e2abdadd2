package soak

import (
	"strconv"
	"testing"

	"github.com/tollgate/tollgate/metering"
)

// TestPriceListCacheWrites: the soak's own reading of the shipped catalog
// knows the cache-write kinds, and the ledger audit prices them at their own
// rates: a cache write charged as plain input is a wrong charge.
func TestPriceListCacheWrites(t *testing.T) {
	p := loadPrices(t)
	// configs/tollgate.yaml, ultra: input 8, output 16, cache_write 10,
	// cache_write_1h 16; cached_input unstated (= input).
	if got, want := p.models["claude-sonnet-4-5"], (rates{in: 8, cached: 8, out: 16, cw: 10, cw1h: 16}); got != want {
		t.Fatalf("claude-sonnet-4-5 rates %+v, want %+v", got, want)
	}
	if got, want := p.tiers["core"], (rates{in: 1, cached: 1, out: 2, cw: 2, cw1h: 2}); got != want {
		t.Fatalf("core rates %+v, want %+v", got, want)
	}
	entry := func(mc int64) metering.Entry {
		f := map[string]string{"model": "claude-sonnet", "input_tokens": "21", "cached_input_tokens": "2048",
			"cache_write_tokens": "188", "cache_write_1h_tokens": "100", "output_tokens": "393", "capped": "0"}
		return metering.Entry{Type: "usage", Amount: -mc, Fields: f}
	}
	exact := int64(21*8 + 2048*8 + 188*10 + 100*16 + 393*16)
	if p := pricedProblem(p, entry(exact)); p != "" {
		t.Fatalf("exact charge %d flagged: %s", exact, p)
	}
	asInput := int64((21+188+100)*8 + 2048*8 + 393*16)
	if p := pricedProblem(p, entry(asInput)); p == "" {
		t.Fatalf("cache writes charged as input (%d mc, want %s) not flagged", asInput, strconv.FormatInt(exact, 10))
	}
}
