package pricing

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Spec is the catalog as written in configuration. Field names are the YAML
// keys under `pricing:` in configs/tollgate.yaml.
type Spec struct {
	// CreditsPerUSD converts provider USD prices and USD packs into credits.
	CreditsPerUSD int64 `yaml:"credits_per_usd"`
	// FeeBps is the processing fee on purchases, in basis points (500 = 5%).
	FeeBps int64 `yaml:"fee_bps"`
	// Tiers maps a tier name to its rates in credits per 1K tokens.
	Tiers map[string]TierSpec `yaml:"tiers"`
	// Models lists the public models, in the order /v1/models shows them.
	Models []ModelSpec `yaml:"models"`
	// Packs lists the credit packs on sale, in display order.
	Packs []PackSpec `yaml:"packs"`
}

// TierSpec holds a tier's rates in whole credits per 1K tokens.
type TierSpec struct {
	Input int64 `yaml:"input"`
	// CachedInput defaults to Input when absent.
	CachedInput *int64 `yaml:"cached_input"`
	Output      int64  `yaml:"output"`
	// CacheWrite prices input written to a provider's prompt cache for 5
	// minutes (Anthropic: 1.25 × input). Absent, it is ⌈1.25 × Input⌉: rates
	// are whole credits per 1K tokens, so a fractional multiple rounds up.
	CacheWrite *int64 `yaml:"cache_write"`
	// CacheWrite1h prices input cached for 1 hour (Anthropic: 2 × input).
	// Absent, it is 2 × Input.
	CacheWrite1h *int64 `yaml:"cache_write_1h"`
}

// ModelSpec is one public model.
type ModelSpec struct {
	ID              string   `yaml:"id"`
	Aliases         []string `yaml:"aliases"`
	Tier            string   `yaml:"tier"`
	ContextWindow   int64    `yaml:"context_window"`
	MaxOutputTokens int64    `yaml:"max_output_tokens"`
	// OutputLimitField is the chat field the gateway uses when it must set an
	// output limit the client did not: "max_tokens" (default) or
	// "max_completion_tokens" (OpenAI reasoning models refuse max_tokens).
	OutputLimitField string           `yaml:"output_limit_field"`
	Deployments      []DeploymentSpec `yaml:"deployments"`
	// PriceUSD, when set, overrides the tier rates with the provider's price.
	PriceUSD *USDPriceSpec `yaml:"price_usd"`
	// CacheWrite and CacheWrite1h, when set, override the tier's cache-write
	// rates (credits per 1K tokens) for this model. A model priced by
	// PriceUSD states them in price_usd instead.
	CacheWrite   *int64 `yaml:"cache_write"`
	CacheWrite1h *int64 `yaml:"cache_write_1h"`
}

// DeploymentSpec names a provider and the provider's own model name.
type DeploymentSpec struct {
	Provider string `yaml:"provider"`
	Model    string `yaml:"model"`
}

// USDPriceSpec is a provider price in USD per 1M tokens, as decimal strings
// with at most six decimals ("0.15").
type USDPriceSpec struct {
	Input       string `yaml:"input"`
	CachedInput string `yaml:"cached_input"`
	Output      string `yaml:"output"`
	// CacheWrite defaults to 1.25 × Input (rounded up to a micro-USD per 1M
	// tokens), CacheWrite1h to 2 × Input: Anthropic's multipliers.
	CacheWrite   string `yaml:"cache_write"`
	CacheWrite1h string `yaml:"cache_write_1h"`
}

// PackSpec is one credit pack.
type PackSpec struct {
	Key      string `yaml:"key"`
	Name     string `yaml:"name"`
	Price    string `yaml:"price"`    // decimal in the currency's major unit: "24.99"
	Currency string `yaml:"currency"` // ISO 4217, lower case; default usd
	// Credits states the pack's credits outright (no fee); otherwise they are
	// derived from the price at CreditsPerUSD less FeeBps (USD only).
	Credits *int64 `yaml:"credits"`
	Note    string `yaml:"note"`
}

