// Package limits enforces subscription plans in the proxy: it provides the
// proxy.Limiter that admits or refuses each call against the account's plan
// (requests, input and output tokens and credits per billing period, and
// requests per minute).
//
// The plans and their limits come from the configuration; the account's
// subscription (plan, seats, status, period) and its counters live in Redis.
// Accounts without a live subscription have no plan limits; that answer is
// cached in process for Options.CacheTTL, so that their calls cost no round
// trip. Others cost one per call (two when their subscription changed).
//
// The store decides each call atomically (metering.Store.Admit), with the
// limits of the subscription the limiter last saw (the store answers Stale
// when it changed, and the limiter asks again with the new limits): a call
// is admitted while each period counter plus what calls in progress hold of
// it is under its limit. An admitted call is counted as a request at once
// and holds its worst case (input estimate, output tokens it may be granted,
// credits of its hold) until its settle, release or lease batch drops it, or
// the hold TTL expires it; its output grant (proxy.Grant.MaxOutput) is capped
// by what is left of the output token and credit allowances, and a call
// whose minimum output no longer fits is refused. So calls admitted at once,
// on any number of replicas, never pass requests; pass output tokens and
// credits only by what a call uses past its hold (a provider ignoring the
// output limit, an input estimate short of the real input); and pass
// input_tokens by at most one call's input. A failed call is not a request
// (its release gives it back). The counters are the ones the billing usage
// API shows.
//
// requests_per_minute is a fixed window on Redis's clock: it counts every
// call of the minute the limiter sees, refused ones included, and Retry-After
// is the rest of the minute. A period limit's Retry-After is the period's end.
//
// # Imports
//
// limits imports proxy (for the LimitedCall it weighs, and the Grant and
// *proxy.LimitError it returns), metering and internal/config. Only cmd wires it; proxy knows it through its Limiter
// interface.
//
// # Lifetimes
//
// A *Limiter is safe for concurrent use; its cache is bounded and holds
// nothing but account ids, their plan ids and seats, and expiry times. What
// it holds for a call lives in Redis (the period holds), not in the Limiter.
package limits
