package pricing_test

import (
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pricing"
)

// cacheWriteSpec has tiers with stated and unstated cache-write rates, a
// model overriding its tier's, and passthrough models with and without
// cache-write prices.
func cacheWriteSpec() pricing.Spec {
	dep := []pricing.DeploymentSpec{{Provider: "anthropic", Model: "m"}}
	return pricing.Spec{
		CreditsPerUSD: 100_000,
		Tiers: map[string]pricing.TierSpec{
			"stated":   {Input: pricing.Per1K(8), CachedInput: rp(1), Output: pricing.Per1K(16), CacheWrite: rp(10), CacheWrite1h: rp(16)},
			"odd":      {Input: pricing.Per1K(3), Output: pricing.Per1K(6)},                                                             // defaults: ⌈3.75⌉ = 4, 6
			"one":      {Input: pricing.Per1K(1), Output: pricing.Per1K(2)},                                                             // defaults: ⌈1.25⌉ = 2, 2
			"free":     {Input: pricing.Per1K(0), Output: pricing.Per1K(1)},                                                             // defaults: 0, 0
			"explicit": {Input: pricing.Per1K(5), Output: pricing.Per1K(9), CacheWrite: rp(0), CacheWrite1h: rp(7)},                     // a stated 0 is kept
			"cheap":    {Input: pricing.Per1K(4), CachedInput: rp(4), Output: pricing.Per1K(8), CacheWrite: rp(3), CacheWrite1h: rp(2)}, // writes below input
		},
		Models: []pricing.ModelSpec{
			{ID: "sonnet", Tier: "stated", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep},
			{ID: "odd", Tier: "odd", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep},
			{ID: "one", Tier: "one", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep},
			{ID: "free", Tier: "free", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep},
			{ID: "explicit", Tier: "explicit", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep},
			{ID: "cheap", Tier: "cheap", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep},
			{ID: "override", Tier: "stated", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep,
				CacheWrite: rp(12), CacheWrite1h: rp(20)},
			{ID: "override-5m", Tier: "odd", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep, CacheWrite: rp(5)},
			// Anthropic's Sonnet 4.5 list price: 3 / 3.75 / 6 / 0.30 / 15 USD per 1M.
			{ID: "usd-sonnet", Tier: "stated", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep,
				PriceUSD: &pricing.USDPriceSpec{Input: "3", CachedInput: "0.30", Output: "15", CacheWrite: "3.75", CacheWrite1h: "6"}},
			// Defaults: 1.25 × 0.123457 = 0.15432125 → 0.154322 (rounded up to a µUSD), 2 × = 0.246914.
			{ID: "usd-default", Tier: "stated", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep,
				PriceUSD: &pricing.USDPriceSpec{Input: "0.123457", Output: "1"}},
			{ID: "usd-tiny", Tier: "stated", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep,
				PriceUSD: &pricing.USDPriceSpec{Input: "0.000001", Output: "0.000001", CacheWrite: "0.000002", CacheWrite1h: "0.000003"}},
		},
	}
}

