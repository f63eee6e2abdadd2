// Package billing is Tollgate's billing sidecar: the HTTP API that sells the
// credits the proxy spends, and the operators' admin API.
//
// It serves, with net/http (it is not the hot path):
//
//   - the public billing API, authenticated by a JWT issued by the app
//     (HS256 secret or an RS256/ES256/EdDSA public key): credit packs, Stripe
//     Checkout, billing history, the account's balance and self-service API keys;
//   - the Stripe webhook, verified by its signature, which is the only way
//     purchased credits arrive: exactly once per checkout session, from the
//     record made at checkout, and taken back on refunds and disputes;
//   - the admin API under /admin/v1, mounted only when an admin token of at
//     least 32 characters is configured.
//
// # Imports
//
// billing imports pricing and metering (through the Store interface it
// declares, which *metering.Store satisfies) and stripe-go. It never builds a
// Redis command: every key and script belongs to metering. It must not import
// proxy or cmd.
//
// # Errors
//
// Handlers return errors; one function (writeError) maps them, once, at the
// edge, to a status and an OpenAI-shaped body {"error":{"message","type","code"}}.
// Only *apiError messages are written to clients; every other error is logged
// with the request id and answered with a generic message.
//
// # Amounts
//
// Balances are integers of milli-credits (mc) everywhere. JSON carries credits
// as numbers with exactly three decimals, written from the integer (Credits),
// and credit amounts are read from the number's text with pricing.ParseCredits,
// never through a float64.
//
// # Lifetimes
//
// A *Server is immutable after New and safe for concurrent use. It keeps no
// request state; the Stripe client it is given (or builds) is used
// concurrently and never reconfigured; no global stripe.Key is ever set.
package billing
