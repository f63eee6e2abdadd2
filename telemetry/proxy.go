package telemetry

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// Label values for what a call did not reach.
const (
	UnknownModel = "unknown" // the call named no model of the catalog
	NoTier       = "none"
	NoProvider   = "none" // no provider answered
)

// Token kinds of tollgate_tokens_total.
var tokenKinds = [...]string{"input", "cached_input", "cache_write", "output"}

// Endpoints are the proxy's metered endpoints (the endpoint label's values).
var Endpoints = []string{"chat.completions", "completions", "embeddings", "responses", "messages", "moderations"}

// Proxy is the proxy's metric families; it implements proxy.Observer.
type Proxy struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	ttfb      *prometheus.HistogramVec
	tokens    *prometheus.CounterVec
	upstream  *prometheus.CounterVec
	overHold  prometheus.Counter
	breaker   *prometheus.GaugeVec
	trips     *prometheus.CounterVec
	credits   *creditsVec
	providers []string

	mu sync.Mutex // serialises the builders of the maps below
	// Copy-on-write maps of resolved series: read with one atomic load.
	reqs   atomic.Pointer[map[reqKey]prometheus.Counter]
	models atomic.Pointer[map[string]*modelSeries]
	times  atomic.Pointer[map[timeKey]timeSeries]
	ups    atomic.Pointer[map[upKey]prometheus.Counter]
}

type reqKey struct {
	endpoint, model, provider string
	code                      int
}

type timeKey struct {
	endpoint string
	stream   bool
}

type timeSeries struct{ duration, ttfb prometheus.Observer }

type upKey struct{ provider, reason string }

type modelSeries struct {
	tokens  [len(tokenKinds)]prometheus.Counter
	credits *atomic.Int64 // mc
}

var _ proxy.Observer = (*Proxy)(nil)

// NewProxy registers the proxy's families and resolves the series of every
// model, endpoint and provider of catalog (status 200), so that the first
// calls find them ready; providers are the configured provider names.
func (r *Registry) NewProxy(catalog *pricing.Catalog, providers []string) *Proxy {
	p := &Proxy{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_requests_total",
			Help: "Calls to the metered endpoints, by HTTP status answered; failed and refused calls included.",
		}, []string{"endpoint", "model", "tier", "provider", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_request_duration_seconds",
			Help:    "Time from a call's arrival until it was answered (a stream: until it ended).",
			Buckets: durationBuckets,
		}, []string{"endpoint", "stream"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_time_to_first_byte_seconds",
			Help:    "Time from a call's arrival until the provider's first byte (a stream: its first event).",
			Buckets: ttfbBuckets,
		}, []string{"endpoint", "stream"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_tokens_total",
			Help: "Tokens of the calls charged, by kind (input, cached_input, cache_write, output; reasoning is output).",
		}, []string{"model", "kind"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_upstream_errors_total",
			Help: "Failed attempts at a provider, by reason (network, timeout, server_error, rate_limited, refused, client_error, stream_cut, stream_idle).",
		}, []string{"provider", "reason"}),
		overHold: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_calls_over_hold_total",
			Help: "Calls charged more than their hold covered (each is a gap in the hold's sizing).",
		}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tollgate_deployment_breaker_state",
			Help: "State of a deployment's circuit breaker: 0 closed, 1 open (skipped while a fallback exists), 2 half-open (probed). Only deployments whose breaker ever changed appear.",
		}, []string{"provider", "model"}),
		trips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_deployment_breaker_changes_total",
			Help: "State changes of deployments' circuit breakers, by the state entered.",
		}, []string{"provider", "model", "to"}),
		credits:   newCreditsVec(),
		providers: providers,
	}
	r.reg.MustRegister(p.requests, p.duration, p.ttfb, p.tokens, p.upstream, p.overHold, p.breaker, p.trips, p.credits)
	p.reqs.Store(&map[reqKey]prometheus.Counter{})
	p.models.Store(&map[string]*modelSeries{})
	p.times.Store(&map[timeKey]timeSeries{})
	p.ups.Store(&map[upKey]prometheus.Counter{})
	for _, ep := range Endpoints {
		for _, stream := range []bool{false, true} {
			p.timeSeries(ep, stream)
		}
	}
	for _, m := range catalog.Models() {
		p.model(m)
		for _, ep := range Endpoints {
			for _, d := range m.Deployments {
				p.request(ep, m, d.Provider, 200)
			}
		}
	}
	for _, name := range providers {
		for _, reason := range []string{proxy.ReasonNetwork, proxy.ReasonTimeout, proxy.ReasonServerError, proxy.ReasonRateLimited} {
			p.upstreamSeries(name, reason)
		}
	}
	return p
}

