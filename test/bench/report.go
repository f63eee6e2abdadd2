package main

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is everything one harness run measured (written as results.json).
type Results struct {
	Machine  Machine           `json:"machine"`
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Settings map[string]string `json:"settings"`
	// Closed: non-streaming, closed loop at fixed concurrency, per target.
	Closed map[string]LoadResult `json:"closed_loop"`
	// Open: non-streaming, open loop at a fixed rate, per target.
	Open map[string]LoadResult `json:"open_loop"`
	// TTFB: streaming, time to the first body byte, open loop.
	TTFB map[string]LoadResult `json:"stream_ttfb"`
	// Streams: RSS held per open slow stream (bare and tollgate).
	Streams map[string]streamHold `json:"open_streams,omitempty"`
	// HandlerAllocs is allocs/op of BenchmarkHandlerNonStream/proxy.
	HandlerAllocs    float64  `json:"handler_allocs_per_op"`
	HandlerBenchLine string   `json:"handler_bench_line,omitempty"`
	Targets          []Target `json:"targets"`
}

// Target is one of issue 6's speed targets and whether this run met it.
type Target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"`
	Min   bool    `json:"at_least,omitempty"` // the value must be ≥ Limit (else ≤)
	Pass  bool    `json:"pass"`
	Note  string  `json:"note,omitempty"`
}

func settingsView(s settings) map[string]string {
	return map[string]string{
		"conns": fmt.Sprint(s.conns), "warmup": s.warmup.String(), "duration": s.dur.String(),
		"rate": fmt.Sprint(s.rate), "open_duration": s.openDur.String(),
		"ttfb_rate": fmt.Sprint(s.ttfbRate), "ttfb_duration": s.ttfbDur.String(), "streams": fmt.Sprint(s.streams),
		"request_body": chatBody, "stream_body": streamBody, "slow_stream_body": slowStreamBody,
	}
}

