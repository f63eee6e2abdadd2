package proxy

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Request bodies of the handler benchmarks: a typical small chat call
// without max_tokens (so the proxy rewrites the body with its grant), and
// the same call streamed.
const (
	benchChatBody   = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark, please."}],"temperature":0.2}`
	benchStreamBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark, please."}],"stream":true}`
	benchKey        = "tg-benchmark-key-0123456789abcdefghijklmnopqrstuv"
)

// fakeMeter is an in-memory Meter that allocates nothing: the handler
// benchmarks measure the proxy, not Redis.
type fakeMeter struct {
	balance atomic.Int64
	holds   atomic.Int64
}

var benchIdent = metering.Identity{Account: "bench", KeyID: "key_bench"}

func (m *fakeMeter) Authenticate(_ context.Context, secret []byte) (metering.Identity, error) {
	if string(secret) != benchKey {
		return metering.Identity{}, metering.ErrBadKey
	}
	return benchIdent, nil
}

func (m *fakeMeter) Reserve(_ context.Context, r metering.HoldRequest) (metering.Hold, error) {
	m.holds.Add(1)
	out := r.MaxOutput
	return metering.Hold{ID: r.HoldID, Amount: r.Fixed + r.PerOutput*out, OutputTokens: out, Available: m.balance.Load()}, nil
}

func (m *fakeMeter) Settle(_ context.Context, s metering.Settlement) (metering.Charge, error) {
	m.holds.Add(-1)
	return metering.Charge{Charged: s.Cost, BalanceAfter: m.balance.Add(-s.Cost)}, nil
}

func (m *fakeMeter) Release(context.Context, string, string, string, *metering.Record) error {
	m.holds.Add(-1)
	return nil
}

func (m *fakeMeter) Generation(context.Context, string, string) (metering.Generation, error) {
	return metering.Generation{}, metering.ErrNotFound
}

func (m *fakeMeter) Ping(context.Context) error { return nil }
func (m *fakeMeter) RecordResponse(context.Context, string, string, string, int64) error {
	return nil
}
func (m *fakeMeter) StoredResponse(context.Context, string, string) (metering.StoredResponse, error) {
	return metering.StoredResponse{}, metering.ErrNotFound
}

var _ Meter = (*fakeMeter)(nil)

// benchEnv is the proxy served on an in-memory listener, forwarding to the
// mock provider on another in-memory listener: no kernel sockets, so the
// figures are the proxy's and fasthttp's own.
type benchEnv struct {
	srv    *Server
	meter  *fakeMeter
	mockLn *fasthttputil.InmemoryListener
	mock   *fasthttp.Server
	ln     *fasthttputil.InmemoryListener
	client *fasthttp.HostClient // to the proxy
	direct *fasthttp.HostClient // to the mock
}

