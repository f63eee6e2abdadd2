package mockllm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// DefaultOutputTokens is the completion length used when Config.OutputTokens
// is zero.
const DefaultOutputTokens = 16

// mockCreated is the constant "created" timestamp of every response.
const mockCreated = 1700000000

// maxHang bounds the hang directive.
const maxHang = 60 * time.Second

// Config tunes the mock. The zero value answers immediately with
// DefaultOutputTokens tokens.
type Config struct {
	Latency         time.Duration // added before a non-streaming response
	TTFT            time.Duration // before the first streamed chunk
	TokensPerSecond int           // stream pacing; 0 = as fast as possible
	OutputTokens    int           // default completion length when request has no max_tokens (default 16)
	FailEvery       int           // if >0, every Nth request (deterministic counter) answers 500 (for soak tests)
}

// Server is a mock LLM provider. Its Handler can be mounted on any fasthttp
// server; Start/StartAt also run a listener.
type Server struct {
	cfg      Config
	interval time.Duration // derived from cfg.TokensPerSecond

	reqs atomic.Int64

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error

	srv       *fasthttp.Server
	ln        net.Listener
	serveDone chan error
	hangs     sync.WaitGroup

	last lastRequest

	deleted sync.Map // stored response ids deleted (DELETE /v1/responses/{id})
}

// New returns a Server with cfg. It does not listen; see Start and StartAt.
func New(cfg Config) *Server {
	if cfg.OutputTokens <= 0 {
		cfg.OutputTokens = DefaultOutputTokens
	}
	s := &Server{
		cfg:     cfg,
		closing: make(chan struct{}),
	}
	if cfg.TokensPerSecond > 0 {
		s.interval = time.Second / time.Duration(cfg.TokensPerSecond)
	}
	return s
}

// Start listens on 127.0.0.1:0 and serves in the background. It returns the
// base URL, e.g. "http://127.0.0.1:PORT/v1".
func Start(cfg Config) (*Server, string, error) {
	return StartAt(cfg, "127.0.0.1:0")
}

// StartAt is Start on a chosen address (host:port; port 0 picks a free one).
func StartAt(cfg Config, addr string) (*Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("mockllm: listen on %s: %w", addr, err)
	}
	s := New(cfg)
	s.ln = ln
	s.srv = &fasthttp.Server{
		Handler:            s.Handler,
		Name:               "mockllm",
		ReadBufferSize:     16 << 10,
		MaxRequestBodySize: 64 << 20,
		CloseOnShutdown:    true,
		Logger:             quietLogger{},
	}
	s.serveDone = make(chan error, 1)
	go func() { s.serveDone <- s.srv.Serve(ln) }()
	return s, "http://" + ln.Addr().String() + "/v1", nil
}

// Close stops the listener (if any), ends pending hangs, delays and paced
// streams, and waits for in-flight requests. It is safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		if s.srv == nil {
			return
		}
		// Closing the listener first also covers a Serve goroutine that has
		// not registered it yet (fasthttp's Shutdown would then be a no-op).
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = fmt.Errorf("mockllm: close listener: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.srv.ShutdownWithContext(ctx); err != nil && !errors.Is(err, net.ErrClosed) && s.closeErr == nil {
			s.closeErr = fmt.Errorf("mockllm: shutdown: %w", err)
		}
		if err := <-s.serveDone; err != nil && !errors.Is(err, net.ErrClosed) && s.closeErr == nil {
			s.closeErr = fmt.Errorf("mockllm: serve: %w", err)
		}
		// Hanging connections notice s.closing within ~100ms; the bound only
		// matters if fasthttp never ran a hijack handler.
		done := make(chan struct{})
		go func() { s.hangs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	return s.closeErr
}

// Requests returns the total number of requests received, whatever their
// path or outcome.
func (s *Server) Requests() int64 { return s.reqs.Load() }

