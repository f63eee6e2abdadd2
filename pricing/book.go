package pricing

import (
	"errors"
	"fmt"
	"time"
)

// PriceBookSpec is a model's provider price list: where it is published,
// when it was last read there, and its prices with their effective dates.
type PriceBookSpec struct {
	Source  string         `yaml:"source"`  // the provider's pricing page
	Checked string         `yaml:"checked"` // YYYY-MM-DD the prices were read there
	Prices  []USDPriceSpec `yaml:"prices"`  // in effective order
}

// USDPriceSpec is a provider price: USD per 1M tokens for every kind of
// token, USD per 1K searches for web search, as decimal strings with at most
// six decimals ("0.15").
type USDPriceSpec struct {
	// Effective is the day (YYYY-MM-DD, from 00:00 UTC) the price applies
	// from; in a price book every price has one, in increasing order.
	Effective   string `yaml:"effective"`
	Input       string `yaml:"input"`
	CachedInput string `yaml:"cached_input"` // defaults to Input
	Output      string `yaml:"output"`
	// CacheWrite defaults to 1.25 × Input (rounded up to a micro-USD per 1M
	// tokens), CacheWrite1h to 2 × Input: Anthropic's multipliers.
	CacheWrite   string `yaml:"cache_write"`
	CacheWrite1h string `yaml:"cache_write_1h"`
	// WebSearch is USD per 1K provider-side web searches ("10.00").
	WebSearch   string              `yaml:"web_search"`
	LongContext *USDLongContextSpec `yaml:"long_context"`
}

// USDLongContextSpec is a provider's price for calls whose prompt is more
// than Above tokens, applied to the whole call; unstated kinds default from
// its Input as a price's do.
type USDLongContextSpec struct {
	Above        int64  `yaml:"above"`
	Input        string `yaml:"input"`
	CachedInput  string `yaml:"cached_input"`
	Output       string `yaml:"output"`
	CacheWrite   string `yaml:"cache_write"`
	CacheWrite1h string `yaml:"cache_write_1h"`
}

// maxUSDMicros caps a provider price: 1000 USD per 1M tokens or per 1K searches.
const maxUSDMicros = 1000 * 1_000_000

// dateLayout is the effective and checked dates' form.
const dateLayout = "2006-01-02"

// priceBook converts a book's prices; problems go to errs under path.
func (c *Catalog) priceBook(errs *problems, path string, b *PriceBookSpec) []Price {
	if b.Source == "" {
		errs.add(path+".source", "is required: where the provider publishes these prices")
	}
	if _, err := time.Parse(dateLayout, b.Checked); err != nil {
		errs.add(path+".checked", "must be the date the prices were read (YYYY-MM-DD), got %q", b.Checked)
	}
	if len(b.Prices) == 0 {
		errs.add(path+".prices", "at least one price is required")
	}
	var out []Price
	for i := range b.Prices {
		pp := fmt.Sprintf("%s.prices[%d]", path, i)
		from, err := time.Parse(dateLayout, b.Prices[i].Effective)
		if err != nil {
			errs.add(pp+".effective", "must be a date (YYYY-MM-DD), got %q", b.Prices[i].Effective)
			continue
		}
		if len(out) > 0 && !from.After(out[len(out)-1].From) {
			errs.add(pp+".effective", "%s is not after the previous price's %s", b.Prices[i].Effective,
				out[len(out)-1].From.Format(dateLayout))
			continue
		}
		p, ok := c.usdPrice(errs, pp, &b.Prices[i])
		if !ok {
			continue
		}
		p.From = from
		out = append(out, p)
	}
	return out
}

// usdPrice converts one provider price at the catalog's credits per USD.
func (c *Catalog) usdPrice(errs *problems, path string, s *USDPriceSpec) (Price, bool) {
	if c.creditsPerUSD <= 0 || c.creditsPerUSD > 1e9 {
		return Price{}, false // reported at credits_per_usd
	}
	cpu := uint64(c.creditsPerUSD)
	n := len(*errs)
	r := usdRates(errs, path, cpu, s.Input, s.CachedInput, s.Output, s.CacheWrite, s.CacheWrite1h)
	if s.WebSearch != "" {
		// µUSD per 1K searches × 10⁻⁹ USD … : one search costs µUSD × cpu × 1000 units.
		if v, ok := usdMicros(errs, path+".web_search", s.WebSearch); ok {
			if r.WebSearch, ok = (Rate{n: v}).mulCeil(cpu*1000, 1); !ok {
				errs.add(path+".web_search", "%q at %d credits per USD is past the largest fee", s.WebSearch, cpu)
			}
		}
	}
	p := Price{Rates: r}
	if l := s.LongContext; l != nil {
		lp := path + ".long_context"
		if l.Above <= 0 || l.Above > maxTokens {
			errs.add(lp+".above", "must be a positive number of input tokens, got %d", l.Above)
		}
		lr := usdRates(errs, lp, cpu, l.Input, l.CachedInput, l.Output, l.CacheWrite, l.CacheWrite1h)
		lr.WebSearch = r.WebSearch
		p.Long = &LongContext{Above: l.Above, Rates: lr}
	}
	return p, len(*errs) == n
}

// usdRates converts USD-per-1M token prices into rates: p µUSD per 1M tokens
// at cpu credits per USD is exactly p × cpu units (see rateScale).
func usdRates(errs *problems, path string, cpu uint64, in, cached, out, cw, cw1h string) Rates {
	conv := func(micros uint64) Rate { return Rate{n: micros * cpu} } // ≤ 1e9 × 1e9: fits
	vIn, _ := usdMicros(errs, path+".input", in)
	vOut, _ := usdMicros(errs, path+".output", out)
	r := Rates{Input: conv(vIn), Output: conv(vOut), CachedInput: conv(vIn),
		CacheWrite: conv((5*vIn + 3) / 4), CacheWrite1h: conv(2 * vIn)} // ≤ 2e9 µUSD × 1e9 < 2^64
	for _, o := range [...]struct {
		name, v string
		dst     *Rate
	}{{"cached_input", cached, &r.CachedInput}, {"cache_write", cw, &r.CacheWrite}, {"cache_write_1h", cw1h, &r.CacheWrite1h}} {
		if o.v == "" {
			continue
		}
		if v, ok := usdMicros(errs, path+"."+o.name, o.v); ok {
			*o.dst = conv(v)
		}
	}
	return r
}

var errUSDRange = errors.New("out of range [0, 1000]")

// usdMicros parses a USD amount with at most six decimals into micro-USD.
func usdMicros(errs *problems, path, v string) (uint64, bool) {
	if v == "" {
		errs.add(path, "is required (USD)")
		return 0, false
	}
	n, err := parseDecimal(v, 6)
	if err == nil && (n < 0 || n > maxUSDMicros) {
		err = errUSDRange
	}
	if err != nil {
		errs.add(path, "%q: %v", v, err)
		return 0, false
	}
	return uint64(n), true
}