// Rates are milli-credits per token (= credits per 1K tokens).
type Rates struct {
	Input        int64 `json:"input"`
	CachedInput  int64 `json:"cached_input"`
	Output       int64 `json:"output"`
	CacheWrite   int64 `json:"cache_write"`    // input written to the prompt cache (5 minutes)
	CacheWrite1h int64 `json:"cache_write_1h"` // input written to the prompt cache for 1 hour
}

// MaxInput is the dearest input-side rate: what an input token may cost
// before the provider says whether it was read, cached or written to a cache.
// Holds price their input estimate at it.
func (r Rates) MaxInput() int64 {
	return max(r.Input, r.CachedInput, r.CacheWrite, r.CacheWrite1h)
}

// Tier is a named rate card.
type Tier struct {
	Name  string
	Rates Rates
}

// Deployment is where a model is served: a provider and its model name.
type Deployment struct {
	Provider string
	Model    string
}

// Model is a priced public model. It is immutable once built.
type Model struct {
	ID              string
	Aliases         []string
	Tier            string
	Rates           Rates // effective per-token ceiling rates (tier, or USD converted, rounded up)
	ContextWindow   int64
	MaxOutputTokens int64
	// OutputLimitField is the chat field for a gateway-set output limit ("" = max_tokens).
	OutputLimitField string
	Deployments      []Deployment

	usd *usdRates // nil: priced by tier
}

type usdRates struct {
	input, cachedInput, output, cacheWrite, cacheWrite1h uint64 // micro-USD per 1M tokens
	creditsPerUSD                                        uint64
}

// Usage is what a call consumed, normalised across providers.
type Usage struct {
	Input        int64 // uncached input tokens, cache writes excluded
	CachedInput  int64 // input tokens read from the provider's prompt cache
	Output       int64 // output tokens, reasoning tokens included
	CacheWrite   int64 // input tokens written to the prompt cache (5 minutes)
	CacheWrite1h int64 // input tokens written to the prompt cache for 1 hour
}

// Pack is a credit pack on sale.
type Pack struct {
	Key        string
	Name       string
	Note       string
	Currency   string
	PriceMinor int64 // what the buyer pays, in minor units
	FeeBps     int64
	FeeMinor   int64 // the processing fee inside PriceMinor, rounded half up
	Credits    int64 // milli-credits the pack buys
}

// Catalog is the immutable, validated price list.
type Catalog struct {
	creditsPerUSD int64
	feeBps        int64
	tiers         map[string]Tier
	models        []*Model
	byName        map[string]*Model
	packs         []Pack
	byPack        map[string]*Pack
}

// Errors reported by lookups.
var (
	ErrUnknownModel = errors.New("pricing: unknown model")
	ErrUnknownPack  = errors.New("pricing: unknown pack")
)

// maxRate caps a tier rate (credits per 1K tokens = mc per token): five
// kinds of at most maxTokens tokens at it sum inside 63 bits.
const maxRate = 1e6

// maxUSDMicros caps a provider price (1000 USD per 1M tokens) so that cost
// sums stay inside 64 bits.
const maxUSDMicros = 1000 * 1_000_000