// LastRequest returns a copy of the last received request: its path, body
// and headers (keys in fasthttp's canonical form, e.g. "Authorization",
// "Content-Type", "X-Mock"; repeated headers are joined with ", ").
// It returns zero values when no request was received yet.
func (s *Server) LastRequest() (path string, body []byte, header map[string]string) {
	return s.last.get()
}

var (
	strXRequestID = []byte("X-Request-Id")
	strRequestID  = []byte("Request-Id")
)

// Handler is the fasthttp.RequestHandler of the mock.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	n := s.reqs.Add(1)
	s.last.set(ctx)

	path := ctx.Path()
	var k kind
	switch string(path) {
	case "/v1/chat/completions":
		k = kindChat
	case "/v1/completions":
		k = kindCompletions
	case "/v1/embeddings":
		k = kindEmbeddings
	case "/v1/responses":
		k = kindResponses
	case "/v1/messages":
		k = kindMessages
	case "/v1/messages/count_tokens":
		k = kindCountTokens
	case "/v1/models":
		k = kindModels
	default:
		if len(path) > len("/v1/models/") && string(path[:len("/v1/models/")]) == "/v1/models/" {
			k = kindModel
			break
		}
		if id, ok := bytes.CutPrefix(path, responsesPrefix); ok {
			s.storedResponse(ctx, id)
			return
		}
		writeError(ctx, kindUnknown, fasthttp.StatusNotFound,
			"Invalid URL ("+string(ctx.Method())+" "+string(path)+")")
		return
	}
	// The provider's own request id, as OpenAI (x-request-id) and
	// Anthropic (request-id) send it: req_mock_N, N the request's number.
	var idb [32]byte
	id := strconv.AppendInt(append(idb[:0], "req_mock_"...), n, 10)
	if k == kindMessages || k == kindCountTokens {
		ctx.Response.Header.SetCanonical(strRequestID, id)
	} else {
		ctx.Response.Header.SetCanonical(strXRequestID, id)
	}
	if k.isGet() {
		if !ctx.IsGet() && !ctx.IsHead() {
			writeError(ctx, k, fasthttp.StatusMethodNotAllowed, "method not allowed, use GET")
			return
		}
	} else if !ctx.IsPost() {
		writeError(ctx, k, fasthttp.StatusMethodNotAllowed, "method not allowed, use POST")
		return
	}

	if s.cfg.FailEvery > 0 && n%int64(s.cfg.FailEvery) == 0 {
		writeError(ctx, k, fasthttp.StatusInternalServerError, "mock: injected failure (fail-every)")
		return
	}

	body := ctx.PostBody()
	d := noDirectives
	if err := d.parse(ctx.Request.Header.Peek("X-Mock"), body); err != nil {
		writeError(ctx, k, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if d.delay > 0 && !s.sleep(d.delay) {
		writeClosing(ctx, k)
		return
	}
	if d.hang {
		s.hang(ctx)
		return
	}
	if d.status != 0 {
		writeError(ctx, k, d.status, "mock: forced status by directive")
		return
	}

	switch k {
	case kindModels:
		writeModels(ctx)
		return
	case kindModel:
		writeModel(ctx, path[len("/v1/models/"):])
		return
	}

	var req request
	if err := req.parse(k, body); err != nil {
		writeError(ctx, k, fasthttp.StatusBadRequest, err.Error())
		return
	}
	switch k {
	case kindEmbeddings:
		s.embeddings(ctx, n, &req, &d)
		return
	case kindCountTokens:
		writeTokenCount(ctx, &req)
		return
	}
	s.generate(ctx, n, k, &req, &d)
}

// generate answers chat, completions, responses and messages requests.
func (s *Server) generate(ctx *fasthttp.RequestCtx, n int64, k kind, req *request, d *directives) {
	u := s.usage(req, d)
	if req.stream {
		st := newStreamer(s, k, n, req, d, u)
		ctx.SetContentType("text/event-stream")
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		ctx.Response.ImmediateHeaderFlush = true
		ctx.SetBodyStream(st, -1)
		return
	}
	if s.cfg.Latency > 0 && !s.sleep(s.cfg.Latency) {
		writeClosing(ctx, k)
		return
	}
	bp := getBuf()
	b := (*bp)[:0]
	switch k {
	case kindChat:
		b = appendChatCompletion(b, n, req.model, u)
	case kindCompletions:
		b = appendTextCompletion(b, n, req.model, u)
	case kindResponses:
		b = appendResponse(b, n, req.model, u, "completed")
	case kindMessages:
		b = appendMessage(b, n, req.model, u)
	}
	writeJSON(ctx, b, d)
	*bp = b
	putBuf(bp)
}

// writeJSON sets b (copied) as a 200 JSON body, or, with the cut directive,
// arranges for only half of it to be sent before the connection is dropped.
func writeJSON(ctx *fasthttp.RequestCtx, b []byte, d *directives) {
	ctx.SetContentType("application/json")
	if d.cut >= 0 {
		cb := &cutBody{body: append([]byte(nil), b...)}
		ctx.SetBodyStream(cb, len(b))
		return
	}
	ctx.SetBody(b)
}

// writeClosing answers 503 and closes the connection: a wait was cut short
// because the server is closing.
func writeClosing(ctx *fasthttp.RequestCtx, k kind) {
	writeError(ctx, k, fasthttp.StatusServiceUnavailable, "mock: server closing")
	ctx.SetConnectionClose()
}

// sleep waits for d or until the server is closed; it reports whether the
// full duration elapsed.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

// hang takes the connection over and never answers: it waits until the
// client closes it, the server is closed or maxHang passed, then drops it.
func (s *Server) hang(ctx *fasthttp.RequestCtx) {
	s.hangs.Add(1)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer s.hangs.Done()
		deadline := time.Now().Add(maxHang)
		var buf [512]byte
		for {
			select {
			case <-s.closing:
				return
			default:
			}
			now := time.Now()
			if !now.Before(deadline) {
				return
			}
			next := now.Add(100 * time.Millisecond)
			if next.After(deadline) {
				next = deadline
			}
			if err := c.SetReadDeadline(next); err != nil {
				return
			}
			if _, err := c.Read(buf[:]); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return // EOF or reset: the client went away
			}
			// Anything the client sends (e.g. a pipelined request) is dropped.
		}
	})
}

