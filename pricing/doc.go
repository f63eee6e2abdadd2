// Package pricing turns model names and token usage into exact prices.
//
// It is pure: it imports only the standard library, performs no I/O and keeps
// no mutable state after New returns. Everything is integer arithmetic in
// milli-credits (mc): 1 credit = 1000 mc, and a tier rate of N credits per 1K
// tokens is exactly N mc per token, so the cost of a call is
//
//	input×rate_in + cached_input×rate_cached + output×rate_out
//	  + cache_write×rate_cache_write + cache_write_1h×rate_cache_write_1h   (mc)
//
// with no rounding. Cache writes (input a provider writes to its prompt cache,
// for 5 minutes or for 1 hour) have their own rates; a tier that does not state
// them gets Anthropic's multipliers of its input rate, 1.25× rounded up to a
// whole rate and 2×. A model may instead carry a passthrough USD price (per 1M
// tokens); its cost is converted at the catalog's credits-per-USD and rounded up
// to a whole milli-credit per call.
//
// Credit packs are priced the same way: the credits a pack buys are
// price_minor × credits_per_minor × (10000 − fee_bps) / 10000, multiplying
// before dividing, or an amount stated outright.
//
// A Catalog is built once by New from a Spec (the YAML-decoded catalog); a bad
// price table fails there, with every problem reported, never at request time.
// A *Catalog is immutable and safe for concurrent use.
package pricing
