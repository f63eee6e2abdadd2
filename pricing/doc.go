// Package pricing turns model names and usage into exact prices.
//
// It is pure: it imports only the standard library, performs no I/O and keeps
// no mutable state after New returns. Money is integer arithmetic: ledger
// amounts are milli-credits (mc, 1 credit = 1000 mc), and a Rate is counted
// in 10⁻⁹ mc per token (= 10⁻⁹ credits per 1K tokens), fine enough that every
// rate the catalog can state is an exact integer — a tier rate with up to
// nine decimals of credits per 1K tokens (0.8 for cache reads at a tenth of
// 8), and a provider's price of p µUSD per 1M tokens at c credits per USD,
// which is exactly p × c units. A call costs
//
//	⌈ (input×rate_in + cached_input×rate_cached + output×rate_out
//	   + cache_write×rate_cache_write + cache_write_1h×rate_cache_write_1h
//	   + web_searches×rate_web_search) / 10⁹ ⌉   (mc)
//
// summed exactly in 128 bits and rounded up once, to a whole milli-credit per
// call; with whole rates nothing is rounded at all. Every kind has its own
// rate: cache reads, cache writes for 5 minutes and for 1 hour, and per-use
// fees of provider-side tools (web search). A price may carry long-context
// rates: a call whose prompt (every input token) is past their threshold is
// priced at them as a whole, as providers bill it.
//
// A model is priced in one of two modes (the catalog's, or its own):
// "tiers" — its tier's rates, which a model may override kind by kind — or
// "passthrough" — its provider's published USD prices from its price book,
// converted at the catalog's credits per USD. A book says where the prices
// are published (source) and when they were read there (checked), and dates
// each price (effective, from 00:00 UTC): Cost prices a call at the price in
// force when it started, so a scheduled change applies from its day. A
// model's Hold rates are the dearest, in whole mc rounded up, of every price
// it has and of their long-context rates: a hold sized at them covers the
// call whatever the provider reports and whenever it settles.
//
// Credit packs are priced the same way: the credits a pack buys are
// price_minor × credits_per_minor × (10000 − fee_bps) / 10000, multiplying
// before dividing, or an amount stated outright.
//
// A Catalog is built once by New from a Spec (the YAML-decoded catalog); a bad
// price table fails there, with every problem reported under its YAML path,
// never at request time. Rates decode from YAML text (encoding.TextUnmarshaler)
// without a float. A *Catalog and its *Models are immutable and safe for
// concurrent use; callers must not modify the slices they return.
package pricing
