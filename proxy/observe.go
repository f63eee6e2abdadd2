package proxy

import (
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Observer is told how every call to a metered endpoint ended (metrics;
// telemetry.Proxy implements it). Optional. Its methods run on the call's
// goroutine: they must not block, and keep nothing of the event.
type Observer interface {
	// CallEnded is told once per call, failed ones included (refused
	// before it was forwarded, failed upstream, cut), when the caller has
	// been answered — for a stream, when it ends.
	CallEnded(CallEvent)
	// UpstreamFailed is told of each failed attempt at a provider (also
	// one that a later deployment of the model made good). reason is one
	// of the Reason* constants.
	UpstreamFailed(provider, reason string)
}

// Reasons an upstream attempt failed, as Observer.UpstreamFailed names them:
// a fixed set, so that they can be metric labels.
const (
	ReasonNetwork     = "network"      // connecting or talking to the provider failed
	ReasonTimeout     = "timeout"      // no answer in time
	ReasonServerError = "server_error" // a 5xx answer
	ReasonRateLimited = "rate_limited" // 429: our provider account is limited
	ReasonRefused     = "refused"      // 401, 403, 404: our key or deployment is refused
	ReasonClientError = "client_error" // another 4xx, passed on to the caller
	ReasonStreamCut   = "stream_cut"   // a stream ended before its end marker
	ReasonStreamIdle  = "stream_idle"  // a stream went silent past the idle timeout
)

// CallEvent is how a call ended, as metrics need it. Model is nil when the
// call named no model of the catalog (or was refused before it was read);
// Provider is empty when no provider answered.
type CallEvent struct {
	Endpoint string
	Stream   bool
	Model    *pricing.Model
	Provider string
	Status   int // the HTTP status the caller got (a stream's is its first line's)
	Latency  time.Duration
	TTFB     time.Duration // until the provider's first byte; 0 when none came
	// Tokens by kind (CacheWrite: both cache lifetimes) and the charge, mc.
	Input, CachedInput, CacheWrite, Output int64
	Charged                                int64
	OverHold                               bool // charged past its hold
}

// Call log modes (Options.LogCalls).
const (
	LogCallsAll    = "all"
	LogCallsErrors = "errors"
	LogCallsNone   = "none"
)

// Headers of the caller's request id and trace context.
var (
	keyClientRequestID = []byte("X-Client-Request-Id")
	keyTraceparent     = []byte("Traceparent")
	keyTracestate      = []byte("Tracestate")
	keyUpstreamReqID   = []byte("X-Request-Id")
	keyUpstreamReqID2  = []byte("Request-Id") // Anthropic's
)

// Bounds of the ids taken from a request or a provider's answer.
const (
	maxClientIDLen   = 128
	maxTracestateLen = 512
)

// clientContext takes the caller's request id (X-Request-Id, or
// X-Client-Request-Id) and W3C trace context from the request; an id with
// characters outside [A-Za-z0-9._:/+=@-] or longer than 128 bytes is
// dropped, so that it can go into logs and headers as it is. The id is
// echoed in X-Client-Request-Id (X-Request-Id stays Tollgate's own id, the
// hold and generation id). Copies are carved from the id slabs (ids.go):
// no allocation per call.
func (c *call) clientContext(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	id := h.PeekBytes(keyRequestID)
	if len(id) == 0 {
		id = h.PeekBytes(keyClientRequestID)
	}
	if validID(id, maxClientIDLen) {
		c.clientID = c.s.ids.intern(id)
		ctx.Response.Header.SetCanonical(keyClientRequestID, id)
	}
	if tp := h.PeekBytes(keyTraceparent); validTraceparent(tp) {
		c.traceparent = c.s.ids.intern(tp)
		if ts := h.PeekBytes(keyTracestate); len(ts) <= maxTracestateLen && printable(ts) {
			c.tracestate = c.s.ids.intern(ts)
		}
	}
}

// forwardTrace sets the caller's trace context on an upstream request.
func (c *call) forwardTrace(req *fasthttp.Request) {
	if c.traceparent == "" {
		return
	}
	req.Header.SetCanonical(keyTraceparent, []byte(c.traceparent))
	if c.tracestate != "" {
		req.Header.SetCanonical(keyTracestate, []byte(c.tracestate))
	}
}

// answered notes the provider that answered the call and its own request
// id (x-request-id, Anthropic's request-id).
func (c *call) answered(resp *fasthttp.Response, up *upstream) {
	c.provider = up.name
	c.ttfb = time.Since(c.start)
	id := resp.Header.PeekBytes(keyUpstreamReqID)
	if len(id) == 0 {
		id = resp.Header.PeekBytes(keyUpstreamReqID2)
	}
	if validID(id, maxClientIDLen) {
		c.upstreamID = c.s.ids.intern(id)
	}
}

// upstreamFailed tells the Observer of a failed attempt at up.
func (c *call) upstreamFailed(up *upstream, reason string) {
	if o := c.s.opts.Observer; o != nil {
		o.UpstreamFailed(up.name, reason)
	}
}

// upstreamReason is the Reason* of a failed attempt: err from the client,
// or the provider's status when err is nil.
func upstreamReason(err error, status int) string {
	switch {
	case err != nil && isTimeout(err):
		return ReasonTimeout
	case err != nil:
		return ReasonNetwork
	case status == fasthttp.StatusTooManyRequests:
		return ReasonRateLimited
	case status >= 500 || status < 400:
		return ReasonServerError
	case status == 401 || status == 403 || status == 404:
		return ReasonRefused
	}
	return ReasonClientError
}

// ended records how the call ended, for the call's log line and metrics:
// rec is its cost record, ch its charge when settled.
func (c *call) ended(rec *metering.Record, ch *metering.Charge) {
	c.rec = *rec
	c.recorded = true
	if ch != nil {
		c.ch, c.charged = *ch, true
	}
}

// observe is deferred by metered: the call's metrics and log line, unless a
// stream took the call over (the stream tells them when it ends).
func (c *call) observe(ctx *fasthttp.RequestCtx) {
	if c.handedOff {
		return
	}
	c.finish(ctx.Response.StatusCode())
}

// finish tells the Observer and writes the call's log line.
func (c *call) finish(status int) {
	s := c.s
	latency := time.Since(c.start)
	ttfb := c.ttfb
	if c.recorded && c.rec.TTFT > 0 && c.req.stream {
		ttfb = c.rec.TTFT
	}
	r := &c.rec
	if o := s.opts.Observer; o != nil {
		provider := c.provider
		if r.Provider != "" {
			provider = r.Provider
		}
		o.CallEnded(CallEvent{
			Endpoint: c.ep.name, Stream: c.req.stream, Model: c.model, Provider: provider, Status: status,
			Latency: latency, TTFB: ttfb,
			Input: r.Input, CachedInput: r.CachedInput, CacheWrite: r.CacheWrite + r.CacheWrite1h, Output: r.Output,
			Charged: c.ch.Charged, OverHold: c.ch.OverHold > 0,
		})
	}
	switch s.opts.LogCalls {
	case LogCallsNone:
		return
	case LogCallsErrors:
		if status < 400 && !r.Failed {
			return
		}
	}
	ce := s.log.Check(zap.InfoLevel, "call")
	if ce == nil {
		return
	}
	model, provider := "", c.provider
	if c.model != nil {
		model = c.model.ID
	}
	if r.Provider != "" {
		provider = r.Provider
	}
	var nb [24]byte
	ce.Write(
		zap.String("request_id", c.id),
		zap.String("client_request_id", c.clientID),
		zap.String("account", c.ident.Account),
		zap.String("key_id", c.ident.KeyID),
		zap.String("endpoint", c.ep.name),
		zap.String("model", model),
		zap.String("provider", provider),
		zap.Int("status", status),
		zap.Bool("stream", c.req.stream),
		zap.Int64("input_tokens", r.Input),
		zap.Int64("cached_input_tokens", r.CachedInput),
		zap.Int64("cache_write_tokens", r.CacheWrite+r.CacheWrite1h),
		zap.Int64("output_tokens", r.Output),
		zap.Int64("reasoning_tokens", r.Reasoning),
		zap.String("credits", s.ids.intern(pricing.AppendCredits(nb[:0], c.ch.Charged))),
		zap.Bool("estimated", r.Estimated),
		zap.String("reason", r.Reason),
		zap.Duration("latency", latency),
		zap.Duration("ttfb", ttfb),
		zap.String("upstream_request_id", c.upstreamID),
		zap.String("traceparent", c.traceparent),
	)
}

// validID: 1 to max bytes of [A-Za-z0-9._:/+=@-].
func validID(b []byte, max int) bool {
	if len(b) == 0 || len(b) > max {
		return false
	}
	for _, ch := range b {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case ch == '.', ch == '_', ch == ':', ch == '/', ch == '+', ch == '=', ch == '@', ch == '-':
		default:
			return false
		}
	}
	return true
}

// validTraceparent: version-traceid-parentid-flags, lower-case hex (W3C
// Trace Context), with a non-zero trace and parent id; version ff is
// invalid, and a future version may append fields after a dash.
func validTraceparent(b []byte) bool {
	if len(b) < 55 || b[2] != '-' || b[35] != '-' || b[52] != '-' {
		return false
	}
	if len(b) > 55 && (b[0] == '0' && b[1] == '0' || b[55] != '-' || len(b) > 256 || !printable(b)) {
		return false
	}
	hex := func(s []byte) (ok, nonZero bool) {
		for _, ch := range s {
			if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
				return false, false
			}
			nonZero = nonZero || ch != '0'
		}
		return true, nonZero
	}
	if ok, _ := hex(b[0:2]); !ok || b[0] == 'f' && b[1] == 'f' {
		return false
	}
	if ok, nz := hex(b[3:35]); !ok || !nz {
		return false
	}
	if ok, nz := hex(b[36:52]); !ok || !nz {
		return false
	}
	ok, _ := hex(b[53:55])
	return ok
}

// printable: visible ASCII and spaces only (no control characters, no
// line breaks that could split a header or a log line).
func printable(b []byte) bool {
	for _, ch := range b {
		if ch < 0x20 || ch > 0x7e {
			return false
		}
	}
	return true
}

// streamFailReason maps a failed stream's record reason to a Reason*.
func streamFailReason(reason string) string {
	if reason == "upstream_idle_timeout" {
		return ReasonStreamIdle
	}
	return ReasonStreamCut
}

// appendTraceFields adds a cost record's ids to a /v1/generation body:
// client_request_id, upstream_request_id, traceparent, tracestate (null
// when there was none).
func appendTraceFields(b []byte, r *metering.Record) []byte {
	for _, f := range [...]struct{ k, v string }{
		{`,"client_request_id":`, r.ClientRequestID}, {`,"upstream_request_id":`, r.UpstreamRequestID},
		{`,"traceparent":`, r.Traceparent}, {`,"tracestate":`, r.Tracestate},
	} {
		b = append(b, f.k...)
		if f.v == "" {
			b = append(b, "null"...)
		} else {
			b = appendJSONString(b, f.v)
		}
	}
	return b
}
