package pricing_test

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pricing"
)

func i64(v int64) *int64 { return &v }

// defaultSpec mirrors the shipped default catalog (docs/architecture.md §3): 100,000
// credits per USD, a 5% fee, tiers Core 1/2, Pro 3/6, Ultra 8/16.
func defaultSpec() pricing.Spec {
	dep := func(p, m string) []pricing.DeploymentSpec { return []pricing.DeploymentSpec{{Provider: p, Model: m}} }
	return pricing.Spec{
		CreditsPerUSD: 100_000,
		FeeBps:        500,
		Tiers: map[string]pricing.TierSpec{
			"core":  {Input: pricing.Per1K(1), Output: pricing.Per1K(2)},
			"pro":   {Input: pricing.Per1K(3), Output: pricing.Per1K(6)},
			"ultra": {Input: pricing.Per1K(8), Output: pricing.Per1K(16)},
			"cache": {Input: pricing.Per1K(8), CachedInput: rp(1), Output: pricing.Per1K(16)},
		},
		Models: []pricing.ModelSpec{
			{ID: "gpt-4o-mini", Aliases: []string{"gpt-4o-mini-2024-07-18"}, Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4o-mini")},
			{ID: "gemini-2.5-flash", Tier: "pro", ContextWindow: 1048576, MaxOutputTokens: 65536, Deployments: dep("gemini", "gemini-2.5-flash")},
			{ID: "claude-sonnet", Aliases: []string{"claude-sonnet-4-5", "claude-sonnet-4"}, Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep("anthropic", "claude-sonnet-4-5")},
			{ID: "cached-model", Tier: "cache", ContextWindow: 200000, MaxOutputTokens: 8192, Deployments: dep("anthropic", "x")},
			{ID: "usd-mini", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4o-mini"),
				PriceUSD: &pricing.USDPriceSpec{Input: "0.15", Output: "0.60"}},
			{ID: "usd-cached", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4.1"),
				PriceUSD: &pricing.USDPriceSpec{Input: "2", CachedInput: "0.5", Output: "8"}},
			{ID: "usd-opus", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 32000, Deployments: dep("anthropic", "claude-opus"),
				PriceUSD: &pricing.USDPriceSpec{Input: "15", Output: "75"}},
			{ID: "usd-max", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 32000, Deployments: dep("x", "y"),
				PriceUSD: &pricing.USDPriceSpec{Input: "1000", Output: "1000"}},
			{ID: "usd-tiny", Tier: "core", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep("x", "z"),
				PriceUSD: &pricing.USDPriceSpec{Input: "0.000001", Output: "0.000003"}},
			{ID: "usd-odd", Tier: "core", ContextWindow: 1000, MaxOutputTokens: 1000, Deployments: dep("x", "w"),
				PriceUSD: &pricing.USDPriceSpec{Input: "0.123456", Output: "1.000001"}},
		},
		Packs: []pricing.PackSpec{
			{Key: "starter", Name: "Starter", Price: "9.99"},
			{Key: "growth", Name: "Growth", Price: "24.99"},
			{Key: "scale", Name: "Scale", Price: "49.99"},
			{Key: "business", Name: "Business", Price: "99.99"},
			{Key: "enterprise", Name: "Enterprise", Price: "199.99"},
			{Key: "eur-small", Name: "Small (EUR)", Price: "5.00", Currency: "eur", Credits: i64(1_000_000)},
			{Key: "eur-big", Price: "45.50", Currency: "EUR", Credits: i64(10_000_000), Note: "best value"},
		},
	}
}

func mustCatalog(t testing.TB, spec pricing.Spec) *pricing.Catalog {
	t.Helper()
	c, err := pricing.New(spec)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func mustModel(t testing.TB, c *pricing.Catalog, name string) *pricing.Model {
	t.Helper()
	m, err := c.Lookup(name)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", name, err)
	}
	return m
}

func TestTierRatesAreMilliCreditsPerToken(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	// N credits per 1K tokens = N×1000 mc per 1000 tokens = N mc per token.
	tests := []struct {
		tier, model        string
		creditsPer1KIn     int64
		creditsPer1KCached int64
		creditsPer1KOut    int64
		creditsPer1KCW     int64 // cache write, 5 minutes
		creditsPer1KCW1h   int64
	}{
		// Unstated cache-write rates: ⌈1.25 × input⌉ and 2 × input.
		{"core", "gpt-4o-mini", 1, 1, 2, 2, 2},
		{"pro", "gemini-2.5-flash", 3, 3, 6, 4, 6},
		{"ultra", "claude-sonnet", 8, 8, 16, 10, 16},
		{"cache", "cached-model", 8, 1, 16, 10, 16},
	}
	for _, tt := range tests {
		t.Run(tt.tier, func(t *testing.T) {
			want := pricing.Rates{
				Input:        pricing.Per1K(tt.creditsPer1KIn),
				CachedInput:  pricing.Per1K(tt.creditsPer1KCached),
				Output:       pricing.Per1K(tt.creditsPer1KOut),
				CacheWrite:   pricing.Per1K(tt.creditsPer1KCW),
				CacheWrite1h: pricing.Per1K(tt.creditsPer1KCW1h),
			}
			tier, ok := c.Tier(tt.tier)
			if !ok {
				t.Fatalf("Tier(%q) missing", tt.tier)
			}
			if tier.Name != tt.tier || tier.Rates != want {
				t.Errorf("Tier(%q) = %+v, want rates %+v", tt.tier, tier, want)
			}
			m := mustModel(t, c, tt.model)
			if m.Tier != tt.tier || m.Prices[0].Rates != want || m.PricedByUSD() {
				t.Errorf("model %s: tier %q rates %+v usd %v, want %q %+v false", tt.model, m.Tier, m.Prices[0].Rates, m.PricedByUSD(), tt.tier, want)
			}
			// 1K tokens of each kind cost exactly the stated credits.
			for _, u := range []struct {
				usage   pricing.Usage
				credits int64
			}{
				{pricing.Usage{Input: 1000}, tt.creditsPer1KIn},
				{pricing.Usage{CachedInput: 1000}, tt.creditsPer1KCached},
				{pricing.Usage{Output: 1000}, tt.creditsPer1KOut},
				{pricing.Usage{CacheWrite: 1000}, tt.creditsPer1KCW},
				{pricing.Usage{CacheWrite1h: 1000}, tt.creditsPer1KCW1h},
			} {
				if got := m.Cost(u.usage, t0); got != u.credits*pricing.MilliPerCredit {
					t.Errorf("Cost(%+v) = %d mc, want %d credits", u.usage, got, u.credits)
				}
			}
		})
	}
	if _, ok := c.Tier("nope"); ok {
		t.Error(`Tier("nope") found`)
	}
}

func TestTierCost(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	// in, cached, out rates (mc per token), written out from the spec.
	rates := map[string][3]int64{
		"gpt-4o-mini":      {1, 1, 2},
		"gemini-2.5-flash": {3, 3, 6},
		"claude-sonnet":    {8, 8, 16},
		"cached-model":     {8, 1, 16},
	}
	usages := []pricing.Usage{
		{},
		{Input: 1},
		{Output: 1},
		{CachedInput: 1},
		{Input: 1000, CachedInput: 500, Output: 200},
		{Input: 123456, CachedInput: 7890, Output: 4321},
		{Input: 1_000_000, Output: 64_000},
		{Input: 1 << 40, CachedInput: 1 << 40, Output: 1 << 40}, // the largest counts priced
	}
	for name, r := range rates {
		m := mustModel(t, c, name)
		for _, u := range usages {
			t.Run(fmt.Sprintf("%s/%d_%d_%d", name, u.Input, u.CachedInput, u.Output), func(t *testing.T) {
				want := new(big.Int).Mul(big.NewInt(u.Input), big.NewInt(r[0]))
				want.Add(want, new(big.Int).Mul(big.NewInt(u.CachedInput), big.NewInt(r[1])))
				want.Add(want, new(big.Int).Mul(big.NewInt(u.Output), big.NewInt(r[2])))
				if got := m.Cost(u, t0); !want.IsInt64() || got != want.Int64() {
					t.Errorf("Cost(%+v) = %d, want %s", u, got, want)
				}
			})
		}
	}
}

func TestCostNegativeCountsAreZero(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	for _, name := range []string{"claude-sonnet", "usd-mini", "usd-opus"} {
		m := mustModel(t, c, name)
		if got := m.Cost(pricing.Usage{Input: -5, CachedInput: -1, Output: -1 << 62}, t0); got != 0 {
			t.Errorf("%s: Cost(negative) = %d, want 0", name, got)
		}
		if got, want := m.Cost(pricing.Usage{Input: -5, Output: 10}, t0), m.Cost(pricing.Usage{Output: 10}, t0); got != want {
			t.Errorf("%s: Cost with negative input = %d, want %d", name, got, want)
		}
	}
}

// usdCost is the spec's passthrough price computed independently with big
// integers: Σ tokens × USD-per-1M (in µUSD) converted at creditsPerUSD, the
// call's total rounded up to a whole milli-credit.
func usdCost(u pricing.Usage, inMicros, cachedMicros, outMicros, creditsPerUSD int64) *big.Int {
	micros := new(big.Int).Mul(big.NewInt(u.Input), big.NewInt(inMicros))
	micros.Add(micros, new(big.Int).Mul(big.NewInt(u.CachedInput), big.NewInt(cachedMicros)))
	micros.Add(micros, new(big.Int).Mul(big.NewInt(u.Output), big.NewInt(outMicros)))
	// mc = micros / 1e6 (USD per 1M tokens → per token: another 1e6) × credits/USD × 1000.
	num := new(big.Int).Mul(micros, big.NewInt(creditsPerUSD*1000))
	den := big.NewInt(1_000_000_000_000)
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

func TestUSDOverrideCost(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	type prices struct{ in, cached, out int64 } // µUSD per 1M tokens
	models := map[string]prices{
		"usd-mini":   {150_000, 150_000, 600_000}, // cached defaults to input
		"usd-cached": {2_000_000, 500_000, 8_000_000},
		"usd-opus":   {15_000_000, 15_000_000, 75_000_000},
		"usd-max":    {1_000_000_000, 1_000_000_000, 1_000_000_000},
		"usd-tiny":   {1, 1, 3},
		"usd-odd":    {123_456, 123_456, 1_000_001},
	}
	usages := []pricing.Usage{
		{},
		{Input: 1},
		{Output: 1},
		{CachedInput: 1},
		{Input: 1, Output: 1},
		{Input: 100},
		{Input: 1_000_000},
		{Output: 1_000_000},
		{CachedInput: 1_000_000},
		{Input: 12345, CachedInput: 678, Output: 910},
		{Input: 999_999, CachedInput: 1, Output: 333_333},
		{Output: 1 << 40}, // huge (hostile upstream usage): must not wrap around
		{Input: 1 << 40, CachedInput: 1 << 40, Output: 1 << 40},
	}
	for name, p := range models {
		m := mustModel(t, c, name)
		if !m.PricedByUSD() {
			t.Fatalf("%s: PricedByUSD false", name)
		}
		for _, u := range usages {
			t.Run(fmt.Sprintf("%s/%d_%d_%d", name, u.Input, u.CachedInput, u.Output), func(t *testing.T) {
				want := usdCost(u, p.in, p.cached, p.out, c.CreditsPerUSD())
				got := m.Cost(u, t0)
				if !want.IsInt64() || got != want.Int64() {
					t.Errorf("Cost(%+v) = %d mc, want %s mc", u, got, want)
				}
			})
		}
	}
}

func TestUSDOverrideWorkedExamples(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	// usd-mini: input 0.15, output 0.60 USD per 1M tokens at 100,000 credits
	// per USD. 1M input tokens = 0.15 USD = 15,000 credits = 15,000,000 mc, so
	// one input token is 0.015 credits = 15 mc (and one output token 60 mc).
	// usd-tiny: 0.000001 / 0.000003 USD per 1M tokens, i.e. 0.0001 and
	// 0.0003 mc per token: only the call's total is rounded up.
	tests := []struct {
		model string
		u     pricing.Usage
		want  int64
	}{
		{"usd-mini", pricing.Usage{Input: 1_000_000}, 15_000_000},
		{"usd-mini", pricing.Usage{Output: 1_000_000}, 60_000_000},
		{"usd-mini", pricing.Usage{CachedInput: 1_000_000}, 15_000_000}, // cached defaults to input
		{"usd-mini", pricing.Usage{Input: 1}, 15},
		{"usd-mini", pricing.Usage{Input: 1, Output: 1}, 75},
		{"usd-mini", pricing.Usage{}, 0},
		{"usd-cached", pricing.Usage{CachedInput: 1_000_000}, 50_000_000}, // 0.5 USD
		{"usd-cached", pricing.Usage{Input: 1_000_000}, 200_000_000},      // 2 USD
		{"usd-tiny", pricing.Usage{Input: 1}, 1},                          // ceil(0.0001)
		{"usd-tiny", pricing.Usage{Input: 1, Output: 1}, 1},               // ceil(0.0004), not 1+1
		{"usd-tiny", pricing.Usage{Input: 10_000}, 1},                     // exactly 1 mc
		{"usd-tiny", pricing.Usage{Input: 10_001}, 2},                     // 1.0001
		{"usd-tiny", pricing.Usage{Input: 5000, Output: 5000}, 2},         // 0.5 + 1.5
		{"usd-tiny", pricing.Usage{Input: 5001, Output: 5000}, 3},         // 2.0001
		{"usd-tiny", pricing.Usage{}, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d_%d_%d", tt.model, tt.u.Input, tt.u.CachedInput, tt.u.Output), func(t *testing.T) {
			if got := mustModel(t, c, tt.model).Cost(tt.u, t0); got != tt.want {
				t.Errorf("Cost(%+v) = %d, want %d", tt.u, got, tt.want)
			}
		})
	}
	// The exact rates, and the hold's per-token ceilings (the dearest input
	// kind and the output rate, rounded up to a whole mc).
	mr := pricing.MustRate
	rates := map[string]struct {
		r    pricing.Rates
		hold pricing.HoldRates
	}{
		// Cache writes default to 1.25 × and 2 × input: usd-mini 18.75 and
		// 30 mc, usd-odd 15.432 (0.15432 USD) and 24.6912 mc.
		"usd-mini":   {pricing.Rates{Input: mr("15"), CachedInput: mr("15"), Output: mr("60"), CacheWrite: mr("18.75"), CacheWrite1h: mr("30")}, pricing.HoldRates{Input: 30, Output: 60}},
		"usd-cached": {pricing.Rates{Input: mr("200"), CachedInput: mr("50"), Output: mr("800"), CacheWrite: mr("250"), CacheWrite1h: mr("400")}, pricing.HoldRates{Input: 400, Output: 800}},
		"usd-opus":   {pricing.Rates{Input: mr("1500"), CachedInput: mr("1500"), Output: mr("7500"), CacheWrite: mr("1875"), CacheWrite1h: mr("3000")}, pricing.HoldRates{Input: 3000, Output: 7500}},
		"usd-tiny":   {pricing.Rates{Input: mr("0.0001"), CachedInput: mr("0.0001"), Output: mr("0.0003"), CacheWrite: mr("0.0002"), CacheWrite1h: mr("0.0002")}, pricing.HoldRates{Input: 1, Output: 1}},
		"usd-odd":    {pricing.Rates{Input: mr("12.3456"), CachedInput: mr("12.3456"), Output: mr("100.0001"), CacheWrite: mr("15.432"), CacheWrite1h: mr("24.6912")}, pricing.HoldRates{Input: 25, Output: 101}},
	}
	for name, want := range rates {
		m := mustModel(t, c, name)
		if got := m.Prices[0].Rates; got != want.r {
			t.Errorf("%s Rates = %+v, want %+v", name, got, want.r)
		}
		if m.Hold != want.hold {
			t.Errorf("%s Hold = %+v, want %+v", name, m.Hold, want.hold)
		}
	}
}

// A price too large for the ledger saturates rather than wrapping to a
// small (or free) call.
func TestUSDCostSaturates(t *testing.T) {
	spec := defaultSpec()
	spec.CreditsPerUSD = 1_000_000_000
	c := mustCatalog(t, spec)
	m := mustModel(t, c, "usd-max") // 1000 USD per 1M tokens
	u := pricing.Usage{Input: 1 << 40, CachedInput: 1 << 40, Output: 1 << 40}
	exact := usdCost(u, 1e9, 1e9, 1e9, spec.CreditsPerUSD)
	if exact.Cmp(big.NewInt(1<<62)) <= 0 {
		t.Fatalf("test needs a price above 2^62 mc, have %s", exact)
	}
	if got := m.Cost(u, t0); got < 1<<62 {
		t.Errorf("Cost = %d, exact price %s mc does not fit: want a saturated cost ≥ 2^62", got, exact)
	}
	// Just below the limit it is still exact.
	u = pricing.Usage{Output: 4_000_000_000}
	want := usdCost(u, 1e9, 1e9, 1e9, spec.CreditsPerUSD)
	if got := m.Cost(u, t0); !want.IsInt64() || got != want.Int64() {
		t.Errorf("Cost(%+v) = %d, want %s", u, got, want)
	}
}

// The hold is sized from the per-token ceiling rates; the exact price may
// never exceed it.
func TestUSDCostNeverExceedsCeilingRates(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	for _, m := range c.Models() {
		for _, u := range []pricing.Usage{{Input: 1}, {Input: 7, CachedInput: 3, Output: 11}, {Input: 100_000, CachedInput: 50_000, Output: 32_000},
			{CacheWrite: 1}, {CacheWrite1h: 1}, {Input: 3, CachedInput: 5, Output: 7, CacheWrite: 11, CacheWrite1h: 13}} {
			ceil := (u.Input+u.CachedInput+u.CacheWrite+u.CacheWrite1h)*m.Hold.Input + u.Output*m.Hold.Output
			if got := m.Cost(u, t0); got > ceil {
				t.Errorf("%s: Cost(%+v) = %d > ceiling %d", m.ID, u, got, ceil)
			}
		}
	}
}

// packCreditsMC is the spec formula, computed independently:
// credits = price_minor × credits_per_minor × (10000 − fee_bps) / 10000, in mc.
func packCreditsMC(priceMinor, creditsPerUSD, feeBps int64) *big.Int {
	v := new(big.Int).Mul(big.NewInt(priceMinor), big.NewInt(creditsPerUSD))
	v.Mul(v, big.NewInt(pricing.MilliPerCredit))
	v.Mul(v, big.NewInt(10000-feeBps))
	return v.Quo(v, big.NewInt(100*10000)) // /100: per minor unit; /10000: bps
}

func TestPacks(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	tests := []struct {
		key, name  string
		priceCents int64
	}{
		{"starter", "Starter", 999},
		{"growth", "Growth", 2499},
		{"scale", "Scale", 4999},
		{"business", "Business", 9999},
		{"enterprise", "Enterprise", 19999},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			p, err := c.Pack(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			// 100,000 credits per USD = 1000 credits per cent; 5% fee.
			wantCredits := tt.priceCents * 1000 * 9500 / 10000
			if p.Credits != wantCredits*pricing.MilliPerCredit {
				t.Errorf("Credits = %d mc, want %d credits", p.Credits, wantCredits)
			}
			if want := packCreditsMC(tt.priceCents, 100_000, 500); want.Int64() != p.Credits {
				t.Errorf("Credits = %d mc, big formula says %s", p.Credits, want)
			}
			wantFee := (tt.priceCents*500 + 5000) / 10000 // half up
			if p.Key != tt.key || p.Name != tt.name || p.Currency != "usd" || p.PriceMinor != tt.priceCents ||
				p.FeeBps != 500 || p.FeeMinor != wantFee || p.Note != "5% fee applied" {
				t.Errorf("Pack = %+v, want key %s name %s usd price %d fee 500 bps %d minor, note %q",
					p, tt.key, tt.name, tt.priceCents, wantFee, "5% fee applied")
			}
		})
	}
	t.Run("worked examples", func(t *testing.T) {
		for key, credits := range map[string]int64{"starter": 949_050, "growth": 2_374_050} {
			p, _ := c.Pack(key)
			if p.Credits != credits*1000 {
				t.Errorf("%s: %d mc, want %d credits", key, p.Credits, credits)
			}
		}
	})
	t.Run("stated credits", func(t *testing.T) {
		p, err := c.Pack("eur-small")
		if err != nil {
			t.Fatal(err)
		}
		want := pricing.Pack{Key: "eur-small", Name: "Small (EUR)", Currency: "eur", PriceMinor: 500, Credits: 1_000_000 * 1000}
		if p != want {
			t.Errorf("Pack = %+v, want %+v", p, want)
		}
		p, _ = c.Pack("eur-big")
		want = pricing.Pack{Key: "eur-big", Name: "eur-big", Note: "best value", Currency: "eur", PriceMinor: 4550, Credits: 10_000_000 * 1000}
		if p != want {
			t.Errorf("Pack = %+v, want %+v", p, want)
		}
	})
	t.Run("display order", func(t *testing.T) {
		var got []string
		for _, p := range c.Packs() {
			got = append(got, p.Key)
		}
		if want := "starter growth scale business enterprise eur-small eur-big"; strings.Join(got, " ") != want {
			t.Errorf("Packs() order = %v, want %s", got, want)
		}
		// Pack returns the same value as the list holds.
		for _, p := range c.Packs() {
			q, err := c.Pack(p.Key)
			if err != nil || q != p {
				t.Errorf("Pack(%q) = %+v, %v; Packs() has %+v", p.Key, q, err, p)
			}
		}
	})
}

