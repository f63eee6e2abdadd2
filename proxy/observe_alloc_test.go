//go:build !race

package proxy_test

import (
	"testing"

	"github.com/tollgate/tollgate/proxy"
)

// TestHandlerAllocsTelemetry pins the handler's allocations with metrics
// on (the series are resolved once: 0) and with the call log line (zap
// allocates the line's array of fields: 1), as TestHandlerAllocsNonStream
// does without either.
func TestHandlerAllocsTelemetry(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation test runs whole calls")
	}
	for _, v := range telemetryVariants(t) {
		ceiling := 0.1 // request ids: one slab per ~40 calls
		if v.name == "log" || v.name == "metrics+log" {
			ceiling = 1.1
		}
		t.Run(v.name, func(t *testing.T) {
			call := proxy.BenchCall(t, v.with)
			for range 100 {
				call()
			}
			got := testing.AllocsPerRun(1000, call)
			if got > ceiling {
				t.Fatalf("%s: %.2f allocs/op, ceiling %.1f", v.name, got, ceiling)
			}
			t.Logf("%s: %.2f allocs/op (ceiling %.1f)", v.name, got, ceiling)
		})
	}
}
