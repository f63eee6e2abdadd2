package soak

import (
	"fmt"
	"os"
	"path/filepath"
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

// rates are a tier's prices in milli-credits per token: uncached input,
// cached input (cache reads), output, and input written to the prompt cache
// for 5 minutes (cw) and for 1 hour (cw1h).
type rates struct{ in, cached, out, cw, cw1h int64 }

// price list of the shipped catalog, read from the file (not from the pricing
// package): the tests price usage independently of the code under test.
type priceList struct {
	tiers  map[string]rates
	models map[string]rates // model id or alias → its tier's rates, with the model's overrides
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

func parsePrices() (priceList, error) {
	p := priceList{tiers: map[string]rates{}, models: map[string]rates{}}
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "tollgate.yaml"))
	if err != nil {
		return p, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return p, fmt.Errorf("parsing the shipped config: %w", err)
	}
	pr := m["pricing"].(map[string]any)
	num := func(v any) int64 {
		switch n := v.(type) {
		case int:
			return int64(n)
		case int64:
			return n
		}
		if err == nil {
			err = fmt.Errorf("pricing: %v is not an integer", v)
		}
		return 0
	}
	for name, v := range pr["tiers"].(map[string]any) {
		tv := v.(map[string]any)
		r := rates{in: num(tv["input"]), out: num(tv["output"])}
		// Unstated rates, as documented in configs/tollgate.yaml: cache reads
		// at input, cache writes at ⌈1.25 × input⌉ and 2 × input.
		r.cached, r.cw, r.cw1h = r.in, (5*r.in+3)/4, 2*r.in
		if c, ok := tv["cached_input"]; ok {
			r.cached = num(c)
		}
		if c, ok := tv["cache_write"]; ok {
			r.cw = num(c)
		}
		if c, ok := tv["cache_write_1h"]; ok {
			r.cw1h = num(c)
		}
		p.tiers[name] = r
	}
	for _, v := range pr["models"].([]any) {
		mv := v.(map[string]any)
		r, ok := p.tiers[mv["tier"].(string)]
		if !ok && err == nil {
			err = fmt.Errorf("model %v: unknown tier %v", mv["id"], mv["tier"])
		}
		for _, own := range []string{"price", "price_usd"} {
			if _, has := mv[own]; has {
				err = fmt.Errorf("model %v has its own price: the soak's price list knows tiers only", mv["id"])
			}
		}
		if c, ok := mv["cache_write"]; ok {
			r.cw = num(c)
		}
		if c, ok := mv["cache_write_1h"]; ok {
			r.cw1h = num(c)
		}
		p.models[mv["id"].(string)] = r
		if al, ok := mv["aliases"].([]any); ok {
			for _, a := range al {
				p.models[a.(string)] = r
			}
		}
	}
	return p, err
}

// usage is what a provider reported, normalised: uncached input, cached
// input, output (reasoning included), and cache-write (5 minutes, 1 hour)
// tokens.
type usage struct {
	in, cached, out, cw, cw1h int64
	seen                      bool
}

// price is u at rates r, in mc: exact integers (docs/architecture.md §3).
func (r rates) price(u usage) int64 {
	return u.in*r.in + u.cached*r.cached + u.out*r.out + u.cw*r.cw + u.cw1h*r.cw1h
}

// cost is usage × rate of model, in mc.
func (p priceList) cost(t testing.TB, model string, u usage) int64 {
	r, ok := p.models[model]
	if !ok {
		t.Fatalf("model %q is not in the shipped catalog", model)
	}
	return r.price(u)
}
