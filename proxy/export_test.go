package proxy

import (
	"testing"
	"time"
)

// Test helpers shared with the external proxy_test package.

// MembersAt reads a JSON document with an independent strict parser and
// returns the values of every member at path, duplicates included.
var MembersAt = membersAt

// BenchCatalog is the handler benchmarks' catalog.
var BenchCatalog = benchCatalog

// BenchCall returns one metered non-streaming chat call through the
// handler benchmarks' proxy (in-memory mock provider, fake Meter), built
// with with applied to its Options; the call fails tb unless answered 200.
func BenchCall(tb testing.TB, with func(*Options)) func() {
	e := newBenchEnv(tb, with)
	ctx := newHandlerCtx(benchChatBody)
	return func() { callHandler(tb, e.srv, ctx) }
}

// SetClock sets the clock of s's deployment breakers (before any call).
func SetClock(s *Server, now func() time.Time) { s.now = now }

// MinimalPDF hand-writes a minimal PDF of n pages (media_test.go).
func MinimalPDF(n int) []byte { return testPDF(n, n, " ") }

// PDFPageTokens is what an estimate counts for a PDF page.
const PDFPageTokens = pdfPageTokens

// OnOrphan has s call f as each stream whose client left starts to be read
// on for its usage (orphan.go).
func OnOrphan(s *Server, f func()) { s.orphaned.Store(&f) }