func TestPackFeeVariants(t *testing.T) {
	tests := []struct {
		creditsPerUSD, feeBps int64
		price                 string
		priceMinor            int64
		note                  string
	}{
		{100_000, 0, "24.99", 2499, ""},
		{100_000, 250, "24.99", 2499, "2.5% fee applied"},
		{100_000, 125, "10.00", 1000, "1.25% fee applied"},
		{100_000, 50, "0.01", 1, "0.5% fee applied"},
		{100_000, 1000, "1", 100, "10% fee applied"},
		{1, 500, "0.01", 1, "5% fee applied"}, // 0.0095 credits: 9 mc, rounded down
		{333, 777, "123.45", 12345, "7.77% fee applied"},
		{1_000_000_000, 9999, "1000000.00", 100_000_000, "99.99% fee applied"},
		// price × credits_per_usd exceeds 64 bits although the credits fit.
		{1_000_000_000, 9999, "1000000000.00", 100_000_000_000, "99.99% fee applied"},
		{1_000_000_000, 500, "10000000.00", 1_000_000_000, "5% fee applied"}, // 9.5e18 mc: beyond int64
		{1_000_000_000, 500, "100000000000.00", 10_000_000_000_000, "5% fee applied"},
		{100_000, 500, "40000000000000.00", 4_000_000_000_000_000, "5% fee applied"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d_%d_%s", tt.creditsPerUSD, tt.feeBps, tt.price), func(t *testing.T) {
			spec := defaultSpec()
			spec.CreditsPerUSD, spec.FeeBps = tt.creditsPerUSD, tt.feeBps
			spec.Packs = []pricing.PackSpec{{Key: "p", Price: tt.price}}
			want := packCreditsMC(tt.priceMinor, tt.creditsPerUSD, tt.feeBps)
			c, err := pricing.New(spec)
			if want.Cmp(big.NewInt(1<<62)) > 0 {
				// Too large for the ledger: the catalog must refuse it at load, never wrap.
				if err == nil {
					p, _ := c.Pack("p")
					t.Fatalf("New accepted a pack worth %s mc as %d mc", want, p.Credits)
				}
				if !strings.Contains(err.Error(), "pricing.packs[0]") {
					t.Errorf("error %q lacks the pack's path", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p, _ := c.Pack("p")
			if p.Credits != want.Int64() || p.Note != tt.note || p.FeeBps != tt.feeBps {
				t.Errorf("Pack = %+v, want credits %s note %q", p, want, tt.note)
			}
			if wantFee := (tt.priceMinor*tt.feeBps + 5000) / 10000; p.FeeMinor != wantFee {
				t.Errorf("FeeMinor = %d, want %d", p.FeeMinor, wantFee)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	sonnet := mustModel(t, c, "claude-sonnet")
	for _, name := range []string{"claude-sonnet", "claude-sonnet-4-5", "claude-sonnet-4"} {
		m, err := c.Lookup(name)
		if err != nil || m != sonnet {
			t.Errorf("Lookup(%q) = %p, %v; want %p", name, m, err, sonnet)
		}
		mb, ok := c.LookupBytes([]byte(name))
		if !ok || mb != sonnet {
			t.Errorf("LookupBytes(%q) = %p, %v; want %p", name, mb, ok, sonnet)
		}
	}
	if sonnet.ID != "claude-sonnet" || sonnet.ContextWindow != 200000 || sonnet.MaxOutputTokens != 64000 ||
		len(sonnet.Deployments) != 1 || sonnet.Deployments[0] != (pricing.Deployment{Provider: "anthropic", Model: "claude-sonnet-4-5"}) {
		t.Errorf("claude-sonnet = %+v", sonnet)
	}
	for _, name := range []string{"", "claude", "CLAUDE-SONNET", "claude-sonnet ", "gpt-5"} {
		if m, err := c.Lookup(name); !errors.Is(err, pricing.ErrUnknownModel) || m != nil {
			t.Errorf("Lookup(%q) = %v, %v; want ErrUnknownModel", name, m, err)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
			t.Errorf("Lookup(%q) error %q does not name the model", name, err)
		}
		if m, ok := c.LookupBytes([]byte(name)); ok || m != nil {
			t.Errorf("LookupBytes(%q) = %v, %v", name, m, ok)
		}
	}
	var ids []string
	for _, m := range c.Models() {
		ids = append(ids, m.ID)
	}
	if got := strings.Join(ids, ","); !strings.HasPrefix(got, "gpt-4o-mini,gemini-2.5-flash,claude-sonnet,cached-model,usd-mini") {
		t.Errorf("Models() order = %s", got)
	}
	if c.CreditsPerUSD() != 100_000 || c.FeeBps() != 500 {
		t.Errorf("CreditsPerUSD, FeeBps = %d, %d", c.CreditsPerUSD(), c.FeeBps())
	}
}

func TestLookupBytesDoesNotAllocate(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	name := []byte("claude-sonnet-4-5")
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := c.LookupBytes(name); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("LookupBytes allocates %.1f times per call", allocs)
	}
}

func TestUnknownPack(t *testing.T) {
	c := mustCatalog(t, defaultSpec())
	for _, key := range []string{"", "platinum", "Growth"} {
		p, err := c.Pack(key)
		if !errors.Is(err, pricing.ErrUnknownPack) {
			t.Fatalf("Pack(%q) error = %v, want ErrUnknownPack", key, err)
		}
		if p != (pricing.Pack{}) {
			t.Errorf("Pack(%q) returned %+v with the error", key, p)
		}
		msg := err.Error()
		if !strings.Contains(msg, fmt.Sprintf("%q", key)) {
			t.Errorf("error %q does not name %q", msg, key)
		}
		for _, valid := range c.Packs() {
			if !strings.Contains(msg, valid.Key) {
				t.Errorf("error %q does not list valid pack %q", msg, valid.Key)
			}
		}
	}
}

func TestNewRejects(t *testing.T) {
	dep := []pricing.DeploymentSpec{{Provider: "openai", Model: "m"}}
	tests := []struct {
		name   string
		mutate func(*pricing.Spec)
		paths  []string // each must appear in the error
	}{
		{"zero credits per usd", func(s *pricing.Spec) { s.CreditsPerUSD = 0 }, []string{"pricing.credits_per_usd"}},
		{"huge credits per usd", func(s *pricing.Spec) { s.CreditsPerUSD = 2e9 }, []string{"pricing.credits_per_usd"}},
		{"negative fee", func(s *pricing.Spec) { s.FeeBps = -1 }, []string{"pricing.fee_bps"}},
		{"fee 100%", func(s *pricing.Spec) { s.FeeBps = 10000 }, []string{"pricing.fee_bps"}},
		{"no tiers", func(s *pricing.Spec) { s.Tiers = nil }, []string{"pricing.tiers", "pricing.models[0].tier"}},
		{"huge cached rate", func(s *pricing.Spec) {
			s.Tiers["pro"] = pricing.TierSpec{Input: pricing.Per1K(1), CachedInput: rp(2e6), Output: pricing.Per1K(2)}
		}, []string{"pricing.tiers.pro.cached_input"}},
		{"no models", func(s *pricing.Spec) { s.Models = nil }, []string{"pricing.models"}},
		{"unknown tier", func(s *pricing.Spec) { s.Models[1].Tier = "gold" }, []string{"pricing.models[1].tier", `"gold"`}},
		{"missing id", func(s *pricing.Spec) { s.Models[2].ID = "" }, []string{"pricing.models[2].id"}},
		{"context window", func(s *pricing.Spec) { s.Models[0].ContextWindow = 0 }, []string{"pricing.models[0].context_window"}},
		{"max output", func(s *pricing.Spec) { s.Models[0].MaxOutputTokens = -5 }, []string{"pricing.models[0].max_output_tokens"}},
		{"no deployments", func(s *pricing.Spec) { s.Models[3].Deployments = nil }, []string{"pricing.models[3].deployments"}},
		{"bad deployment", func(s *pricing.Spec) {
			s.Models[3].Deployments = append(dep, pricing.DeploymentSpec{Model: "x"})
		}, []string{"pricing.models[3].deployments[1]"}},
		{"duplicate alias", func(s *pricing.Spec) { s.Models[1].Aliases = []string{"claude-sonnet-4"} }, []string{"pricing.models[2]", `"claude-sonnet-4"`}},
		{"alias equals another id", func(s *pricing.Spec) { s.Models[2].Aliases = []string{"gpt-4o-mini"} }, []string{"pricing.models[2]", `"gpt-4o-mini"`}},
		{"duplicate id", func(s *pricing.Spec) { s.Models[1].ID = "gpt-4o-mini" }, []string{"pricing.models[1]"}},
		{"bad usd price", func(s *pricing.Spec) { s.Models[4].PriceUSD = &pricing.USDPriceSpec{Input: "abc", Output: "1"} }, []string{"pricing.models[4].price_usd", "input"}},
		{"usd too many decimals", func(s *pricing.Spec) { s.Models[4].PriceUSD = &pricing.USDPriceSpec{Input: "0.1234567", Output: "1"} }, []string{"pricing.models[4].price_usd"}},
		{"usd negative", func(s *pricing.Spec) { s.Models[4].PriceUSD = &pricing.USDPriceSpec{Input: "1", Output: "-1"} }, []string{"pricing.models[4].price_usd", "output"}},
		{"usd above 1000", func(s *pricing.Spec) { s.Models[4].PriceUSD = &pricing.USDPriceSpec{Input: "1000.000001", Output: "1"} }, []string{"pricing.models[4].price_usd"}},
		{"usd bad cached", func(s *pricing.Spec) {
			s.Models[4].PriceUSD = &pricing.USDPriceSpec{Input: "1", CachedInput: "x", Output: "1"}
		}, []string{"pricing.models[4].price_usd", "cached_input"}},
		{"usd missing output", func(s *pricing.Spec) { s.Models[4].PriceUSD = &pricing.USDPriceSpec{Input: "1"} }, []string{"pricing.models[4].price_usd", "output"}},
		{"pack without key", func(s *pricing.Spec) { s.Packs[1].Key = "" }, []string{"pricing.packs[1]"}},
		{"pack bad price", func(s *pricing.Spec) { s.Packs[0].Price = "9.999" }, []string{"pricing.packs[0]"}},
		{"pack zero price", func(s *pricing.Spec) { s.Packs[0].Price = "0" }, []string{"pricing.packs[0]"}},
		{"pack negative price", func(s *pricing.Spec) { s.Packs[0].Price = "-5.00" }, []string{"pricing.packs[0]"}},
		{"duplicate pack", func(s *pricing.Spec) { s.Packs[2].Key = "starter" }, []string{"pricing.packs[2].key", `"starter"`}},
		{"non-usd pack without credits", func(s *pricing.Spec) {
			s.Packs = append(s.Packs, pricing.PackSpec{Key: "eur", Price: "5.00", Currency: "eur"})
		}, []string{"pricing.packs[7]", `"eur"`}},
		{"pack zero credits", func(s *pricing.Spec) { s.Packs[5].Credits = i64(0) }, []string{"pricing.packs[5]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := defaultSpec()
			tt.mutate(&spec)
			c, err := pricing.New(spec)
			if err == nil {
				t.Fatal("New accepted a bad spec")
			}
			if c != nil {
				t.Error("New returned a catalog with an error")
			}
			for _, p := range tt.paths {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %s", err, p)
				}
			}
		})
	}
	if _, err := pricing.New(defaultSpec()); err != nil {
		t.Fatalf("the unmodified spec must be valid: %v", err)
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	spec := defaultSpec()
	spec.FeeBps = 10000                                                                                  // 1
	spec.Models[0].ContextWindow = 0                                                                     // 2
	spec.Models[1].Tier = "platinum"                                                                     // 3
	spec.Models[2].Aliases = []string{"gpt-4o-mini-2024-07-18"}                                          // 4: alias of models[0]
	spec.Models[3].Deployments = nil                                                                     // 5
	spec.Packs[0].Price = "abc"                                                                          // 6
	spec.Packs = append(spec.Packs, pricing.PackSpec{Key: "eur-nocredits", Price: "5", Currency: "eur"}) // 7
	_, err := pricing.New(spec)
	if err == nil {
		t.Fatal("New accepted a spec with seven problems")
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not an errors.Join", err)
	}
	errs := joined.Unwrap()
	wantPaths := []string{
		"pricing.fee_bps:",
		"pricing.models[0].context_window:",
		"pricing.models[1].tier:",
		"pricing.models[2]:",
		"pricing.models[3].deployments:",
		"pricing.packs[0]:",
		"pricing.packs[7]:",
	}
	if len(errs) != len(wantPaths) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(wantPaths), err)
	}
	for _, p := range wantPaths {
		n := 0
		for _, e := range errs {
			if strings.HasPrefix(e.Error(), p) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d errors start with %q, want 1:\n%v", n, p, err)
		}
	}
	// Every line of the message carries its path.
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, "pricing.") {
			t.Errorf("error line %q has no YAML path", line)
		}
	}
}

// rp is a stated rate of n whole credits per 1K tokens.
func rp(n int64) *pricing.Rate { r := pricing.Per1K(n); return &r }

// t0 is when test calls are priced: models with one price charge it always.
var t0 time.Time