func benchCatalog(tb testing.TB) *pricing.Catalog {
	tb.Helper()
	dep := func(m string) []pricing.DeploymentSpec {
		return []pricing.DeploymentSpec{{Provider: "openai", Model: m}}
	}
	c, err := pricing.New(pricing.Spec{
		CreditsPerUSD: 100000, FeeBps: 500,
		Tiers: map[string]pricing.TierSpec{"core": {Input: pricing.Per1K(1), Output: pricing.Per1K(2)}, "pro": {Input: pricing.Per1K(3), Output: pricing.Per1K(6)}},
		Models: []pricing.ModelSpec{
			{ID: "gpt-4o-mini", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("gpt-4o-mini")},
			{ID: "gpt-4.1-mini", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 32768, Deployments: dep("gpt-4.1-mini-2025")},
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newBenchEnv(tb testing.TB, with ...func(*Options)) *benchEnv {
	tb.Helper()
	e := &benchEnv{meter: &fakeMeter{}, mockLn: fasthttputil.NewInmemoryListener(), ln: fasthttputil.NewInmemoryListener()}
	e.meter.balance.Store(1 << 60)
	m := mockllm.New(mockllm.Config{})
	e.mock = &fasthttp.Server{Handler: m.Handler, ReadBufferSize: 16 << 10, MaxRequestBodySize: 64 << 20, CloseOnShutdown: true,
		Logger: quietLogger{}}
	go func() { _ = e.mock.Serve(e.mockLn) }()

	var err error
	opts := Options{
		Catalog:   benchCatalog(tb),
		Meter:     e.meter,
		Providers: []Provider{{Name: "openai", Kind: "openai", BaseURL: "http://mock.invalid/v1", APIKey: "sk-upstream"}},
	}
	for _, w := range with {
		w(&opts)
	}
	e.srv, err = New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	dialMock := func(string) (net.Conn, error) { return e.mockLn.Dial() }
	up := e.srv.rt.Load().upstreams["openai"]
	up.plain.Dial = dialMock
	t := e.srv.opts.Timeouts
	up.stream.Dial = func(string) (net.Conn, error) {
		c, err := e.mockLn.Dial()
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, firstByte: t.FirstByte, idle: t.StreamIdle}, nil
	}
	go func() { _ = e.srv.Serve(e.ln) }()
	e.client = &fasthttp.HostClient{Addr: "proxy", MaxConns: 1024, Dial: func(string) (net.Conn, error) { return e.ln.Dial() }}
	e.direct = &fasthttp.HostClient{Addr: "mock", MaxConns: 1024, Dial: dialMock}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.srv.Shutdown(ctx)
		_ = e.mock.Shutdown()
	})
	return e
}

// quietLogger drops fasthttp's connection errors (benchmarks close
// connections on purpose).
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// newRequest builds a client request to path of the proxy (or the mock: the
// path is the same, the mock ignores the key).
func newRequest(path, body string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("http://proxy" + path)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+benchKey)
	req.SetBodyString(body)
	return req
}

// roundTrip sends req with c and fails unless the answer is 200.
func roundTrip(tb testing.TB, c *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) {
	if err := c.Do(req, resp); err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		tb.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
}

// BenchmarkHandlerNonStream measures one metered non-streaming chat call
// through the proxy's fasthttp server (client, proxy and mock in process,
// on in-memory connections). Direct is the same call to the mock, the
// floor that every figure includes.
func BenchmarkHandlerNonStream(b *testing.B) {
	e := newBenchEnv(b)
	for _, bc := range []struct {
		name   string
		client *fasthttp.HostClient
		path   string
	}{
		{"proxy", e.client, "/v1/chat/completions"},
		{"direct", e.direct, "/v1/chat/completions"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := newRequest(bc.path, benchChatBody)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			roundTrip(b, bc.client, req, resp) // warm the pools and connections
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip(b, bc.client, req, resp)
			}
		})
	}
	b.Run("proxy-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req := newRequest("/v1/chat/completions", benchChatBody)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for pb.Next() {
				roundTrip(b, e.client, req, resp)
			}
		})
	})
}

// BenchmarkHandlerStream measures one metered streamed chat call (16 token
// events, the usage chunk added upstream and dropped, [DONE]), read whole.
func BenchmarkHandlerStream(b *testing.B) {
	e := newBenchEnv(b)
	for _, bc := range []struct {
		name   string
		client *fasthttp.HostClient
	}{
		{"proxy", e.client},
		{"direct", e.direct},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := newRequest("/v1/chat/completions", benchStreamBody)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			roundTrip(b, bc.client, req, resp)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip(b, bc.client, req, resp)
			}
		})
	}
}

// BenchmarkHandlerDirect calls Server.Handler on a reused RequestCtx: the
// handler's own cost without the proxy's server side (the upstream round trip
// to the in-memory mock is included).
func BenchmarkHandlerDirect(b *testing.B) {
	e := newBenchEnv(b)
	ctx := newHandlerCtx(benchChatBody)
	callHandler(b, e.srv, ctx)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		callHandler(b, e.srv, ctx)
	}
}

// newHandlerCtx returns a RequestCtx holding a metered chat request.
func newHandlerCtx(body string) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	req := newRequest("/v1/chat/completions", body)
	ctx.Init(req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}, nil)
	fasthttp.ReleaseRequest(req) // Init copied it
	return ctx
}

// callHandler runs the proxy handler once on ctx and resets the response.
func callHandler(tb testing.TB, s *Server, ctx *fasthttp.RequestCtx) {
	ctx.Response.Reset()
	s.Handler(ctx)
	if ctx.Response.StatusCode() != fasthttp.StatusOK {
		tb.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}
