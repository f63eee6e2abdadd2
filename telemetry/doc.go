// Package telemetry exposes Tollgate's Prometheus metrics: the families of
// the proxy (calls, durations, tokens, credits, upstream errors, calls over
// their hold, leased credits), of billing (webhooks), of the Redis store
// (errors), and the Go runtime and process collectors, served on /metrics
// in the Prometheus text format by its own HTTP server — never on the
// public port.
//
// The library is prometheus/client_golang: measured against
// VictoriaMetrics/metrics on what one call records (libchoice_bench_test.go),
// it took about half the time per call, 0 allocations either way, and it
// writes the HELP/TYPE lines and standard go_/process_ families that
// promtool and users expect.
//
// Label cardinality is bounded by construction: endpoint is one of the
// proxy's metered endpoints, model a catalog id (or "unknown" when the call
// named none of them), tier a catalog tier (or "none"), provider a
// configured provider name (or "none" when no provider answered), code an
// HTTP status, reason and kind fixed sets. No account or key id is a label.
//
// Hot path: each series a call may touch is resolved once and kept in a
// copy-on-write map (an atomic load and a map read per call, no lock, no
// allocation); a new combination (a status code not seen before, a model
// added by a reload) is built once under a mutex. Credits are counted in
// milli-credits (an atomic integer add) and exposed in credits with their
// three decimals at scrape time.
//
// Ownership and lifetimes: a Registry lives as long as the process; the
// Proxy, Billing and store hook it hands out are safe for concurrent use and
// keep nothing of the events they are given.
//
// Imports of ours: proxy (the Observer it implements and its event type),
// pricing (the catalog it resolves series from).
package telemetry