// evaluate fills Targets from the measurements.
func (r *Results) evaluate() {
	add := func(name string, value, limit float64, unit string, atLeast bool, note string) {
		if math.IsNaN(value) || math.IsInf(value, 0) {
			r.Targets = append(r.Targets, Target{Name: name, Limit: limit, Unit: unit, Min: atLeast, Note: "not measured"})
			return
		}
		pass := value <= limit
		if atLeast {
			pass = value >= limit
		}
		r.Targets = append(r.Targets, Target{Name: name, Value: round1(value), Limit: limit, Unit: unit, Min: atLeast, Pass: pass, Note: note})
	}
	bare, tg := r.Closed["bare"], r.Closed["tollgate"]
	add("throughput at 64 conns vs bare forwarder", 100*ratio(tg.RPS, bare.RPS), 50, "%", true, "")
	// The latency targets are compared with what the bare forwarder itself
	// adds in the same run: the floor of any proxy on this machine.
	floor := func(v float64) string { return fmt.Sprintf("bare forwarder: %.0f µs", v) }
	od, ob, ot := r.Open["direct"], r.Open["bare"], r.Open["tollgate"]
	add("open loop added p50 over direct", ot.P50-od.P50, 150, "µs", false, floor(ob.P50-od.P50))
	add("open loop added p99 over direct", ot.P99-od.P99, 500, "µs", false, floor(ob.P99-od.P99))
	td, tb := r.TTFB["direct"], r.TTFB["bare"]
	add("stream added TTFB p50 over direct", r.TTFB["tollgate"].P50-td.P50, 150, "µs", false, floor(tb.P50-td.P50))
	if h, ok := r.Streams["tollgate"]; ok {
		add("proxy memory per open stream", h.PerStreamKiB, 50, "KiB", false, fmt.Sprintf("%d streams", h.Streams))
	}
	add("proxy CPU per call vs bare forwarder", ratio(tg.CPUPerCall, bare.CPUPerCall), 2, "×", false, "")
	if r.HandlerBenchLine != "" {
		add("allocs per non-streaming call (handler benchmark)", r.HandlerAllocs, 10, "allocs/op", false, "")
	}
	// Issue 12: metrics cost within 5 % of the same proxy without them.
	nm := r.Closed["tollgate-nometrics"]
	add("metrics on: throughput vs metrics off (issue 12)", 100*ratio(tg.RPS, nm.RPS), 95, "%", true, "")
	add("metrics on: CPU per call vs metrics off (issue 12)", 100*ratio(tg.CPUPerCall, nm.CPUPerCall), 105, "%", false, "")
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// printTable prints the one table: what each target measured, then the
// verdicts against issue 6.
func (r *Results) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	f0 := func(v float64) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f", v)
	}
	f1 := func(v float64) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f", v)
	}
	cd, cb, cr, ct := r.Closed["direct"], r.Closed["bare"], r.Closed["bare+redis"], r.Closed["tollgate"]
	od, ob, or, ot := r.Open["direct"], r.Open["bare"], r.Open["bare+redis"], r.Open["tollgate"]
	td, tb, tr, tt := r.TTFB["direct"], r.TTFB["bare"], r.TTFB["bare+redis"], r.TTFB["tollgate"]
	add := func(a, b LoadResult, f func(LoadResult) float64) string {
		if len(a.Percentiles) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f", f(a)-f(b))
	}
	p50 := func(l LoadResult) float64 { return l.P50 }
	p99 := func(l LoadResult) float64 { return l.P99 }
	row("metric", "direct", "bare fwd", "bare+2 redis RTT", "tollgate", "tollgate/bare")
	row(fmt.Sprintf("non-stream, %s conns: req/s", r.Settings["conns"]), f0(cd.RPS), f0(cb.RPS), f0(cr.RPS), f0(ct.RPS), pctOf(ct.RPS, cb.RPS))
	row("  p50 latency µs", f0(cd.P50), f0(cb.P50), f0(cr.P50), f0(ct.P50), "")
	row("  p99 latency µs", f0(cd.P99), f0(cb.P99), f0(cr.P99), f0(ct.P99), "")
	row("  CPU per call µs (own process)", f1(cd.CPUPerCall), f1(cb.CPUPerCall), f1(cr.CPUPerCall), f1(ct.CPUPerCall), xOf(ct.CPUPerCall, cb.CPUPerCall))
	row("  redis-server CPU per call µs", "", "", f1(cr.RedisCPUPerCall), f1(ct.RedisCPUPerCall), "")
	row(fmt.Sprintf("open loop %s req/s: p50 µs", r.Settings["rate"]), f0(od.P50), f0(ob.P50), f0(or.P50), f0(ot.P50), "")
	row("  p99 µs", f0(od.P99), f0(ob.P99), f0(or.P99), f0(ot.P99), "")
	row("  added p50 over direct µs", "", add(ob, od, p50), add(or, od, p50), add(ot, od, p50), "")
	row("  added p99 over direct µs", "", add(ob, od, p99), add(or, od, p99), add(ot, od, p99), "")
	row(fmt.Sprintf("stream TTFB at %s/s: p50 µs", r.Settings["ttfb_rate"]), f0(td.P50), f0(tb.P50), f0(tr.P50), f0(tt.P50), "")
	row("  p99 µs", f0(td.P99), f0(tb.P99), f0(tr.P99), f0(tt.P99), "")
	row("  added p50 over direct µs", "", add(tb, td, p50), add(tr, td, p50), add(tt, td, p50), "")
	if len(r.Streams) > 0 {
		hb, ht := r.Streams["bare"], r.Streams["tollgate"]
		row(fmt.Sprintf("open streams (%d): RSS KiB/stream", ht.Streams), "", f1(hb.PerStreamKiB), "", f1(ht.PerStreamKiB), "")
	}
	if r.HandlerBenchLine != "" {
		row("allocs/op (BenchmarkHandlerNonStream)", "", "", "", fmt.Sprintf("%.0f", r.HandlerAllocs), "")
	}
	_ = tw.Flush()

	// The proxy with and without its Prometheus metrics, in the same run.
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	cn, on, tn := r.Closed["tollgate-nometrics"], r.Open["tollgate-nometrics"], r.TTFB["tollgate-nometrics"]
	row("metrics cost", "tollgate", "metrics off", "on/off")
	row(fmt.Sprintf("non-stream, %s conns: req/s", r.Settings["conns"]), f0(ct.RPS), f0(cn.RPS), pct1(ct.RPS, cn.RPS))
	row("  CPU per call µs (own process)", f1(ct.CPUPerCall), f1(cn.CPUPerCall), pct1(ct.CPUPerCall, cn.CPUPerCall))
	row("  p50 / p99 latency µs", f0(ct.P50)+" / "+f0(ct.P99), f0(cn.P50)+" / "+f0(cn.P99), "")
	row(fmt.Sprintf("open loop %s req/s: p50 / p99 µs", r.Settings["rate"]), f0(ot.P50)+" / "+f0(ot.P99), f0(on.P50)+" / "+f0(on.P99), "")
	row(fmt.Sprintf("stream TTFB at %s/s: p50 / p99 µs", r.Settings["ttfb_rate"]), f0(tt.P50)+" / "+f0(tt.P99), f0(tn.P50)+" / "+f0(tn.P99), "")
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target (issue 6)\tmeasured\tlimit\tresult\tnote\t")
	for _, t := range r.Targets {
		op := "≤"
		if t.Min {
			op = "≥"
		}
		verdict := "FAIL"
		if t.Pass {
			verdict = "ok"
		}
		if t.Note == "not measured" {
			verdict = "not measured"
		}
		note := t.Note
		if note == "not measured" {
			note = ""
		}
		fmt.Fprintf(tw, "%s\t%.1f %s\t%s %g %s\t%s\t%s\t\n", t.Name, t.Value, t.Unit, op, t.Limit, t.Unit, verdict, note)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nmachine: %s (load generator, mock, redis and proxy share these cores)\n", r.Machine.String())
}

