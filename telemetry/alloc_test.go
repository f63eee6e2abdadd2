//go:build !race

package telemetry

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/proxy"
)

// TestCallEndedAllocs: recording a call allocates nothing once its series
// exist (the proxy's handler stays at 0 allocs/op with metrics on).
func TestCallEndedAllocs(t *testing.T) {
	cat := testCatalog(t)
	p := New().NewProxy(cat, []string{"openai"})
	mini, _ := cat.Lookup("gpt-4o-mini")
	ev := proxy.CallEvent{Endpoint: "chat.completions", Model: mini, Provider: "openai", Status: 200,
		Latency: 120 * time.Millisecond, TTFB: 40 * time.Millisecond, Input: 100, CachedInput: 20, Output: 58, Charged: 216}
	p.CallEnded(ev)
	if got := testing.AllocsPerRun(1000, func() {
		p.CallEnded(ev)
		p.UpstreamFailed("openai", proxy.ReasonTimeout)
	}); got != 0 {
		t.Fatalf("CallEnded: %.2f allocs/op, want 0", got)
	}
}

func BenchmarkCallEnded(b *testing.B) {
	cat := testCatalog(b)
	p := New().NewProxy(cat, []string{"openai"})
	mini, _ := cat.Lookup("gpt-4o-mini")
	ev := proxy.CallEvent{Endpoint: "chat.completions", Model: mini, Provider: "openai", Status: 200,
		Latency: 120 * time.Millisecond, TTFB: 40 * time.Millisecond, Input: 100, CachedInput: 20, Output: 58, Charged: 216}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.CallEnded(ev)
		}
	})
}
