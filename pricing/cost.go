package pricing

import (
	"math/bits"
	"time"
)

// Rates are a price for every kind of usage, each a Rate (credits per 1K
// tokens; WebSearch per 1K uses).
type Rates struct {
	Input        Rate `json:"input"`
	CachedInput  Rate `json:"cached_input"`   // input read from the provider's prompt cache
	Output       Rate `json:"output"`         // output, reasoning included
	CacheWrite   Rate `json:"cache_write"`    // input written to the prompt cache (5 minutes)
	CacheWrite1h Rate `json:"cache_write_1h"` // input written to the prompt cache for 1 hour
	// WebSearch is the fee for one provider-side web search (OpenAI's
	// web_search calls, Anthropic's server_tool_use.web_search_requests), as
	// credits per 1K searches.
	WebSearch Rate `json:"web_search"`
}

// MaxInput is the dearest input-side rate: what an input token may cost
// before the provider says whether it was read, cached or written to a cache.
func (r Rates) MaxInput() Rate {
	return maxOf(r.Input, r.CachedInput, r.CacheWrite, r.CacheWrite1h)
}

// LongContext is a model's price for long requests: a call whose prompt
// (every input token: uncached, read from and written to the cache) is more
// than Above tokens is priced at Rates as a whole, as providers bill it.
type LongContext struct {
	Above int64
	Rates Rates
}

// Price is what a model costs from a date on.
type Price struct {
	// From is when the price applies (00:00 UTC of its effective date); the
	// zero time for a price that always applied.
	From  time.Time
	Rates Rates
	Long  *LongContext // nil: no long-context price
}

// rates is the price's rates for usage u: the long-context ones when u's
// prompt is past their threshold.
func (p *Price) rates(u *Usage) *Rates {
	if p.Long != nil && u.prompt() > p.Long.Above {
		return &p.Long.Rates
	}
	return &p.Rates
}

// HoldRates are the most a token or a use of the model can cost, in whole
// milli-credits rounded up: the dearest of every price it has (today's and
// any scheduled) and of their long-context rates. A hold sized at them
// covers the call whatever the provider reports and whenever it settles.
type HoldRates struct {
	Input     int64 // mc per input token of any kind (Rates.MaxInput)
	Output    int64 // mc per output token
	WebSearch int64 // mc per provider-side web search
}

// Model modes: how a model is priced.
const (
	ModeTiers       = "tiers"       // its tier's rates (credits per 1K tokens)
	ModePassthrough = "passthrough" // its provider's published USD prices, converted
)

// Model is a priced public model. It is immutable once built.
type Model struct {
	ID              string
	Aliases         []string
	Tier            string
	Mode            string // ModeTiers or ModePassthrough
	ContextWindow   int64
	MaxOutputTokens int64
	// OutputLimitField is the chat field for a gateway-set output limit ("" = max_tokens).
	OutputLimitField string
	Deployments      []Deployment
	// Prices in effective order (at least one); a passthrough model's are
	// its price book's, converted at the catalog's credits per USD.
	Prices []Price
	// Book is the provider's published prices from the model's price_book,
	// converted, whatever its mode (nil without one): what BelowCost
	// compares a tier's rates with.
	Book []Price
	// Source and Checked are where a passthrough model's prices are
	// published and when they were last read there ("" for tiers).
	Source, Checked string
	// Hold is the dearest a token or a use can cost (see HoldRates).
	Hold HoldRates
}

// Usage is what a call consumed, normalised across providers.
type Usage struct {
	Input        int64 // uncached input tokens, cache writes excluded
	CachedInput  int64 // input tokens read from the provider's prompt cache
	Output       int64 // output tokens, reasoning tokens included
	CacheWrite   int64 // input tokens written to the prompt cache (5 minutes)
	CacheWrite1h int64 // input tokens written to the prompt cache for 1 hour
	WebSearch    int64 // provider-side web searches run for the call
}

// prompt is every input token of u, however priced: what long-context
// thresholds compare.
func (u *Usage) prompt() int64 {
	return clampTokens(u.Input) + clampTokens(u.CachedInput) + clampTokens(u.CacheWrite) + clampTokens(u.CacheWrite1h)
}

// PriceAt is the price in force at t: the last whose From is not after t
// (the first when t is before them all).
func (m *Model) PriceAt(t time.Time) *Price { return priceAt(m.Prices, t) }

// priceAt is the price of ps (in effective order, at least one) in force at t.
func priceAt(ps []Price, t time.Time) *Price {
	p := &ps[0]
	for i := 1; i < len(ps); i++ {
		if ps[i].From.After(t) {
			break
		}
		p = &ps[i]
	}
	return p
}

// Cost returns the exact price of u in milli-credits at the price in force
// at t. Every kind is priced at its own rate, the long-context rates apply to
// the whole call when its prompt is past their threshold, and the sum is
// rounded up to a whole milli-credit once. Negative counts are treated as
// zero; a total past the ledger's range saturates, never wraps.
func (m *Model) Cost(u Usage, t time.Time) int64 {
	r := m.PriceAt(t).rates(&u)
	// Each product is < 2^40 × 2^60; six of them sum inside 128 bits.
	var hi, lo uint64
	for _, k := range [6]struct {
		n int64
		r Rate
	}{{u.Input, r.Input}, {u.CachedInput, r.CachedInput}, {u.Output, r.Output},
		{u.CacheWrite, r.CacheWrite}, {u.CacheWrite1h, r.CacheWrite1h}, {u.WebSearch, r.WebSearch}} {
		h, l := bits.Mul64(uint64(clampTokens(k.n)), k.r.n)
		var carry uint64
		lo, carry = bits.Add64(lo, l, 0)
		hi += h + carry
	}
	if hi >= rateScale {
		return maxCost
	}
	q, rem := bits.Div64(hi, lo, rateScale)
	if rem != 0 {
		q++
	}
	if q > maxCost {
		return maxCost
	}
	return int64(q)
}

// PricedByUSD reports whether the model uses its provider's prices.
func (m *Model) PricedByUSD() bool { return m.Mode == ModePassthrough }

// holdRates is the dearest of every price and long-context rate of ps.
func holdRates(ps []Price) HoldRates {
	var h HoldRates
	take := func(r *Rates) {
		h.Input = max(h.Input, r.MaxInput().CeilMilli())
		h.Output = max(h.Output, r.Output.CeilMilli())
		h.WebSearch = max(h.WebSearch, r.WebSearch.CeilMilli())
	}
	for i := range ps {
		take(&ps[i].Rates)
		if ps[i].Long != nil {
			take(&ps[i].Long.Rates)
		}
	}
	return h
}

func clampTokens(n int64) int64 {
	switch {
	case n < 0:
		return 0
	case n > maxTokens:
		return maxTokens
	}
	return n
}
