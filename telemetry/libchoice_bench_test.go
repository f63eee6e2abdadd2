package telemetry

import (
	"io"
	"testing"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// The two libraries the issue allows, measured on what one call records:
// a request counter, two histograms (duration, time to first byte), four
// token counters and the credits counter — every series resolved once, as
// the proxy does. BenchmarkLib*Call is the call path, one goroutine and
// parallel (the counters shared by every core); BenchmarkLib*Scrape is one
// /metrics rendering of the same families.

func BenchmarkLibPrometheusCall(b *testing.B) {
	reg := prometheus.NewRegistry()
	req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_requests_total", Help: "h"}, []string{"endpoint", "model", "tier", "provider", "code"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "t_duration_seconds", Help: "h", Buckets: durationBuckets}, []string{"endpoint", "stream"})
	ttfb := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "t_ttfb_seconds", Help: "h", Buckets: ttfbBuckets}, []string{"endpoint", "stream"})
	tok := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_tokens_total", Help: "h"}, []string{"model", "kind"})
	cr := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_credits_total", Help: "h"}, []string{"model", "tier"})
	reg.MustRegister(req, dur, ttfb, tok, cr)
	r := req.WithLabelValues("chat.completions", "gpt-4o-mini", "core", "openai", "200")
	d, f := dur.WithLabelValues("chat.completions", "false"), ttfb.WithLabelValues("chat.completions", "false")
	t := [4]prometheus.Counter{tok.WithLabelValues("gpt-4o-mini", "input"), tok.WithLabelValues("gpt-4o-mini", "cached_input"),
		tok.WithLabelValues("gpt-4o-mini", "cache_write"), tok.WithLabelValues("gpt-4o-mini", "output")}
	c := cr.WithLabelValues("gpt-4o-mini", "core")
	call := func() {
		r.Inc()
		d.Observe(0.123)
		f.Observe(0.045)
		t[0].Add(120)
		t[1].Add(0)
		t[2].Add(0)
		t[3].Add(48)
		c.Add(0.216)
	}
	benchRecord(b, call)
	b.Run("scrape", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mfs, _ := reg.Gather()
			enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
			for _, mf := range mfs {
				_ = enc.Encode(mf)
			}
		}
	})
}

func BenchmarkLibVictoriaCall(b *testing.B) {
	s := vm.NewSet()
	r := s.NewCounter(`t_requests_total{endpoint="chat.completions",model="gpt-4o-mini",tier="core",provider="openai",code="200"}`)
	d := s.NewPrometheusHistogramExt(`t_duration_seconds{endpoint="chat.completions",stream="false"}`, durationBuckets)
	f := s.NewPrometheusHistogramExt(`t_ttfb_seconds{endpoint="chat.completions",stream="false"}`, ttfbBuckets)
	t := [4]*vm.Counter{s.NewCounter(`t_tokens_total{model="gpt-4o-mini",kind="input"}`), s.NewCounter(`t_tokens_total{model="gpt-4o-mini",kind="cached_input"}`),
		s.NewCounter(`t_tokens_total{model="gpt-4o-mini",kind="cache_write"}`), s.NewCounter(`t_tokens_total{model="gpt-4o-mini",kind="output"}`)}
	c := s.NewFloatCounter(`t_credits_total{model="gpt-4o-mini",tier="core"}`)
	call := func() {
		r.Inc()
		d.Update(0.123)
		f.Update(0.045)
		t[0].Add(120)
		t[1].Add(0)
		t[2].Add(0)
		t[3].Add(48)
		c.Add(0.216)
	}
	benchRecord(b, call)
	b.Run("scrape", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.WritePrometheus(io.Discard)
		}
	})
}

// benchRecord measures recording one call's series, from one goroutine and
// from all of them.
func benchRecord(b *testing.B, call func()) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			call()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call()
			}
		})
	})
}