// CallEnded implements proxy.Observer.
func (p *Proxy) CallEnded(ev proxy.CallEvent) {
	p.request(ev.Endpoint, ev.Model, ev.Provider, ev.Status).Inc()
	ts := p.timeSeries(ev.Endpoint, ev.Stream)
	ts.duration.Observe(ev.Latency.Seconds())
	if ev.TTFB > 0 {
		ts.ttfb.Observe(ev.TTFB.Seconds())
	}
	if ev.Model == nil {
		return
	}
	ms := p.model(ev.Model)
	for i, n := range [...]int64{ev.Input, ev.CachedInput, ev.CacheWrite, ev.Output} {
		if n > 0 {
			ms.tokens[i].Add(float64(n))
		}
	}
	if ev.Charged > 0 {
		ms.credits.Add(ev.Charged)
	}
	if ev.OverHold {
		p.overHold.Inc()
	}
}

// UpstreamFailed implements proxy.Observer.
func (p *Proxy) UpstreamFailed(provider, reason string) {
	p.upstreamSeries(provider, reason).Inc()
}

var _ proxy.BreakerObserver = (*Proxy)(nil)

// breakerValues are tollgate_deployment_breaker_state's values.
var breakerValues = map[string]float64{proxy.BreakerClosed: 0, proxy.BreakerOpen: 1, proxy.BreakerHalfOpen: 2}

// BreakerChanged implements proxy.BreakerObserver (rare: no series cache).
func (p *Proxy) BreakerChanged(provider, model, _, to string) {
	p.breaker.WithLabelValues(provider, model).Set(breakerValues[to])
	p.trips.WithLabelValues(provider, model, to).Inc()
}

func (p *Proxy) request(endpoint string, m *pricing.Model, provider string, code int) prometheus.Counter {
	model := UnknownModel
	if m != nil {
		model = m.ID
	}
	if provider == "" {
		provider = NoProvider
	}
	k := reqKey{endpoint, model, provider, code}
	if c, ok := (*p.reqs.Load())[k]; ok {
		return c
	}
	tier := NoTier
	if m != nil {
		tier = m.Tier
	}
	return cowGet(&p.mu, &p.reqs, k, func() prometheus.Counter {
		return p.requests.WithLabelValues(endpoint, model, tier, provider, strconv.Itoa(code))
	})
}

func (p *Proxy) timeSeries(endpoint string, stream bool) timeSeries {
	k := timeKey{endpoint, stream}
	if t, ok := (*p.times.Load())[k]; ok {
		return t
	}
	return cowGet(&p.mu, &p.times, k, func() timeSeries {
		s := strconv.FormatBool(stream)
		return timeSeries{p.duration.WithLabelValues(endpoint, s), p.ttfb.WithLabelValues(endpoint, s)}
	})
}

func (p *Proxy) model(m *pricing.Model) *modelSeries {
	if ms, ok := (*p.models.Load())[m.ID]; ok {
		return ms
	}
	return cowGet(&p.mu, &p.models, m.ID, func() *modelSeries {
		ms := &modelSeries{credits: p.credits.series(m.ID, m.Tier)}
		for i, kind := range tokenKinds {
			ms.tokens[i] = p.tokens.WithLabelValues(m.ID, kind)
		}
		return ms
	})
}

func (p *Proxy) upstreamSeries(provider, reason string) prometheus.Counter {
	k := upKey{provider, reason}
	if c, ok := (*p.ups.Load())[k]; ok {
		return c
	}
	return cowGet(&p.mu, &p.ups, k, func() prometheus.Counter {
		return p.upstream.WithLabelValues(provider, reason)
	})
}

// cowGet returns m's value for k, building it with mk and publishing a copy
// of the map with it when it is missing. Only the first call of a
// combination takes the lock.
func cowGet[K comparable, V any](mu *sync.Mutex, m *atomic.Pointer[map[K]V], k K, mk func() V) V {
	mu.Lock()
	defer mu.Unlock()
	old := *m.Load()
	if v, ok := old[k]; ok {
		return v
	}
	v := mk()
	next := make(map[K]V, len(old)+1)
	for kk, vv := range old {
		next[kk] = vv
	}
	next[k] = v
	m.Store(&next)
	return v
}

// creditsVec is tollgate_credits_charged_total: milli-credits counted
// exactly in integers, exposed in credits at scrape time.
type creditsVec struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	m    map[[2]string]*atomic.Int64 // model, tier
}

func newCreditsVec() *creditsVec {
	return &creditsVec{
		desc: prometheus.NewDesc("tollgate_credits_charged_total",
			"Credits charged for calls (in credits, three decimals), by model and tier.", []string{"model", "tier"}, nil),
		m: make(map[[2]string]*atomic.Int64),
	}
}

func (v *creditsVec) series(model, tier string) *atomic.Int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := [2]string{model, tier}
	if c, ok := v.m[k]; ok {
		return c
	}
	c := new(atomic.Int64)
	v.m[k] = c
	return c
}

func (v *creditsVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

func (v *creditsVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, c := range v.m {
		ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, credits(c.Load()), k[0], k[1])
	}
}
