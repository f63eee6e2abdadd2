package pricing

import (
	"errors"
	"fmt"
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
	// Mode is how models are priced unless they say otherwise: "tiers"
	// (default) or "passthrough" (each model's price book).
	Mode string `yaml:"mode"`
	// Tiers maps a tier name to its rates in credits per 1K tokens.
	Tiers map[string]TierSpec `yaml:"tiers"`
	// Models lists the public models, in the order /v1/models shows them.
	Models []ModelSpec `yaml:"models"`
	// Packs lists the credit packs on sale, in display order.
	Packs []PackSpec `yaml:"packs"`
}

// TierSpec holds a tier's rates in credits per 1K tokens (decimals allowed:
// 0.8 is 0.8 credits per 1K tokens, exactly).
type TierSpec struct {
	Input Rate `yaml:"input"`
	// CachedInput (input read from a prompt cache) defaults to Input.
	CachedInput *Rate `yaml:"cached_input"`
	Output      Rate  `yaml:"output"`
	// CacheWrite prices input written to a provider's prompt cache for 5
	// minutes (Anthropic: 1.25 × input). Absent, it is 1.25 × Input, rounded
	// up to a whole credit per 1K when Input is whole (as catalogs with whole
	// rates always priced it).
	CacheWrite *Rate `yaml:"cache_write"`
	// CacheWrite1h prices input cached for 1 hour (Anthropic: 2 × input).
	// Absent, it is 2 × Input.
	CacheWrite1h *Rate `yaml:"cache_write_1h"`
	// WebSearch is the fee per provider-side web search, in credits per 1K
	// searches. Absent, searches are free.
	WebSearch *Rate `yaml:"web_search"`
	// LongContext, when set, prices calls whose prompt is long.
	LongContext *LongContextSpec `yaml:"long_context"`
}

// LongContextSpec prices a call whose prompt (every input token) is more than
// Above tokens, as a whole. Unstated rates default as a tier's do, from this
// Input.
type LongContextSpec struct {
	Above        int64 `yaml:"above"`
	Input        Rate  `yaml:"input"`
	CachedInput  *Rate `yaml:"cached_input"`
	Output       Rate  `yaml:"output"`
	CacheWrite   *Rate `yaml:"cache_write"`
	CacheWrite1h *Rate `yaml:"cache_write_1h"`
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
	// Mode overrides the catalog's: "tiers" or "passthrough". Unset, a model
	// with price_usd is passthrough and any other follows the catalog.
	Mode string `yaml:"mode"`
	// PriceBook is the provider's published prices, with their source and
	// effective dates; a passthrough model is charged them.
	PriceBook *PriceBookSpec `yaml:"price_book"`
	// PriceUSD is a single undated provider price (the older form of a
	// price book with one price).
	PriceUSD *USDPriceSpec `yaml:"price_usd"`
	// CachedInput, CacheWrite, CacheWrite1h, WebSearch and LongContext, when
	// set, override the tier's for this model (credits per 1K tokens or
	// searches). A passthrough model states them in its price book instead.
	CachedInput  *Rate            `yaml:"cached_input"`
	CacheWrite   *Rate            `yaml:"cache_write"`
	CacheWrite1h *Rate            `yaml:"cache_write_1h"`
	WebSearch    *Rate            `yaml:"web_search"`
	LongContext  *LongContextSpec `yaml:"long_context"`
}

// DeploymentSpec names a provider and the provider's own model name.
type DeploymentSpec struct {
	Provider string `yaml:"provider"`
	Model    string `yaml:"model"`
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

// Tier is a named rate card.
type Tier struct {
	Name  string
	Rates Rates
	Long  *LongContext
}

// Deployment is where a model is served: a provider and its model name.
type Deployment struct {
	Provider string
	Model    string
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
	mode          string
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

// problems collects what is wrong with a spec, each with its YAML path.
type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, fmt.Errorf("pricing.%s: %s", path, fmt.Sprintf(format, args...)))
}