// New validates spec and builds a Catalog. It reports every problem at once,
// each prefixed with its YAML path below `pricing`.
func New(spec Spec) (*Catalog, error) {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("pricing.%s: %s", path, fmt.Sprintf(format, args...)))
	}
	c := &Catalog{
		creditsPerUSD: spec.CreditsPerUSD,
		feeBps:        spec.FeeBps,
		tiers:         make(map[string]Tier, len(spec.Tiers)),
		byName:        make(map[string]*Model),
		byPack:        make(map[string]*Pack),
	}
	if spec.CreditsPerUSD <= 0 || spec.CreditsPerUSD > 1e9 {
		bad("credits_per_usd", "must be between 1 and 1e9, got %d", spec.CreditsPerUSD)
	}
	if spec.FeeBps < 0 || spec.FeeBps >= 10000 {
		bad("fee_bps", "must be in [0, 10000), got %d", spec.FeeBps)
	}
	if len(spec.Tiers) == 0 {
		bad("tiers", "at least one tier is required")
	}
	for _, name := range sortedKeys(spec.Tiers) {
		t := spec.Tiers[name]
		r := Rates{Input: t.Input, CachedInput: t.Input, Output: t.Output,
			CacheWrite: (5*t.Input + 3) / 4, CacheWrite1h: 2 * t.Input}
		if t.CachedInput != nil {
			r.CachedInput = *t.CachedInput
		}
		if t.CacheWrite != nil {
			r.CacheWrite = *t.CacheWrite
		}
		if t.CacheWrite1h != nil {
			r.CacheWrite1h = *t.CacheWrite1h
		}
		for _, f := range r.fields() {
			if f.v < 0 || f.v > maxRate {
				bad("tiers."+name+"."+f.name, "rate must be between 0 and 1e6 credits per 1K tokens, got %d", f.v)
			}
		}
		c.tiers[name] = Tier{Name: name, Rates: r}
	}
	if len(spec.Models) == 0 {
		bad("models", "at least one model is required")
	}
	for i, ms := range spec.Models {
		path := fmt.Sprintf("models[%d]", i)
		m := &Model{
			ID: ms.ID, Aliases: ms.Aliases, Tier: ms.Tier,
			ContextWindow: ms.ContextWindow, MaxOutputTokens: ms.MaxOutputTokens,
			OutputLimitField: ms.OutputLimitField,
		}
		switch ms.OutputLimitField {
		case "", "max_tokens", "max_completion_tokens":
		default:
			bad(path+".output_limit_field", "must be max_tokens or max_completion_tokens, got %q", ms.OutputLimitField)
		}
		if ms.ID == "" {
			bad(path+".id", "is required")
		}
		tier, ok := c.tiers[ms.Tier]
		if !ok {
			bad(path+".tier", "unknown tier %q (have %s)", ms.Tier, strings.Join(sortedKeys(spec.Tiers), ", "))
		}
		m.Rates = tier.Rates
		for _, o := range []struct {
			name string
			v    *int64
			dst  *int64
		}{{"cache_write", ms.CacheWrite, &m.Rates.CacheWrite}, {"cache_write_1h", ms.CacheWrite1h, &m.Rates.CacheWrite1h}} {
			switch {
			case o.v == nil:
			case ms.PriceUSD != nil:
				bad(path+"."+o.name, "a model priced by price_usd states it in price_usd")
			case *o.v < 0 || *o.v > maxRate:
				bad(path+"."+o.name, "rate must be between 0 and 1e6 credits per 1K tokens, got %d", *o.v)
			default:
				*o.dst = *o.v
			}
		}
		if ms.ContextWindow <= 0 || ms.ContextWindow > maxTokens {
			bad(path+".context_window", "must be positive, got %d", ms.ContextWindow)
		}
		if ms.MaxOutputTokens <= 0 || ms.MaxOutputTokens > maxTokens {
			bad(path+".max_output_tokens", "must be positive, got %d", ms.MaxOutputTokens)
		}
		if len(ms.Deployments) == 0 {
			bad(path+".deployments", "at least one deployment is required")
		}
		for j, d := range ms.Deployments {
			if d.Provider == "" || d.Model == "" {
				bad(fmt.Sprintf("%s.deployments[%d]", path, j), "provider and model are required")
			}
			m.Deployments = append(m.Deployments, Deployment(d))
		}
		if ms.PriceUSD != nil {
			u, err := parseUSD(*ms.PriceUSD, spec.CreditsPerUSD)
			if err != nil {
				bad(path+".price_usd", "%v", err)
			} else {
				m.usd = u
				m.Rates = u.ceilRates()
			}
		}
		for _, name := range append([]string{ms.ID}, ms.Aliases...) {
			if name == "" {
				continue
			}
			if prev, dup := c.byName[name]; dup {
				bad(path, "name %q already used by model %q", name, prev.ID)
				continue
			}
			c.byName[name] = m
		}
		c.models = append(c.models, m)
	}
	for i, ps := range spec.Packs {
		p, err := c.buildPack(ps)
		if err != nil {
			bad(fmt.Sprintf("packs[%d]", i), "%v", err)
			continue
		}
		if _, dup := c.byPack[p.Key]; dup {
			bad(fmt.Sprintf("packs[%d].key", i), "duplicate pack %q", p.Key)
			continue
		}
		c.packs = append(c.packs, p)
		c.byPack[p.Key] = &c.packs[len(c.packs)-1]
	}
	// byPack points into c.packs; rebuild now that the slice is final.
	for i := range c.packs {
		c.byPack[c.packs[i].Key] = &c.packs[i]
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func (c *Catalog) buildPack(ps PackSpec) (Pack, error) {
	p := Pack{Key: ps.Key, Name: ps.Name, Note: ps.Note, Currency: strings.ToLower(ps.Currency)}
	if p.Currency == "" {
		p.Currency = "usd"
	}
	if p.Key == "" {
		return p, errors.New("key is required")
	}
	if p.Name == "" {
		p.Name = p.Key
	}
	price, err := ParseMinor(ps.Price, 2)
	if err != nil {
		return p, err
	}
	if price <= 0 {
		return p, fmt.Errorf("price must be positive, got %q", ps.Price)
	}
	p.PriceMinor = price
	if ps.Credits != nil {
		if *ps.Credits <= 0 || *ps.Credits > 1e12 {
			return p, fmt.Errorf("credits must be positive, got %d", *ps.Credits)
		}
		p.Credits = *ps.Credits * MilliPerCredit
		return p, nil
	}
	if p.Currency != "usd" {
		return p, fmt.Errorf("currency %q needs credits stated outright", p.Currency)
	}
	p.FeeBps = c.feeBps
	p.FeeMinor = (price*c.feeBps + 5000) / 10000
	if p.Note == "" && c.feeBps > 0 {
		p.Note = feeNote(c.feeBps)
	}
	// credits_mc = price_minor × credits_per_minor × 1000 × (10000 − fee) / 10000,
	// with credits_per_minor = credits_per_usd / 100: multiply first, divide
	// last, and round down (in the seller's favour by under 1 mc).
	// (credits_per_usd × 1000 × (10000 − fee) ≤ 1e16 fits in 64 bits; the
	// price times that is formed in 128 bits by mulDivFloor.)
	mc, ok := mulDivFloor(uint64(price), uint64(c.creditsPerUSD)*uint64(MilliPerCredit*(10000-c.feeBps)), 100*10000)
	if !ok {
		return p, errors.New("credits overflow")
	}
	p.Credits = mc
	return p, nil
}

func feeNote(bps int64) string {
	whole, frac := bps/100, bps%100
	if frac == 0 {
		return fmt.Sprintf("%d%% fee applied", whole)
	}
	return strings.TrimRight(fmt.Sprintf("%d.%02d", whole, frac), "0") + "% fee applied"
}

func parseUSD(s USDPriceSpec, creditsPerUSD int64) (*usdRates, error) {
	parse := func(field, v string) (uint64, error) {
		n, err := parseDecimal(v, 6)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", field, v, err)
		}
		if n < 0 || n > maxUSDMicros {
			return 0, fmt.Errorf("%s: %q out of range [0, 1000]", field, v)
		}
		return uint64(n), nil
	}
	u := &usdRates{creditsPerUSD: uint64(creditsPerUSD)}
	var err1, err2, err3, err4, err5 error
	u.input, err1 = parse("input", s.Input)
	u.output, err3 = parse("output", s.Output)
	if s.CachedInput == "" {
		u.cachedInput = u.input
	} else {
		u.cachedInput, err2 = parse("cached_input", s.CachedInput)
	}
	if s.CacheWrite == "" {
		u.cacheWrite = (5*u.input + 3) / 4 // ≤ 1.25e9: fits
	} else {
		u.cacheWrite, err4 = parse("cache_write", s.CacheWrite)
	}
	if s.CacheWrite1h == "" {
		u.cacheWrite1h = 2 * u.input
	} else {
		u.cacheWrite1h, err5 = parse("cache_write_1h", s.CacheWrite1h)
	}
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, err
	}
	return u, nil
}

