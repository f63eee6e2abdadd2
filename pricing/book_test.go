package pricing_test

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate/tollgate/pricing"
)

// bookSpec has a passthrough catalog: a dated book with a scheduled change,
// a long-context price and web search fees, and a tier model in it.
func bookSpec() pricing.Spec {
	dep := []pricing.DeploymentSpec{{Provider: "anthropic", Model: "m"}}
	return pricing.Spec{
		CreditsPerUSD: 100_000,
		Mode:          pricing.ModePassthrough,
		Tiers: map[string]pricing.TierSpec{
			"ultra": {Input: pricing.Per1K(8), CachedInput: pricing.MustRate("0.8").Ptr(), Output: pricing.Per1K(16),
				WebSearch:   pricing.Per1K(1_000_000).Ptr(),
				LongContext: &pricing.LongContextSpec{Above: 1000, Input: pricing.Per1K(16), Output: pricing.Per1K(24)}},
		},
		Models: []pricing.ModelSpec{
			{ID: "sonnet", Tier: "ultra", ContextWindow: 1_000_000, MaxOutputTokens: 64000, Deployments: dep,
				PriceBook: &pricing.PriceBookSpec{Source: "https://docs.claude.com/en/docs/about-claude/pricing", Checked: "2025-10-01",
					Prices: []pricing.USDPriceSpec{
						{Effective: "2025-01-01", Input: "3", CachedInput: "0.30", Output: "15", CacheWrite: "3.75", CacheWrite1h: "6", WebSearch: "10",
							LongContext: &pricing.USDLongContextSpec{Above: 200_000, Input: "6", CachedInput: "0.60", Output: "22.50", CacheWrite: "7.50", CacheWrite1h: "12"}},
						{Effective: "2026-01-01", Input: "1.5", Output: "7.5"}, // a scheduled cut
					}}},
			{ID: "tiered", Tier: "ultra", Mode: pricing.ModeTiers, ContextWindow: 200_000, MaxOutputTokens: 1000, Deployments: dep},
		},
	}
}

var (
	day2025 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	day2026 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // the change's first instant
)

func TestPriceBook(t *testing.T) {
	c := mustCatalog(t, bookSpec())
	m := mustModel(t, c, "sonnet")
	if m.Mode != pricing.ModePassthrough || !m.PricedByUSD() || m.Source == "" || m.Checked != "2025-10-01" || len(m.Prices) != 2 {
		t.Fatalf("model %+v", m)
	}
	// $3/1M at 100,000 credits per USD = 300 credits per 1K = 300 mc a token.
	tests := []struct {
		name string
		u    pricing.Usage
		at   time.Time
		want int64
	}{
		{"every kind at its own rate", pricing.Usage{Input: 21, CachedInput: 2047, CacheWrite: 188, CacheWrite1h: 100, Output: 393}, day2025,
			21*300 + 2047*30 + 188*375 + 100*600 + 393*1500},
		{"web searches at 10 USD per 1K (1,000 credits each)", pricing.Usage{Input: 10, WebSearch: 3}, day2025, 10*300 + 3*1_000_000},
		// 200,000 prompt tokens are not past the threshold; 200,001 are, and
		// then every kind of the call is at the long-context rates.
		{"at the threshold", pricing.Usage{Input: 100_000, CachedInput: 50_000, CacheWrite: 50_000, Output: 10}, day2025,
			100_000*300 + 50_000*30 + 50_000*375 + 10*1500},
		{"past the threshold, whole call", pricing.Usage{Input: 100_001, CachedInput: 50_000, CacheWrite: 50_000, Output: 10, WebSearch: 1}, day2025,
			100_001*600 + 50_000*60 + 50_000*750 + 10*2250 + 1_000_000},
		{"before the first price: the first", pricing.Usage{Input: 1}, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), 300},
		{"the scheduled price from its day", pricing.Usage{Input: 1, Output: 1}, day2026, 150 + 750},
		{"the old price until then", pricing.Usage{Input: 1, Output: 1}, day2026.Add(-time.Nanosecond), 300 + 1500},
		// Later price without long-context or search prices: none apply.
		{"the new price has no long context", pricing.Usage{Input: 300_000}, day2026, 300_000 * 150},
		// Fractional mc: 0.15 USD per 1M of cached input in 2026 (default = input 1.5 → 150 mc).
		{"one cached token", pricing.Usage{CachedInput: 1}, day2026, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.Cost(tt.u, tt.at); got != tt.want {
				t.Errorf("Cost(%+v, %s) = %d, want %d", tt.u, tt.at, got, tt.want)
			}
		})
	}
	// The hold covers the dearest price that may apply: long-context
	// 1-hour writes (12 USD = 1200 mc) and output (22.50 = 2250 mc).
	if want := (pricing.HoldRates{Input: 1200, Output: 2250, WebSearch: 1_000_000}); m.Hold != want {
		t.Errorf("Hold = %+v, want %+v", m.Hold, want)
	}
}