func TestCacheWriteRates(t *testing.T) {
	c := mustCatalog(t, cacheWriteSpec())
	tests := []struct {
		model string
		want  pricing.Rates // mc per token = credits per 1K tokens
		max   int64         // the dearest input-side rate, which holds use
	}{
		{"sonnet", pricing.Rates{Input: pricing.Per1K(8), CachedInput: pricing.Per1K(1), Output: pricing.Per1K(16), CacheWrite: pricing.Per1K(10), CacheWrite1h: pricing.Per1K(16)}, 16},
		{"odd", pricing.Rates{Input: pricing.Per1K(3), CachedInput: pricing.Per1K(3), Output: pricing.Per1K(6), CacheWrite: pricing.Per1K(4), CacheWrite1h: pricing.Per1K(6)}, 6},
		{"one", pricing.Rates{Input: pricing.Per1K(1), CachedInput: pricing.Per1K(1), Output: pricing.Per1K(2), CacheWrite: pricing.Per1K(2), CacheWrite1h: pricing.Per1K(2)}, 2},
		{"free", pricing.Rates{Input: pricing.Per1K(0), CachedInput: pricing.Per1K(0), Output: pricing.Per1K(1), CacheWrite: pricing.Per1K(0), CacheWrite1h: pricing.Per1K(0)}, 0},
		{"explicit", pricing.Rates{Input: pricing.Per1K(5), CachedInput: pricing.Per1K(5), Output: pricing.Per1K(9), CacheWrite: pricing.Per1K(0), CacheWrite1h: pricing.Per1K(7)}, 7},
		{"cheap", pricing.Rates{Input: pricing.Per1K(4), CachedInput: pricing.Per1K(4), Output: pricing.Per1K(8), CacheWrite: pricing.Per1K(3), CacheWrite1h: pricing.Per1K(2)}, 4},
		{"override", pricing.Rates{Input: pricing.Per1K(8), CachedInput: pricing.Per1K(1), Output: pricing.Per1K(16), CacheWrite: pricing.Per1K(12), CacheWrite1h: pricing.Per1K(20)}, 20},
		{"override-5m", pricing.Rates{Input: pricing.Per1K(3), CachedInput: pricing.Per1K(3), Output: pricing.Per1K(6), CacheWrite: pricing.Per1K(5), CacheWrite1h: pricing.Per1K(6)}, 6},
		// Passthrough rates: 3 USD/1M at 100,000 credits per USD = 300 mc a token.
		{"usd-sonnet", pricing.Rates{Input: pricing.Per1K(300), CachedInput: pricing.Per1K(30), Output: pricing.Per1K(1500), CacheWrite: pricing.Per1K(375), CacheWrite1h: pricing.Per1K(600)}, 600},
		// Exact rates; the hold's ceiling is the dearest rounded up to a whole mc.
		{"usd-default", pricing.Rates{Input: pricing.MustRate("12.3457"), CachedInput: pricing.MustRate("12.3457"), Output: pricing.Per1K(100), CacheWrite: pricing.MustRate("15.4322"), CacheWrite1h: pricing.MustRate("24.6914")}, 25},
		{"usd-tiny", pricing.Rates{Input: pricing.MustRate("0.0001"), CachedInput: pricing.MustRate("0.0001"), Output: pricing.MustRate("0.0001"), CacheWrite: pricing.MustRate("0.0002"), CacheWrite1h: pricing.MustRate("0.0003")}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			m := mustModel(t, c, tt.model)
			if m.Prices[0].Rates != tt.want {
				t.Errorf("Rates = %+v, want %+v", m.Prices[0].Rates, tt.want)
			}
			if got := m.Hold.Input; got != tt.max {
				t.Errorf("MaxInput = %d, want %d", got, tt.max)
			}
		})
	}
	// The tier itself carries the defaults.
	if tier, _ := c.Tier("odd"); tier.Rates.CacheWrite != pricing.Per1K(4) || tier.Rates.CacheWrite1h != pricing.Per1K(6) {
		t.Errorf("Tier(odd) = %+v, want cache writes 4 and 6", tier.Rates)
	}
}

