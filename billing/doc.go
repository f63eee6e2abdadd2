// Package billing is Tollgate's billing sidecar: the HTTP API that sells the
// credits the proxy spends, and the operators' admin API.
//
// It serves, with net/http (it is not the hot path):
//
//   - the public billing API, authenticated by a JWT issued by the app
//     (HS256 secret or an RS256/ES256/EdDSA public key): credit packs, Stripe
//     Checkout, billing history, the account's balance and self-service API keys;
//   - teams: members act for an account by a JWT claim (billing.jwt.member_claim)
//     with a role; every JWT route needs one permission, checked in one place
//     before its handler (authz.go); members and the audit log (members.go);
//   - the Stripe webhook, verified by its signature, which is the only way
//     purchased credits arrive: exactly once per checkout session, from the
//     record made at checkout, and taken back on refunds and disputes;
//   - the admin API under /admin/v1, mounted only when an admin token of at
//     least 32 characters is configured;
//   - the plans and credits API under /api/billing (camelCase JSON, JWT):
//     subscriptions through Checkout in subscription mode (the plan's Stripe
//     price × seats, redirect URLs only to allowed origins), the billing
//     portal, cancel at period end, usage against the plan's limits (the
//     counters the proxy enforces), credits with their transactions, direct
//     purchases on the saved card and the auto-recharge setting;
//   - the web console under /console/ (package console's embedded files) with
//     its settings at /console/config.json, GET /api/billing/usage/daily (the
//     usage chart, from the DailyUsage source: metering's per-day counters
//     today, a PostgreSQL aggregate later), and the OpenAPI document at
//     /openapi.json (package api), which openapi_test.go checks against real
//     responses and against every route registered here;
//   - the subscription webhooks (customer.subscription.*, invoice.paid,
//     invoice.payment_failed), which keep plan, seats, status and period in
//     Redis, and payment_intent.* for the off-session charges made here.
//
// # Off-session charges
//
// Direct purchases and auto-recharges charge the customer's saved card
// through Payments (stripePayments over the Stripe client; tests substitute
// declines and 3-D Secure). Each charge has our own purchase id — a
// checkout-like record written before the card is charged, carried in the
// PaymentIntent's metadata and in its idempotency key — and is credited
// through that id's reference: whoever credits first (the request, the worker
// or the payment_intent.succeeded webhook), the others credit nothing.
//
// # Auto-recharge worker
//
// RechargeWorker consumes the requests proxies enqueue (metering's
// tg:recharge stream, consumer group "billing"): it begins each request in
// one atomic script (only the account's current request; the balance still
// under the threshold; the period's spend plus the price within the spending
// limit), charges the card off session, and credits or records the failure —
// auto-recharge turns itself off after Options.MaxFailures failures in a row,
// keeping the reason. A request is acknowledged only once its outcome is
// stored; a crashed worker's requests are taken over and resume with the same
// idempotency key. cmd/tollgate starts one worker per billing server.
//
// # Imports
//
// billing imports pricing, internal/config, console, api and metering
// (through the Store and DailyUsage interfaces it declares, which
// *metering.Store satisfies) and stripe-go. It
// never builds a Redis command: every key and script belongs to metering. It
// must not import proxy or cmd (its tests run a real proxy, with limits, in
// front of internal/mockllm).
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
// concurrently and never reconfigured; no global stripe.Key is ever set. A
// RechargeWorker runs until the context given to Run is done; a charge it
// has begun is seen through (bounded by WorkerOptions.Timeout).
package billing
