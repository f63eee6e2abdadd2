package proxy_test

import (
	"io"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/telemetry"
)

// telemetryVariants are the proxy without metrics and call log, with the
// Prometheus metrics (telemetry.Proxy), and with both (the JSON call log
// line at Info, written to io.Discard: its encoding, not a disk's speed).
func telemetryVariants(tb testing.TB) []struct {
	name string
	with func(*proxy.Options)
} {
	jsonLog := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	observer := func(o *proxy.Options) { o.Observer = telemetry.New().NewProxy(o.Catalog, []string{"openai"}) }
	return []struct {
		name string
		with func(*proxy.Options)
	}{
		{"none", func(o *proxy.Options) { o.LogCalls = proxy.LogCallsNone }},
		{"metrics", func(o *proxy.Options) { observer(o); o.LogCalls = proxy.LogCallsNone }},
		{"log", func(o *proxy.Options) { o.Logger = jsonLog }},
		{"metrics+log", func(o *proxy.Options) { observer(o); o.Logger = jsonLog }},
	}
}

// BenchmarkHandlerTelemetry is BenchmarkHandlerNonStream/proxy without and
// with metrics and the per-call log line: what each costs a call.
func BenchmarkHandlerTelemetry(b *testing.B) {
	for _, v := range telemetryVariants(b) {
		b.Run(v.name, func(b *testing.B) {
			call := proxy.BenchCall(b, v.with)
			for range 100 {
				call()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				call()
			}
		})
	}
}