// The contract: input × input + cache_read × cached_input + cache_write ×
// cache_write (+ the 1-hour writes at theirs) + output × output, exactly.
func TestCacheWriteCost(t *testing.T) {
	c := mustCatalog(t, cacheWriteSpec())
	tests := []struct {
		model string
		u     pricing.Usage
		want  int64 // mc, worked out by hand
	}{
		{"sonnet", pricing.Usage{CacheWrite: 1}, 10},
		{"sonnet", pricing.Usage{CacheWrite1h: 1}, 16},
		{"sonnet", pricing.Usage{CacheWrite: 1000}, 10_000},
		// anthropic_messages.json: 21 in, 2048 read, 188 written (5m), 393 out:
		// 21×8 + 2048×1 + 188×10 + 393×16 = 168 + 2048 + 1880 + 6288.
		{"sonnet", pricing.Usage{Input: 21, CachedInput: 2048, CacheWrite: 188, Output: 393}, 10_384},
		// With a 1-hour split: 100 of the 188 for an hour.
		{"sonnet", pricing.Usage{Input: 21, CachedInput: 2048, CacheWrite: 88, CacheWrite1h: 100, Output: 393}, 168 + 2048 + 880 + 1600 + 6288},
		{"odd", pricing.Usage{Input: 10, CacheWrite: 10, CacheWrite1h: 10, Output: 10}, 30 + 40 + 60 + 60},
		{"one", pricing.Usage{Input: 3, CachedInput: 3, CacheWrite: 3, CacheWrite1h: 3}, 3 + 3 + 6 + 6},
		{"free", pricing.Usage{Input: 1000, CacheWrite: 1000, CacheWrite1h: 1000, Output: 1}, 1},
		{"explicit", pricing.Usage{CacheWrite: 500, CacheWrite1h: 2}, 14},
		{"cheap", pricing.Usage{Input: 1, CacheWrite: 1, CacheWrite1h: 1}, 4 + 3 + 2},
		{"override", pricing.Usage{CacheWrite: 2, CacheWrite1h: 3}, 24 + 60},
		{"override-5m", pricing.Usage{CacheWrite: 2, CacheWrite1h: 3}, 10 + 18},
		{"sonnet", pricing.Usage{CacheWrite: -5, CacheWrite1h: -1 << 62, Output: 1}, 16}, // negative counts are zero
		// Passthrough: the call's sum is exact and rounded up once.
		// 1M 5-minute writes at 3.75 USD = 375,000 credits.
		{"usd-sonnet", pricing.Usage{CacheWrite: 1_000_000}, 375_000_000},
		{"usd-sonnet", pricing.Usage{CacheWrite1h: 1_000_000}, 600_000_000},
		{"usd-sonnet", pricing.Usage{CacheWrite: 1}, 375},
		{"usd-sonnet", pricing.Usage{CacheWrite: 1, CacheWrite1h: 1, CachedInput: 1}, 375 + 600 + 30},
		// 21×300 + 2048×30 + 188×375 + 393×1500 = 6300 + 61440 + 70500 + 589500.
		{"usd-sonnet", pricing.Usage{Input: 21, CachedInput: 2048, CacheWrite: 188, Output: 393}, 727_740},
		// Defaults: 1M writes at 0.154322 and 0.246914 USD.
		{"usd-default", pricing.Usage{CacheWrite: 1_000_000}, 15_432_200},
		{"usd-default", pricing.Usage{CacheWrite1h: 1_000_000}, 24_691_400},
		// 0.0002 + 0.0003 mc: one mc for the call, not one per kind.
		{"usd-tiny", pricing.Usage{CacheWrite: 1, CacheWrite1h: 1}, 1},
		{"usd-tiny", pricing.Usage{CacheWrite: 5000}, 1},
		{"usd-tiny", pricing.Usage{CacheWrite: 5000, CacheWrite1h: 1}, 2},
	}
	for _, tt := range tests {
		u := tt.u
		t.Run(fmt.Sprintf("%s/%d_%d_%d_%d_%d", tt.model, u.Input, u.CachedInput, u.CacheWrite, u.CacheWrite1h, u.Output), func(t *testing.T) {
			if got := mustModel(t, c, tt.model).Cost(u, t0); got != tt.want {
				t.Errorf("Cost(%+v) = %d mc, want %d", u, got, tt.want)
			}
		})
	}
}