func pctOf(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func xOf(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// svg plots the latency percentiles of each run, one panel per scenario,
// one line per target. Hand-written: no dependencies.
func (r *Results) svg() []byte {
	type panel struct {
		title string
		runs  map[string]LoadResult
	}
	panels := []panel{
		{fmt.Sprintf("non-stream, closed loop, %s conns", r.Settings["conns"]), r.Closed},
		{fmt.Sprintf("non-stream, open loop %s req/s", r.Settings["rate"]), r.Open},
		{fmt.Sprintf("stream TTFB, %s streams/s", r.Settings["ttfb_rate"]), r.TTFB},
	}
	names := []string{"direct", "bare", "bare+redis", "tollgate"}
	colors := map[string]string{"direct": "#6b7280", "bare": "#2563eb", "bare+redis": "#16a34a", "tollgate": "#dc2626"}
	labels := map[string]string{"direct": "direct to mock", "bare": "bare fasthttp forwarder",
		"bare+redis": "forwarder + 2 Redis round trips", "tollgate": "tollgate (metered)"}
	const (
		pw, ph       = 360.0, 260.0 // panel plot area
		ml, mt, gap  = 64.0, 56.0, 48.0
		width        = ml + 3*pw + 2*gap + 24
		height       = mt + ph + 96
		xTicksMargin = 12.0
	)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="system-ui, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15" font-weight="bold">Tollgate latency percentiles (µs, log scale) — %s</text>`+"\n", ml, html.EscapeString(r.Started.Format("2006-01-02 15:04 UTC")))
	fmt.Fprintf(&b, `<text x="%.0f" y="40" fill="#555">%s</text>`+"\n", ml, html.EscapeString(r.Machine.String()))
	for pi, p := range panels {
		x0 := ml + float64(pi)*(pw+gap)
		y0 := mt
		// Log scale: the tail is orders of magnitude above the median.
		minV, maxV := math.Inf(1), 0.0
		for _, n := range names {
			for _, pt := range p.runs[n].Percentiles {
				if pt[1] > 0 {
					minV, maxV = math.Min(minV, pt[1]), math.Max(maxV, pt[1])
				}
			}
		}
		if maxV == 0 {
			minV, maxV = 1, 10
		}
		lo := math.Pow(10, math.Floor(math.Log10(minV)))
		hi := math.Pow(10, math.Ceil(math.Log10(maxV)))
		if hi <= lo {
			hi = lo * 10
		}
		yOf := func(v float64) float64 {
			v = math.Max(v, lo)
			return y0 + ph - (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*ph
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-weight="bold">%s</text>`+"\n", x0, y0-6, html.EscapeString(p.title))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#ccc"/>`+"\n", x0, y0, pw, ph)
		for dec := lo; dec <= hi*1.001; dec *= 10 {
			for _, m := range []float64{1, 2, 5} {
				v := dec * m
				if v > hi*1.001 {
					break
				}
				y := yOf(v)
				stroke := "#f3f3f3"
				if m == 1 {
					stroke = "#ddd"
				}
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x0, y, x0+pw, y, stroke)
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0-6, y+4, fmtTick(v))
			}
		}
		nx := len(plotPercentiles)
		xAt := func(i int) float64 { return x0 + xTicksMargin + float64(i)*(pw-2*xTicksMargin)/float64(nx-1) }
		for i, pc := range plotPercentiles {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">p%g</text>`+"\n", xAt(i), y0+ph+16, pc)
		}
		for _, n := range names {
			pts := p.runs[n].Percentiles
			if len(pts) == 0 {
				continue
			}
			var poly []string
			for i, pt := range pts {
				poly = append(poly, fmt.Sprintf("%.1f,%.1f", xAt(i), yOf(pt[1])))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[n], strings.Join(poly, " "))
			for _, pp := range poly {
				xy := strings.Split(pp, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`+"\n", xy[0], xy[1], colors[n])
			}
		}
	}
	ly := mt + ph + 44
	for i, n := range names {
		x := ml + float64(i)*230
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", x, ly, x+24, ly, colors[n])
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x+30, ly+4, labels[n])
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#555">Load generator, mock provider, Redis and the proxy share the machine's cores; latency from the scheduled send time (open loop).</text>`+"\n", ml, ly+28)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func fmtTick(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gs", v/1e6)
	case v >= 1000:
		return fmt.Sprintf("%gms", v/1000)
	}
	return fmt.Sprintf("%gµs", v)
}

func pct1(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f%%", 100*a/b)
}
