package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/pricing"
)

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	Catalog   *pricing.Catalog // required
	Providers []Provider       // required: every provider the catalog names
	Meter     Meter            // required
	Limiter   Limiter          // optional plan/rate limits
	OnSettle  SettleHook       // optional
	Logger    *zap.Logger      // default: no logging
	Observer  Observer         // optional: told how each call ended (metrics)
	// LogCalls is which calls get an Info line when they end: LogCallsAll
	// (default), LogCallsErrors (status ≥ 400 or failed) or LogCallsNone.
	LogCalls string

	MaxBodyBytes     int           // request body limit (413 past it); default 8 MiB
	MaxResponseBytes int           // non-streamed upstream body limit; default 64 MiB
	MaxEventBytes    int           // longest SSE line accepted from upstream; default 8 MiB
	Timeouts         Timeouts      // upstream bounds; defaults 5s/120s/600s/120s/30m
	ReadTimeout      time.Duration // reading a client request; default 30s
	IdleTimeout      time.Duration // idle keep-alive clients; default 120s
	MaxConnsPerIP    int           // 0 = unlimited
	Concurrency      int           // default 256K
	// Breaker is each deployment's circuit breaker (breaker.go).
	Breaker Breaker
	// Retry resends a call that failed before the provider could have
	// started it (retry.go). Default: no retries.
	Retry Retry
	// MinOutputTokens is the smallest output grant a call without max tokens
	// may start with; below it the call is refused with 402. Default 16.
	MinOutputTokens int64
}

func (o *Options) init() {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 8 << 20
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 64 << 20
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = 8 << 20
	}
	t := &o.Timeouts
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Connect, 5*time.Second)
	def(&t.FirstByte, 120*time.Second)
	def(&t.Request, 600*time.Second)
	def(&t.StreamIdle, 120*time.Second)
	def(&t.Stream, 30*time.Minute)
	def(&o.ReadTimeout, 30*time.Second)
	def(&o.IdleTimeout, 120*time.Second)
	if o.Concurrency <= 0 {
		o.Concurrency = 256 * 1024
	}
	if o.MinOutputTokens <= 0 {
		o.MinOutputTokens = 16
	}
	o.Breaker.init()
	o.Retry.init()
}

// Server is the metering proxy. Create it with New; it is safe for concurrent use.
type Server struct {
	opts  Options
	log   *zap.Logger
	meter Meter
	ids   *idGen
	srv   *fasthttp.Server
	// rt is the live configuration (reload.go): each call loads it once.
	rt       atomic.Pointer[liveConf]
	reloadMu sync.Mutex // one Reload at a time

	draining atomic.Bool
	active   atomic.Int64 // metered calls from the handler's start to their end (streams included)
	streams  sync.Map     // *streamBody → struct{}: open streams, aborted at drain deadline
	// orphaned, when set (tests), is called as each stream whose client
	// left starts to be read on for its usage (orphan.go).
	orphaned atomic.Pointer[func()]
	// recording: stored responses whose owner is being recorded
	// (account+"\x00"+id → provider), until the record is written.
	recording sync.Map
	inflight  sync.WaitGroup

	// breakers are the deployments' circuit breakers by provider and model
	// (breaker.go), kept across reloads.
	breakersMu sync.Mutex
	breakers   map[string]*breaker
	now        func() time.Time // the breakers' clock; tests move it
}