// ceilRates is the per-token price rounded up to whole milli-credits: an upper
// bound used to size holds.
func (u *usdRates) ceilRates() Rates {
	r := func(micros uint64) int64 {
		v, _ := mulDivCeil(micros, u.creditsPerUSD*MilliPerCredit, 1e12)
		return v
	}
	return Rates{Input: r(u.input), CachedInput: r(u.cachedInput), Output: r(u.output),
		CacheWrite: r(u.cacheWrite), CacheWrite1h: r(u.cacheWrite1h)}
}

type rateField struct {
	name string
	v    int64
}

// fields lists the rates by their YAML names, for validation.
func (r Rates) fields() [5]rateField {
	return [5]rateField{{"input", r.Input}, {"cached_input", r.CachedInput}, {"output", r.Output},
		{"cache_write", r.CacheWrite}, {"cache_write_1h", r.CacheWrite1h}}
}

// Cost returns the exact price of u in milli-credits. Negative counts are
// treated as zero.
func (m *Model) Cost(u Usage) int64 {
	in, cached, out := clampTokens(u.Input), clampTokens(u.CachedInput), clampTokens(u.Output)
	cw, cw1h := clampTokens(u.CacheWrite), clampTokens(u.CacheWrite1h)
	if m.usd == nil {
		// ≤ 5 × 2^40 × 1e6 < 2^63: exact.
		return in*m.Rates.Input + cached*m.Rates.CachedInput + out*m.Rates.Output +
			cw*m.Rates.CacheWrite + cw1h*m.Rates.CacheWrite1h
	}
	// Σ tokens × µUSD/1M needs up to 74 bits (≤ 5 × 2^40 × 2e9): sum it in 128
	// bits, convert once and round the call's total up to a whole milli-credit.
	var hi, lo uint64
	for _, t := range [5][2]uint64{{uint64(in), m.usd.input}, {uint64(cached), m.usd.cachedInput}, {uint64(out), m.usd.output},
		{uint64(cw), m.usd.cacheWrite}, {uint64(cw1h), m.usd.cacheWrite1h}} {
		h, l := bits.Mul64(t[0], t[1])
		var carry uint64
		lo, carry = bits.Add64(lo, l, 0)
		hi += h + carry
	}
	v, ok := mulDivCeil128(hi, lo, m.usd.creditsPerUSD*MilliPerCredit, 1e12)
	if !ok {
		return maxCost // never a free call: saturate instead of wrapping
	}
	return v
}

