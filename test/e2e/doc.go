// Package e2e runs the web console's end-to-end browser tests: a real
// `tollgate billing` process (built from ./cmd/tollgate) on a throwaway
// redis-server and stripe-mock, driven by e2e/console.test.mjs (playwright-core
// over Debian's chromium; no browser download). `make e2e` runs it with
// TOLLGATE_E2E=1; otherwise (plain `go test ./...`) it is skipped.
//
// The Go side plays the parts the browser cannot: the app that mints the
// customer's JWT, Stripe delivering a signed webhook, and a proxy settling
// calls (through metering, as a proxy's settle does). It serves these to the
// node test on a small helper HTTP server on 127.0.0.1.
package e2e
