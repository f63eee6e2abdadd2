package soak

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// shippedConfig reads configs/tollgate.yaml as a generic tree (the ${VAR}
// references stay unexpanded: the processes expand them).
func shippedConfig(t testing.TB) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "tollgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("parsing the shipped config: %v", err)
	}
	return m
}

// writeConfig writes the shipped configuration with edits applied (keys are
// dotted YAML paths such as "proxy.hold_ttl") to a temporary file. With no
// edits it returns the shipped file itself.
// Unless edits say otherwise, credit leases go back 100 ms after their last
// call (shipped: 1 s), so that audits need not wait long for them.
func writeConfig(t testing.TB, edits map[string]any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	writeConfigTo(t, path, edits)
	return path
}

// writeConfigTo is writeConfig to path (a reload test rewrites a running
// process's file).
func writeConfigTo(t testing.TB, path string, edits map[string]any) {
	t.Helper()
	m := shippedConfig(t)
	all := map[string]any{"proxy.lease_idle_return": "100ms"}
	for k, v := range edits {
		all[k] = v
	}
	for path, v := range all {
		parts := strings.Split(path, ".")
		cur := m
		for _, p := range parts[:len(parts)-1] {
			next, ok := cur[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[p] = next
			}
			cur = next
		}
		cur[parts[len(parts)-1]] = v
	}
	data, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	// Written aside and renamed, as an operator's tooling should: a reload
	// never reads half a file.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// nano is the price lists' unit per milli-credit: rates are read exactly,
// as 10⁻⁹ mc per token (= 10⁻⁹ credits per 1K tokens; web search per search).
const nano = 1_000_000_000

// rates are a tier's prices in 10⁻⁹ mc per token: uncached input, cached
// input (cache reads), output, input written to the prompt cache for 5
// minutes (cw) and for 1 hour (cw1h), and web searches (ws, per search).
type rates struct{ in, cached, out, cw, cw1h, ws int64 }

// card is a price with its long-context rates (above: prompt tokens past
// which long applies to the whole call; 0 = none).
type card struct {
	rates
	above int64
	long  rates
}

// price list of the shipped catalog, read from the file (not from the pricing
// package): the tests price usage independently of the code under test.
type priceList struct {
	tiers  map[string]card
	models map[string]card // model id or alias → its tier's rates, with the model's overrides
}

func loadPrices(t testing.TB) priceList {
	t.Helper()
	p, err := readPrices()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var shipped struct {
	once sync.Once
	p    priceList
	err  error
}

// readPrices reads the shipped price list once.
func readPrices() (priceList, error) {
	shipped.once.Do(func() { shipped.p, shipped.err = parsePrices() })
	return shipped.p, shipped.err
}

// decimalNano reads a YAML scalar's text (credits per 1K, decimals allowed)
// exactly, as 10⁻⁹ credits per 1K.
func decimalNano(text string) (int64, error) {
	whole, frac, _ := strings.Cut(text, ".")
	if len(frac) > 9 {
		return 0, fmt.Errorf("rate %q has more than 9 decimals", text)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w < 0 {
		return 0, fmt.Errorf("rate %q is not a non-negative decimal", text)
	}
	f := int64(0)
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64); err != nil {
			return 0, fmt.Errorf("rate %q is not a decimal", text)
		}
	}
	return w*nano + f, nil
}

type node = map[string]yaml.Node

func parsePrices() (priceList, error) {
	p := priceList{tiers: map[string]card{}, models: map[string]card{}}
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "tollgate.yaml"))
	if err != nil {
		return p, err
	}
	// Scalars are kept as text (yaml.Node): rates are read without a float.
	var doc struct {
		Pricing struct {
			Mode   string          `yaml:"mode"`
			Tiers  map[string]node `yaml:"tiers"`
			Models []node          `yaml:"models"`
		} `yaml:"pricing"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return p, fmt.Errorf("parsing the shipped config: %w", err)
	}
	if m := doc.Pricing.Mode; m != "" && m != "tiers" {
		return p, fmt.Errorf("pricing.mode %q: the soak's price list knows tiers only", m)
	}
	num := func(n node, k string, dst *int64) {
		v, ok := n[k]
		if !ok {
			return
		}
		r, e := decimalNano(v.Value)
		if e != nil && err == nil {
			err = fmt.Errorf("%s: %w", k, e)
		}
		*dst = r
	}
	// Unstated rates, as documented in configs/tollgate.yaml: cache reads
	// at input, cache writes at 1.25 × input (rounded up to a whole credit
	// per 1K when input is whole) and 2 × input.
	rateCard := func(n node) rates {
		var r rates
		num(n, "input", &r.in)
		num(n, "output", &r.out)
		r.cached, r.cw, r.cw1h = r.in, (5*r.in+3)/4, 2*r.in
		if r.in%nano == 0 {
			r.cw = (r.cw + nano - 1) / nano * nano
		}
		num(n, "cached_input", &r.cached)
		num(n, "cache_write", &r.cw)
		num(n, "cache_write_1h", &r.cw1h)
		return r
	}
	long := func(c *card, n node) {
		lc, ok := n["long_context"]
		if !ok {
			return
		}
		var ln node
		if e := lc.Decode(&ln); e != nil && err == nil {
			err = e
		}
		num(ln, "above", &c.above)
		c.above /= nano
		c.long = rateCard(ln)
		c.long.ws = c.ws
	}
	for name, tv := range doc.Pricing.Tiers {
		c := card{rates: rateCard(tv)}
		num(tv, "web_search", &c.ws)
		long(&c, tv)
		p.tiers[name] = c
	}
	for _, mv := range doc.Pricing.Models {
		id, tier := mv["id"].Value, mv["tier"].Value
		c, ok := p.tiers[tier]
		if !ok && err == nil {
			err = fmt.Errorf("model %v: unknown tier %v", id, tier)
		}
		for _, own := range []string{"price", "price_usd"} {
			if _, has := mv[own]; has {
				err = fmt.Errorf("model %v has its own price: the soak's price list knows tiers only", id)
			}
		}
		if m, has := mv["mode"]; has && m.Value != "tiers" {
			err = fmt.Errorf("model %v is priced %s: the soak's price list knows tiers only", id, m.Value)
		}
		num(mv, "cached_input", &c.cached)
		num(mv, "cache_write", &c.cw)
		num(mv, "cache_write_1h", &c.cw1h)
		num(mv, "web_search", &c.ws)
		if c.above > 0 {
			c.long.ws = c.ws
		}
		long(&c, mv)
		p.models[id] = c
		if al, ok := mv["aliases"]; ok {
			var names []string
			if e := al.Decode(&names); e != nil && err == nil {
				err = e
			}
			for _, a := range names {
				p.models[a] = c
			}
		}
	}
	return p, err
}

// usage is what a provider reported, normalised: uncached input, cached
// input, output (reasoning included), cache-write (5 minutes, 1 hour)
// tokens, and web searches.
type usage struct {
	in, cached, out, cw, cw1h, ws int64
	seen                          bool
}

// price is u at card c, in mc: the exact sum in 10⁻⁹ mc, rounded up once
// (docs/architecture.md §3); the long-context rates for the whole call when
// its prompt is past their threshold.
func (c card) price(u usage) int64 {
	r := c.rates
	if c.above > 0 && u.in+u.cached+u.cw+u.cw1h > c.above {
		r = c.long
	}
	n := u.in*r.in + u.cached*r.cached + u.out*r.out + u.cw*r.cw + u.cw1h*r.cw1h + u.ws*r.ws
	return (n + nano - 1) / nano
}

// cost is usage × rate of model, in mc.
func (p priceList) cost(t testing.TB, model string, u usage) int64 {
	r, ok := p.models[model]
	if !ok {
		t.Fatalf("model %q is not in the shipped catalog", model)
	}
	return r.price(u)
}