// PricedByUSD reports whether the model uses a passthrough provider price.
func (m *Model) PricedByUSD() bool { return m.usd != nil }

func clampTokens(n int64) int64 {
	switch {
	case n < 0:
		return 0
	case n > maxTokens:
		return maxTokens
	}
	return n
}

// Lookup finds a model by its public name or an alias.
func (c *Catalog) Lookup(name string) (*Model, error) {
	if m, ok := c.byName[name]; ok {
		return m, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownModel, name)
}

// LookupBytes is Lookup for a name held in a byte slice; it does not allocate
// on a hit.
func (c *Catalog) LookupBytes(name []byte) (*Model, bool) {
	m, ok := c.byName[string(name)]
	return m, ok
}

// Models returns the public models in catalog order. The slice must not be modified.
func (c *Catalog) Models() []*Model { return c.models }

// Tier returns a tier by name.
func (c *Catalog) Tier(name string) (Tier, bool) {
	t, ok := c.tiers[name]
	return t, ok
}

// Packs returns the packs in display order. The slice must not be modified.
func (c *Catalog) Packs() []Pack { return c.packs }

// Pack finds a pack by key.
func (c *Catalog) Pack(key string) (Pack, error) {
	if p, ok := c.byPack[key]; ok {
		return *p, nil
	}
	keys := make([]string, len(c.packs))
	for i, p := range c.packs {
		keys[i] = p.Key
	}
	return Pack{}, fmt.Errorf("%w %q (valid: %s)", ErrUnknownPack, key, strings.Join(keys, ", "))
}

// CreditsPerUSD is the catalog's conversion rate.
func (c *Catalog) CreditsPerUSD() int64 { return c.creditsPerUSD }

// FeeBps is the catalog's processing fee on purchases.
func (c *Catalog) FeeBps() int64 { return c.feeBps }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
