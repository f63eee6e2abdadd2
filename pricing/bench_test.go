package pricing_test

import (
	"testing"

	"github.com/tollgate/tollgate/pricing"
)

var sinkInt int64

func BenchmarkCost(b *testing.B) {
	c := mustCatalog(b, defaultSpec())
	u := pricing.Usage{Input: 12345, CachedInput: 2048, Output: 987}
	for _, name := range []string{"claude-sonnet", "usd-opus"} {
		m := mustModel(b, c, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkInt += m.Cost(u, t0)
			}
		})
	}
}

func BenchmarkAppendCredits(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 32)
	mc := int64(-2_374_050_123)
	for b.Loop() {
		buf = pricing.AppendCredits(buf[:0], mc)
	}
	sinkInt += int64(len(buf))
}

func BenchmarkLookupBytes(b *testing.B) {
	c := mustCatalog(b, defaultSpec())
	name := []byte("claude-sonnet-4-5")
	b.ReportAllocs()
	for b.Loop() {
		m, _ := c.LookupBytes(name)
		sinkInt += m.MaxOutputTokens
	}
}
