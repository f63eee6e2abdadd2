package pricing_test

import (
	"fmt"
	"testing"

	"github.com/tollgate/tollgate/pricing"
)

// A tier model with a book is checked against it: every kind it charges
// less for than the provider's list price (converted) is named, long
// prompts included; a passthrough model, or one without a book, never is.
func TestBelowCost(t *testing.T) {
	spec := bookSpec()
	book := spec.Models[0].PriceBook
	spec.Models = append(spec.Models,
		pricing.ModelSpec{ID: "tiered-book", Tier: "ultra", Mode: pricing.ModeTiers, ContextWindow: 1_000_000, MaxOutputTokens: 1000,
			Deployments: spec.Models[0].Deployments, PriceBook: book},
		pricing.ModelSpec{ID: "tiered-dear", Tier: "ultra", Mode: pricing.ModeTiers, ContextWindow: 1_000_000, MaxOutputTokens: 1000,
			Deployments: spec.Models[0].Deployments, PriceBook: &pricing.PriceBookSpec{Source: "s", Checked: "2025-10-01",
				Prices: []pricing.USDPriceSpec{{Effective: "2025-01-01", Input: "0.05", Output: "0.1"}}}})
	c := mustCatalog(t, spec)
	str := func(ss []pricing.Shortfall) string { return fmt.Sprint(ss) }
	tests := []struct {
		model string
		want  string
	}{
		{"sonnet", "[]"}, // passthrough: charges the book itself
		{"tiered", "[]"}, // no book
		// Dearer than its book but for cache reads, which an unstated book
		// price bills as input (5 credits per 1K).
		{"tiered-dear", "[{cached_input 0.8 5}]"},
		// ultra: 8 / 0.8 / 16 / 10 / 16 credits per 1K, 1,000,000 per 1K
		// searches; the book at 100,000 credits per USD: 300 / 30 / 1500 /
		// 375 / 600, 1,000,000 per 1K searches (not below). Long prompts:
		// the tier's long rates (16 / 24, from 1,000 tokens) against the
		// book's (600 / 60 / 2250 / 750 / 1200).
		{"tiered-book", "[{input 8 300} {cached_input 0.8 30} {output 16 1500} {cache_write 10 375} {cache_write_1h 16 600}" +
			" {long_context.input 16 600} {long_context.cached_input 16 60} {long_context.output 24 2250} {long_context.cache_write 20 750} {long_context.cache_write_1h 32 1200}]"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			if got := str(mustModel(t, c, tt.model).BelowCost(day2025)); got != tt.want {
				t.Fatalf("BelowCost = %s\nwant %s", got, tt.want)
			}
		})
	}
}