// quietLogger drops the errors the mock causes on purpose (cut connections)
// and forwards the rest to the standard logger.
type quietLogger struct{}

func (quietLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, errCut.Error()) || strings.Contains(msg, errClosing.Error()) {
		return
	}
	log.Print("mockllm: " + msg)
}

// lastRequest keeps a reusable copy of the most recent request.
type lastRequest struct {
	mu   sync.Mutex
	ok   bool
	path []byte
	body []byte
	hdrs []headerKV
}

type headerKV struct{ k, v []byte }

func (l *lastRequest) set(ctx *fasthttp.RequestCtx) {
	l.mu.Lock()
	l.ok = true
	l.path = append(l.path[:0], ctx.Path()...)
	l.body = append(l.body[:0], ctx.PostBody()...)
	h := l.hdrs[:0]
	for k, v := range ctx.Request.Header.All() {
		if len(h) < cap(h) {
			h = h[:len(h)+1]
		} else {
			h = append(h, headerKV{})
		}
		kv := &h[len(h)-1]
		kv.k = append(kv.k[:0], k...)
		kv.v = append(kv.v[:0], v...)
	}
	l.hdrs = h
	l.mu.Unlock()
}

func (l *lastRequest) get() (string, []byte, map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ok {
		return "", nil, nil
	}
	hdr := make(map[string]string, len(l.hdrs))
	for _, kv := range l.hdrs {
		k := string(kv.k)
		if prev, ok := hdr[k]; ok {
			hdr[k] = prev + ", " + string(kv.v)
			continue
		}
		hdr[k] = string(kv.v)
	}
	return string(l.path), append([]byte(nil), l.body...), hdr
}

// buffer pool for non-streaming bodies.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return
	}
	bufPool.Put(b)
}
