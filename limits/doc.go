// Package limits enforces subscription plans in the proxy: it provides the
// proxy.Limiter that admits or refuses each call against the account's plan
// (requests, input and output tokens and credits per billing period, and
// requests per minute).
//
// The plans and their limits come from the configuration; the account's
// subscription (plan, seats, status, period) and its counters live in Redis
// and are read through metering in one round trip per call (metering.Store.Admit).
// Accounts without a live subscription have no plan limits; that answer is
// cached in process for Options.CacheTTL, so that their calls cost no round trip.
//
// The counters are the ones settle bumps and the billing usage API shows. A
// call is refused when a period counter has reached its limit; calls in
// flight are not counted until they settle, so concurrent calls may pass a
// limit by at most the calls in flight (and the last call's tokens).
// requests_per_minute is a fixed window on Redis's clock: it counts every
// call of the minute the limiter sees, refused ones included, and Retry-After
// is the rest of the minute. A period limit's Retry-After is the period's end.
//
// # Imports
//
// limits imports proxy (for the *proxy.LimitError it returns), metering and
// internal/config. Only cmd wires it; proxy knows it through its Limiter
// interface.
//
// # Lifetimes
//
// A *Limiter is safe for concurrent use; its cache is bounded and holds
// nothing but account ids and expiry times.
package limits