// The largest counts of every kind at the largest rates are still priced
// exactly (tier) or exactly then rounded up once (passthrough).
func TestCacheWriteCostLargest(t *testing.T) {
	const n = 1 << 40
	u := pricing.Usage{Input: n, CachedInput: n, Output: n, CacheWrite: n, CacheWrite1h: n}
	const half = n / 2 // at the largest tier rates, 2^40 of each is past the ledger's range
	uHalf := pricing.Usage{Input: half, CachedInput: half, Output: half, CacheWrite: half, CacheWrite1h: half}
	spec := cacheWriteSpec()
	spec.Tiers["max"] = pricing.TierSpec{Input: pricing.Per1K(1e6), Output: pricing.Per1K(1e6), CacheWrite: rp(1e6), CacheWrite1h: rp(1e6)}
	spec.Models = append(spec.Models,
		pricing.ModelSpec{ID: "max", Tier: "max", ContextWindow: 1, MaxOutputTokens: 1, Deployments: spec.Models[0].Deployments},
		pricing.ModelSpec{ID: "usd-big", Tier: "max", ContextWindow: 1, MaxOutputTokens: 1, Deployments: spec.Models[0].Deployments,
			PriceUSD: &pricing.USDPriceSpec{Input: "0.000007", Output: "0.000011", CacheWrite: "0.000013", CacheWrite1h: "0.000017"}})
	c := mustCatalog(t, spec)
	want := new(big.Int).Mul(big.NewInt(5*1e6), big.NewInt(half))
	if got := mustModel(t, c, "max").Cost(uHalf, t0); !want.IsInt64() || got != want.Int64() {
		t.Errorf("tier: Cost = %d, want %s", got, want)
	}
	if got := mustModel(t, c, "max").Cost(u, t0); got != 1<<62 {
		t.Errorf("tier: Cost past the ledger's range = %d, want it saturated at 2^62", got)
	}
	// (7 + 7 + 11 + 13 + 17) µUSD/1M × 2^40 at 100,000 credits per USD.
	micros := new(big.Int).Mul(big.NewInt(55), big.NewInt(n))
	num := micros.Mul(micros, big.NewInt(100_000*1000))
	q, r := new(big.Int).QuoRem(num, big.NewInt(1e12), new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if got := mustModel(t, c, "usd-big").Cost(u, t0); got != q.Int64() {
		t.Errorf("usd: Cost = %d, want %s", got, q)
	}
}

func TestCacheWriteRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*pricing.Spec)
		paths  []string
	}{
		{"huge tier cache write 1h", func(s *pricing.Spec) {
			s.Tiers["odd"] = pricing.TierSpec{Input: pricing.Per1K(3), Output: pricing.Per1K(6), CacheWrite1h: rp(1e6 + 1)}
		}, []string{"pricing.tiers.odd.cache_write_1h:"}},
		{"default past the bound", func(s *pricing.Spec) {
			s.Tiers["odd"] = pricing.TierSpec{Input: pricing.Per1K(900_000), Output: pricing.Per1K(6)} // 2 × input > 1e6
		}, []string{"pricing.tiers.odd.cache_write_1h:", "pricing.tiers.odd.cache_write:"}},
		{"huge model override", func(s *pricing.Spec) { s.Models[1].CacheWrite1h = rp(2e6) }, []string{"pricing.models[1].cache_write_1h:"}},
		{"override on a passthrough model", func(s *pricing.Spec) { s.Models[8].CacheWrite = rp(5) }, []string{"pricing.models[8].cache_write:", "price_usd"}},
		{"bad usd cache write", func(s *pricing.Spec) { s.Models[8].PriceUSD.CacheWrite = "3.7.5" }, []string{"pricing.models[8].price_usd", "cache_write"}},
		{"usd cache write 1h above 1000", func(s *pricing.Spec) { s.Models[8].PriceUSD.CacheWrite1h = "1000.5" }, []string{"pricing.models[8].price_usd", "cache_write_1h"}},
		{"negative usd cache write", func(s *pricing.Spec) { s.Models[8].PriceUSD.CacheWrite = "-1" }, []string{"pricing.models[8].price_usd", "cache_write"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := cacheWriteSpec()
			tt.mutate(&spec)
			c, err := pricing.New(spec)
			if err == nil || c != nil {
				t.Fatalf("New accepted a bad spec (err %v)", err)
			}
			for _, p := range tt.paths {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %s", err, p)
				}
			}
		})
	}
}