// New validates opts and builds a Server.
func New(opts Options) (*Server, error) {
	opts.init()
	if opts.Catalog == nil || opts.Meter == nil {
		return nil, errors.New("proxy: Catalog and Meter are required")
	}
	s := &Server{opts: opts, log: opts.Logger.Named("proxy"), meter: opts.Meter, ids: newIDGen(), now: time.Now}
	rt, err := s.buildRuntime(Live{Catalog: opts.Catalog, Providers: opts.Providers, Limiter: opts.Limiter}, nil)
	if err != nil {
		return nil, err
	}
	s.rt.Store(rt)
	s.srv = &fasthttp.Server{
		Handler:            s.Handler,
		Name:               "tollgate",
		Concurrency:        opts.Concurrency,
		MaxRequestBodySize: opts.MaxBodyBytes,
		ReadTimeout:        opts.ReadTimeout,
		// Each answer is written within the time a whole call may take;
		// fasthttp sets it before each response, so it also clears the
		// per-write deadlines a stream sets (streamBody.bound).
		WriteTimeout:                  opts.Timeouts.Request,
		IdleTimeout:                   opts.IdleTimeout,
		MaxConnsPerIP:                 opts.MaxConnsPerIP,
		ErrorHandler:                  s.errorHandler,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		ReduceMemoryUsage:             false,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{s.log},
	}
	return s, nil
}

// errorHandler answers requests fasthttp could not read (too large, malformed,
// too slow) with an OpenAI-shaped error.
func (s *Server) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.writeError(ctx, errBodyTooLarge)
	case errors.As(err, &small):
		ctx.SetStatusCode(fasthttp.StatusRequestHeaderFieldsTooLarge)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"error":{"message":"Request headers too large.","type":"invalid_request_error","code":"request_headers_too_large","param":null}}`)
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			ctx.SetStatusCode(fasthttp.StatusRequestTimeout)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"Request not received in time.","type":"invalid_request_error","code":"request_timeout","param":null}}`)
			return
		}
		s.writeError(ctx, invalid("", "Malformed HTTP request."))
	}
	ctx.SetConnectionClose()
}

// Serve accepts connections on ln until Shutdown. Running out of file
// descriptors (or kernel buffers) while accepting pauses accepting instead of
// ending Serve: fasthttp treats every accept error but a timeout as fatal, and
// a proxy holding thousands of streams must not exit when one more client
// arrives than it has descriptors for.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(&retryListener{Listener: ln, log: s.log})
}

// ListenAndServe listens on addr and serves.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// retryListener retries Accept on resource exhaustion (EMFILE, ENFILE,
// ENOBUFS, ENOMEM) and aborted handshakes, backing off from 5 ms to 1 s as
// net/http does; other errors (a closed listener) end Serve as before.
type retryListener struct {
	net.Listener
	log    *zap.Logger
	warned atomic.Int64 // unix seconds of the last warning
}

func (l *retryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return lingerConn{c}, nil
		}
		if !retryableAccept(err) {
			return c, err
		}
		if now := time.Now().Unix(); l.warned.Swap(now) != now {
			l.log.Warn("accepting connections paused", zap.Error(err))
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		time.Sleep(delay)
	}
}

// lingerConn closes the way net/http and nginx do (lingering close): it sends
// FIN after the answer, then reads and discards what the client is still
// sending — while it keeps sending (each read within lingerTimeout, nginx's
// lingering_timeout), for lingerTime and lingerBytes at most — before closing. Without it a server that
// answers before reading a whole request — 413 for a body past the limit, an
// error on a malformed request — closes a socket with unread bytes, the kernel
// answers them with a TCP reset, and the client sees "connection reset" while
// still writing instead of the error it was sent. The wait happens on a
// goroutine of its own, so fasthttp's worker is free at once; a client that
// has already closed (the usual case) costs one read that returns EOF.
type lingerConn struct{ net.Conn }

const (
	lingerTimeout = 500 * time.Millisecond
	lingerTime    = 5 * time.Second
	lingerBytes   = 256 << 20
)

type closeWriter interface{ CloseWrite() error }

func (c lingerConn) Close() error {
	cw, ok := c.Conn.(closeWriter)
	if !ok || cw.CloseWrite() != nil || c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout)) != nil {
		return c.Conn.Close()
	}
	go func() {
		defer c.Conn.Close()
		bp := getBuf()
		defer putBuf(bp)
		buf := (*bp)[:cap(*bp)]
		until, read := time.Now().Add(lingerTime), 0
		for read < lingerBytes {
			n, err := c.Conn.Read(buf)
			read += n
			next := time.Now().Add(lingerTimeout)
			if next.After(until) {
				next = until
			}
			if err != nil || !next.After(time.Now()) || c.Conn.SetReadDeadline(next) != nil {
				return
			}
		}
	}()
	return nil
}

func retryableAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}

// Drain starts the end of service without closing the listener: /readyz
// answers 503 (a load balancer takes the replica out), new calls are refused
// with 503 and Connection: close (a client retries elsewhere), and calls in
// flight go on. It returns when none is left, or ctx's error when ctx ends
// first. Shutdown follows it.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// InFlight is the number of metered calls in progress (streams included).
func (s *Server) InFlight() int64 { return s.active.Load() }

// Shutdown stops accepting, lets calls in flight finish until ctx is done,
// then cuts the remaining streams, settling each for what was generated.
//
// fasthttp's ShutdownWithContext returns as soon as ctx is done, so when ctx
// has already expired (Drain used the whole timeout) both it and ctx are
// ready at once: whether the streams are cut must depend on ctx alone, never
// on which of the two a select happens to pick.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	done := make(chan error, 1)
	go func() { done <- s.srv.ShutdownWithContext(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = <-done // returns promptly once ctx is done
	}
	if ctx.Err() == nil {
		// No connection is open, but calls may still be: a stream whose
		// client left and that is read on for its usage (orphan.go) holds
		// none. Wait for them while ctx allows, then cut them.
		ended := make(chan struct{})
		go func() { s.inflight.Wait(); close(ended) }()
		select {
		case <-ended:
		case <-ctx.Done():
			s.cutStreams()
		}
	} else {
		s.cutStreams()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// cutStreams aborts every open stream and waits for the calls in flight to
// end, aborting again each tick: a call that was still waiting for its
// provider's first byte at the deadline registers its stream later.
func (s *Server) cutStreams() {
	ended := make(chan struct{})
	go func() { s.inflight.Wait(); close(ended) }()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		s.streams.Range(func(k, _ any) bool {
			k.(*streamBody).abort()
			return true
		})
		select {
		case <-ended:
			return
		case <-t.C:
		}
	}
}

// Handler is the fasthttp request handler (exported for tests and benchmarks).
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	post := ctx.IsPost()
	switch string(path) {
	case "/v1/chat/completions":
		s.metered(ctx, epChat, post)
	case "/v1/completions":
		s.metered(ctx, epCompletions, post)
	case "/v1/embeddings":
		s.metered(ctx, epEmbeddings, post)
	case "/v1/responses":
		s.metered(ctx, epResponses, post)
	case "/v1/messages":
		s.metered(ctx, epMessages, post)
	case "/v1/messages/count_tokens":
		s.handleCountTokens(ctx)
	case "/v1/moderations":
		s.metered(ctx, epModerations, post)
	case "/v1/models":
		s.handleModels(ctx)
	case "/v1/generation":
		s.handleGeneration(ctx)
	case "/healthz":
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"ok"}`)
	case "/readyz":
		s.handleReady(ctx)
	default:
		if id, ok := bytes.CutPrefix(path, modelsPrefix); ok {
			s.handleModel(ctx, id)
			return
		}
		if rest, ok := bytes.CutPrefix(path, responsesPrefix); ok {
			s.handleStoredResponse(ctx, rest)
			return
		}
		s.writeError(ctx, errNotFound)
	}
}

var modelsPrefix = []byte("/v1/models/")

func (s *Server) handleReady(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	if s.draining.Load() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString(`{"status":"draining"}`)
		return
	}
	if err := s.meter.Ping(context.Background()); err != nil {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString(`{"status":"unavailable","redis":"unreachable"}`)
		return
	}
	ctx.SetBodyString(`{"status":"ready","redis":"ok"}`)
}

// fasthttpLogger routes fasthttp's own messages (connection errors) to zap at
// debug level: they are client mistakes, already answered.
type fasthttpLogger struct{ log *zap.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if ce := l.log.Check(zap.DebugLevel, "fasthttp"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, args...)))
	}
}