func TestTierFractionalLongContextAndSearch(t *testing.T) {
	c := mustCatalog(t, bookSpec())
	m := mustModel(t, c, "tiered")
	if m.PricedByUSD() || m.Mode != pricing.ModeTiers {
		t.Fatalf("mode %q", m.Mode)
	}
	for _, tt := range []struct {
		u    pricing.Usage
		want int64
	}{
		{pricing.Usage{CachedInput: 1}, 1},                           // 0.8 mc, rounded up once
		{pricing.Usage{CachedInput: 10}, 8},                          // exactly 8
		{pricing.Usage{CachedInput: 11, Input: 1}, 17},               // 8.8 + 8 = 16.8 → 17
		{pricing.Usage{WebSearch: 2}, 2_000_000},                     // 1,000,000 credits per 1K searches
		{pricing.Usage{Input: 1000, Output: 1}, 8016},                // at the threshold: base
		{pricing.Usage{Input: 1001, Output: 1}, 16_040},              // past it: 16 and 24, whole call
		{pricing.Usage{Input: 990, CachedInput: 11}, 990*16 + 11*16}, // long context: cached defaults to its input
	} {
		if got := m.Cost(tt.u, t0); got != tt.want {
			t.Errorf("Cost(%+v) = %d, want %d", tt.u, got, tt.want)
		}
	}
	if want := (pricing.HoldRates{Input: 32, Output: 24, WebSearch: 1_000_000}); m.Hold != want {
		t.Errorf("Hold = %+v, want %+v", m.Hold, want) // long 1h writes: 2 × 16
	}
}

// A bad price table fails at load, every problem with its YAML path.
func TestPriceBookRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*pricing.Spec)
		paths  []string
	}{
		{"no source", func(s *pricing.Spec) { s.Models[0].PriceBook.Source = "" }, []string{"pricing.models[0].price_book.source"}},
		{"bad checked date", func(s *pricing.Spec) { s.Models[0].PriceBook.Checked = "yesterday" }, []string{"pricing.models[0].price_book.checked"}},
		{"undated price", func(s *pricing.Spec) { s.Models[0].PriceBook.Prices[1].Effective = "" }, []string{"pricing.models[0].price_book.prices[1].effective"}},
		{"dates out of order", func(s *pricing.Spec) { s.Models[0].PriceBook.Prices[1].Effective = "2025-01-01" },
			[]string{"pricing.models[0].price_book.prices[1].effective", "not after"}},
		{"bad usd", func(s *pricing.Spec) { s.Models[0].PriceBook.Prices[0].Output = "1e3" }, []string{"pricing.models[0].price_book.prices[0].output"}},
		{"missing input", func(s *pricing.Spec) { s.Models[0].PriceBook.Prices[1].Input = "" }, []string{"pricing.models[0].price_book.prices[1].input"}},
		{"bad long context", func(s *pricing.Spec) { s.Models[0].PriceBook.Prices[0].LongContext.Above = 0 },
			[]string{"pricing.models[0].price_book.prices[0].long_context.above"}},
		{"bad web search", func(s *pricing.Spec) { s.Models[0].PriceBook.Prices[0].WebSearch = "-1" }, []string{"pricing.models[0].price_book.prices[0].web_search"}},
		{"passthrough without a book", func(s *pricing.Spec) { s.Models[1].Mode = "" }, []string{"pricing.models[1].price_book", "passthrough"}},
		{"unknown mode", func(s *pricing.Spec) { s.Mode = "cheap"; s.Models[1].Mode = "free" }, []string{"pricing.mode", "pricing.models[1].mode"}},
		{"override on passthrough", func(s *pricing.Spec) { s.Models[0].WebSearch = pricing.Per1K(1).Ptr() }, []string{"pricing.models[0].web_search"}},
		{"both forms", func(s *pricing.Spec) { s.Models[0].PriceUSD = &pricing.USDPriceSpec{Input: "1", Output: "1"} }, []string{"pricing.models[0].price_usd"}},
		{"tier long context without threshold", func(s *pricing.Spec) {
			tier := s.Tiers["ultra"]
			tier.LongContext = &pricing.LongContextSpec{Input: pricing.Per1K(1)}
			s.Tiers["ultra"] = tier
		}, []string{"pricing.tiers.ultra.long_context.above"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := bookSpec()
			tt.mutate(&spec)
			c, err := pricing.New(spec)
			if err == nil || c != nil {
				t.Fatalf("New accepted a bad spec")
			}
			for _, p := range tt.paths {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %s", err, p)
				}
			}
		})
	}
}

// Rates are read from YAML text exactly, integers and decimals alike, and
// refused when negative, too precise or not a number.
func TestRateYAML(t *testing.T) {
	var ok struct {
		A pricing.Rate  `yaml:"a"`
		B *pricing.Rate `yaml:"b"`
		C pricing.Rate  `yaml:"c"`
		D pricing.Rate  `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("a: 8\nb: 0.1\nc: \"3.75\"\nd: 0.000000001\n"), &ok); err != nil {
		t.Fatal(err)
	}
	if ok.A != pricing.Per1K(8) || ok.B == nil || ok.B.String() != "0.1" || ok.C.String() != "3.75" || ok.D.String() != "0.000000001" {
		t.Fatalf("decoded %+v %v", ok, ok.B)
	}
	for _, bad := range []string{"a: -1", "a: 0.0000000001", "a: 1e3", "a: ten", "a: 2000000000"} {
		var v struct {
			A pricing.Rate `yaml:"a"`
		}
		if err := yaml.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%q accepted as %s", bad, v.A)
		}
	}
	if got := pricing.MustRate("0.375").CeilMilli(); got != 1 {
		t.Errorf("CeilMilli(0.375) = %d", got)
	}
	if got := string(pricing.MustRate("12.3400").AppendDecimal(nil)); got != "12.34" {
		t.Errorf("AppendDecimal = %q", got)
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"0", "8", "0.1", "3.75", "1000000000", "-1", "1.", ".5", "0.000000001", "１"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := pricing.ParseRate(s)
		if err != nil {
			return
		}
		back, err := pricing.ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("%q → %s → %v, %v", s, r, back, err)
		}
		if r.CeilMilli() < 0 {
			t.Fatalf("%q: negative ceiling", s)
		}
	})
}