// New validates spec and builds a Catalog. It reports every problem at once,
// each prefixed with its YAML path below `pricing`.
func New(spec Spec) (*Catalog, error) {
	var errs problems
	bad := errs.add
	c := &Catalog{
		creditsPerUSD: spec.CreditsPerUSD,
		feeBps:        spec.FeeBps,
		mode:          spec.Mode,
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
	switch spec.Mode {
	case "":
		c.mode = ModeTiers
	case ModeTiers, ModePassthrough:
	default:
		bad("mode", "must be tiers or passthrough, got %q", spec.Mode)
	}
	if len(spec.Tiers) == 0 {
		bad("tiers", "at least one tier is required")
	}
	for _, name := range sortedKeys(spec.Tiers) {
		t := spec.Tiers[name]
		path := "tiers." + name
		r := tierRates(&errs, path, t.Input, t.Output, t.CachedInput, t.CacheWrite, t.CacheWrite1h)
		if t.WebSearch != nil {
			r.WebSearch = *t.WebSearch
		}
		tier := Tier{Name: name, Rates: r}
		if t.LongContext != nil {
			tier.Long = longContext(&errs, path+".long_context", t.LongContext, r.WebSearch)
		}
		c.tiers[name] = tier
	}
	if len(spec.Models) == 0 {
		bad("models", "at least one model is required")
	}
	for i, ms := range spec.Models {
		path := fmt.Sprintf("models[%d]", i)
		m := c.buildModel(&errs, path, &ms)
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

// tierRates fills a rate card's unstated rates from its input rate and
// checks each stated one; path is its YAML path.
func tierRates(errs *problems, path string, in, out Rate, cached, cw, cw1h *Rate) Rates {
	r := Rates{Input: in, CachedInput: in, Output: out, CacheWrite1h: Rate{n: 2 * in.n}}
	r.CacheWrite, _ = in.mulCeil(5, 4) // ≤ 1.25 × maxTierRate: fits
	if in.Whole() {
		r.CacheWrite = r.CacheWrite.ceilWhole()
	}
	for _, o := range [...]struct {
		v   *Rate
		dst *Rate
	}{{cached, &r.CachedInput}, {cw, &r.CacheWrite}, {cw1h, &r.CacheWrite1h}} {
		if o.v != nil {
			*o.dst = *o.v
		}
	}
	for _, f := range r.fields() {
		if err := checkTierRate(f.v); err != nil {
			errs.add(path+"."+f.name, "%v", err)
		}
	}
	return r
}

// longContext builds a tier-priced long-context card.
func longContext(errs *problems, path string, s *LongContextSpec, webSearch Rate) *LongContext {
	if s.Above <= 0 || s.Above > maxTokens {
		errs.add(path+".above", "must be a positive number of input tokens, got %d", s.Above)
	}
	r := tierRates(errs, path, s.Input, s.Output, s.CachedInput, s.CacheWrite, s.CacheWrite1h)
	r.WebSearch = webSearch
	return &LongContext{Above: s.Above, Rates: r}
}

// buildModel builds one model; its problems go to errs under path.
func (c *Catalog) buildModel(errs *problems, path string, ms *ModelSpec) *Model {
	bad := errs.add
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
		bad(path+".tier", "unknown tier %q (have %s)", ms.Tier, strings.Join(sortedKeys(c.tiers), ", "))
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

	// The mode: the model's, else passthrough for a price_usd, else the catalog's.
	switch {
	case ms.Mode == ModeTiers || ms.Mode == ModePassthrough:
		m.Mode = ms.Mode
	case ms.Mode != "":
		bad(path+".mode", "must be tiers or passthrough, got %q", ms.Mode)
		m.Mode = ModeTiers
	case ms.PriceUSD != nil:
		m.Mode = ModePassthrough
	default:
		m.Mode = c.mode
	}
	// The book is validated whatever the mode: a bad one fails at load.
	var book []Price
	switch {
	case ms.PriceBook != nil && ms.PriceUSD != nil:
		bad(path+".price_usd", "a model has a price_book or a price_usd, not both")
	case ms.PriceBook != nil:
		book = c.priceBook(errs, path+".price_book", ms.PriceBook)
		m.Source, m.Checked = ms.PriceBook.Source, ms.PriceBook.Checked
	case ms.PriceUSD != nil:
		if ms.PriceUSD.Effective != "" {
			bad(path+".price_usd.effective", "an undated price; dated prices go in a price_book")
		}
		if p, ok := c.usdPrice(errs, path+".price_usd", ms.PriceUSD); ok {
			book = []Price{p}
		}
	}

	m.Book = book
	overrides := [...]struct {
		name string
		v    *Rate
	}{{"cached_input", ms.CachedInput}, {"cache_write", ms.CacheWrite}, {"cache_write_1h", ms.CacheWrite1h}, {"web_search", ms.WebSearch}}
	if m.Mode == ModePassthrough {
		if ms.PriceBook == nil && ms.PriceUSD == nil {
			bad(path+".price_book", "a passthrough model needs its provider's prices (price_book)")
		}
		for _, o := range overrides {
			if o.v != nil {
				bad(path+"."+o.name, "a passthrough model states it in its price book (price_usd)")
			}
		}
		if ms.LongContext != nil {
			bad(path+".long_context", "a passthrough model states it in its price book (price_usd)")
		}
		if len(book) == 0 { // already reported; keep the model usable for further checks
			book = []Price{{Rates: tier.Rates, Long: tier.Long}}
		}
		m.Prices = book
		m.Hold = holdRates(m.Prices)
		return m
	}
	p := Price{Rates: tier.Rates, Long: tier.Long}
	for _, o := range overrides {
		if o.v == nil {
			continue
		}
		if err := checkTierRate(*o.v); err != nil && o.name != "web_search" { // a fee may be dearer
			bad(path+"."+o.name, "%v", err)
			continue
		}
		switch o.name {
		case "cached_input":
			p.Rates.CachedInput = *o.v
		case "cache_write":
			p.Rates.CacheWrite = *o.v
		case "cache_write_1h":
			p.Rates.CacheWrite1h = *o.v
		case "web_search":
			p.Rates.WebSearch = *o.v
		}
	}
	if p.Long != nil && p.Rates.WebSearch != tier.Rates.WebSearch {
		long := *p.Long
		long.Rates.WebSearch = p.Rates.WebSearch
		p.Long = &long
	}
	if ms.LongContext != nil {
		p.Long = longContext(errs, path+".long_context", ms.LongContext, p.Rates.WebSearch)
	}
	m.Prices = []Price{p}
	m.Hold = holdRates(m.Prices)
	return m
}

type rateField struct {
	name string
	v    Rate
}

// fields lists the token rates by their YAML names, for validation.
func (r Rates) fields() [5]rateField {
	return [5]rateField{{"input", r.Input}, {"cached_input", r.CachedInput}, {"output", r.Output},
		{"cache_write", r.CacheWrite}, {"cache_write_1h", r.CacheWrite1h}}
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
