// Package console serves Tollgate's web console: the static front end
// (plain ES modules, hand-written CSS, an SVG chart drawn by hand; no build
// step, no CDN) embedded in the binary with go:embed, under a strict
// Content-Security-Policy.
//
// The console is a client of the billing API only: customers arrive with
// their app's JWT in the URL fragment (/console/#token=…), which the page
// moves to sessionStorage and sends as an Authorization header, never in a
// URL; operators sign in with the admin token the same way. Every value the
// server returns is rendered with textContent, never as markup. A
// customer's console asks GET /v1/me first and shows only the sections and
// controls the caller's role may use (its permissions), so a member never
// meets a 403.
//
// # Imports
//
// console imports only the standard library. billing mounts Handler under
// /console/ and serves the page's settings (GET /console/config.json) itself,
// since only billing knows which features are configured.
//
// # Lifetimes
//
// A Handler is immutable after New and safe for concurrent use; the assets
// are read-only embedded files.
package console
