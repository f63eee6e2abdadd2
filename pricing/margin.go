package pricing

import "time"

// Shortfall is one kind of usage that a model charges less for than its
// provider bills: every such token loses money for whoever resells it.
type Shortfall struct {
	Kind string // the rate's YAML name; "long_context." before it for long prompts
	Rate Rate   // what the model charges (credits per 1K)
	Cost Rate   // what the provider's book says it costs, converted
}

// BelowCost lists the kinds of usage that the model's price in force at t
// charges less for than its provider's book in force at t (the long-context
// rates too, when the book has them). Nil for a model without a book or
// priced by it (passthrough). It is how the shipped tier rates are checked
// against the providers' list prices at the catalog's credits_per_usd.
func (m *Model) BelowCost(t time.Time) []Shortfall {
	if len(m.Book) == 0 || m.Mode == ModePassthrough {
		return nil
	}
	p, b := m.PriceAt(t), priceAt(m.Book, t)
	out := shortfalls(nil, "", &p.Rates, &b.Rates)
	if b.Long != nil {
		r := &p.Rates // what the model charges a prompt past the book's threshold
		if p.Long != nil && p.Long.Above <= b.Long.Above {
			r = &p.Long.Rates
		}
		out = shortfalls(out, "long_context.", r, &b.Long.Rates)
	}
	return out
}

func shortfalls(dst []Shortfall, prefix string, r, cost *Rates) []Shortfall {
	rf, cf := r.fields(), cost.fields()
	for i := range rf {
		if rf[i].v.n < cf[i].v.n {
			dst = append(dst, Shortfall{Kind: prefix + rf[i].name, Rate: rf[i].v, Cost: cf[i].v})
		}
	}
	if r.WebSearch.n < cost.WebSearch.n {
		dst = append(dst, Shortfall{Kind: prefix + "web_search", Rate: r.WebSearch, Cost: cost.WebSearch})
	}
	return dst
}
