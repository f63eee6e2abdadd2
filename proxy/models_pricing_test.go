package proxy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pricing"
)

// TestModelsShowPriceBook: a passthrough model's listing shows the rates in
// force (exact decimals), its long-context card, every dated price with its
// source, and is rendered again once a scheduled price comes into force.
func TestModelsShowPriceBook(t *testing.T) {
	c, err := pricing.New(pricing.Spec{
		CreditsPerUSD: 100_000,
		Tiers:         map[string]pricing.TierSpec{"ultra": {Input: pricing.Per1K(8), Output: pricing.Per1K(16)}},
		Models: []pricing.ModelSpec{{ID: "sonnet", Tier: "ultra", Mode: pricing.ModePassthrough, ContextWindow: 1000, MaxOutputTokens: 10,
			Deployments: []pricing.DeploymentSpec{{Provider: "anthropic", Model: "m"}},
			PriceBook: &pricing.PriceBookSpec{Source: "https://example.com/pricing", Checked: "2025-10-01", Prices: []pricing.USDPriceSpec{
				{Effective: "2025-01-01", Input: "3", CachedInput: "0.30", Output: "15", WebSearch: "10",
					LongContext: &pricing.USDLongContextSpec{Above: 200000, Input: "6", Output: "22.50"}},
				{Effective: "2026-01-01", Input: "0.0015", Output: "7.5"},
			}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC)
	mb := renderModels(c, before)
	if want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); !mb.next.Equal(want) {
		t.Fatalf("next render at %s, want %s", mb.next, want)
	}
	type rates struct {
		Input       json.Number `json:"input"`
		CachedInput json.Number `json:"cached_input"`
		Output      json.Number `json:"output"`
		WebSearch   json.Number `json:"web_search"`
	}
	var m struct {
		Pricing struct {
			Mode string `json:"mode"`
			rates
			Long *struct {
				Above int64 `json:"above_input_tokens"`
				rates
			} `json:"long_context"`
			Source string `json:"source"`
			Prices []struct {
				Effective string `json:"effective"`
				rates
			} `json:"prices"`
		} `json:"pricing"`
	}
	one := mb.one[c.Models()[0]][shapeOpenAI]
	if err := json.Unmarshal(one, &m); err != nil {
		t.Fatalf("%v: %s", err, one)
	}
	p := m.Pricing
	if p.Mode != "passthrough" || p.Input != "300" || p.CachedInput != "30" || p.Output != "1500" || p.WebSearch != "1000000" ||
		p.Long == nil || p.Long.Above != 200000 || p.Long.Input != "600" || p.Long.Output != "2250" ||
		p.Source != "https://example.com/pricing" || len(p.Prices) != 2 || p.Prices[1].Effective != "2026-01-01" || p.Prices[1].Input != "0.15" {
		t.Fatalf("listing: %s", one)
	}
	after := renderModels(c, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m.Pricing.Long = nil // json leaves absent members as they were
	if err := json.Unmarshal(after.one[c.Models()[0]][shapeOpenAI], &m); err != nil {
		t.Fatal(err)
	}
	if m.Pricing.Input != "0.15" || m.Pricing.Output != "750" || m.Pricing.Long != nil || !after.next.IsZero() {
		t.Fatalf("after the change: %s (next %s)", after.one[c.Models()[0]][shapeOpenAI], after.next)
	}
}
