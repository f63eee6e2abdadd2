package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Response headers.
const (
	hdrRequestID    = "X-Request-Id"
	hdrCharged      = "X-Credits-Charged"
	hdrBalance      = "X-Credits-Balance"
	hdrBalanceAfter = "X-Credits-Balance-After" // stream trailer: balance after settle
	hdrTier         = "X-Credits-Tier"
	hdrProvider     = "X-Tollgate-Provider"
)

// The same keys as bytes, already in canonical form: SetCanonical skips the
// per-call normalisation.
var (
	keyRequestID = []byte(hdrRequestID)
	keyCharged   = []byte(hdrCharged)
	keyBalance   = []byte(hdrBalance)
	keyTier      = []byte(hdrTier)
	keyProvider  = []byte(hdrProvider)
)

var strEventStream = []byte("text/event-stream")

// call is one metered request's state up to the point where it is answered
// (non-streaming) or handed to a streamBody.
type call struct {
	s      *Server
	rt     *liveConf // the configuration the call started with (reload.go)
	ep     *endpoint
	id     string
	ident  metering.Identity
	model  *pricing.Model
	hold   metering.Hold
	start  time.Time
	req    request
	body   []byte           // the client's body (valid until the handler returns)
	parser *fastjson.Parser // for the provider's answer (usage.go)
	// inTokens is the input estimate the hold covers (set by holdRequest).
	inTokens int64
	// only is the one provider that may serve the call ("" = any): the one
	// storing its previous_response_id (responses.go); prevContext the
	// tokens of that response the provider reads again, which an estimate
	// of the call's input counts (0 when unknown).
	only        string
	prevContext int64
	// What the call's log line and metrics are told (observe.go).
	clientID, traceparent, tracestate string // the caller's, validated
	provider, upstreamID              string // the provider that answered, its request id
	ttfb                              time.Duration
	rec                               metering.Record // its cost record, once ended
	ch                                metering.Charge // its charge, once settled
	recorded, charged, handedOff      bool
}

// metered serves one metered endpoint, counted in active from its start to
// its end (a stream's included) so that Drain can wait for it.
func (s *Server) metered(ctx *fasthttp.RequestCtx, ep *endpoint, post bool) {
	s.active.Add(1)
	if !s.serveMetered(ctx, ep, post) {
		s.active.Add(-1)
	}
}

// serveMetered serves one metered endpoint: auth → inspect → price → reserve →
// forward → settle. Every path after a successful reserve settles or
// releases. handedOff: a stream took the call over (and ends its count).
func (s *Server) serveMetered(ctx *fasthttp.RequestCtx, ep *endpoint, post bool) (handedOff bool) {
	c := call{s: s, rt: s.rt.Load(), ep: ep, start: time.Now()}
	defer c.observe(ctx) // observe.go: metrics and the call's log line
	if !post {
		s.writeError(ctx, errMethod)
		return false
	}
	if s.draining.Load() { // after active was counted: Drain waits for this call, or it is refused
		ctx.SetConnectionClose()
		s.writeError(ctx, errDraining)
		return false
	}
	c.id, c.body = s.ids.next(), ctx.PostBody()
	ctx.Response.Header.SetCanonical(keyRequestID, []byte(c.id))
	c.clientContext(ctx)

	var err error
	if c.ident, err = s.authenticate(ctx); err != nil {
		s.writeError(ctx, err)
		return false
	}
	c.parser = parserPool.Get()
	defer parserPool.Put(c.parser)
	if c.req, err = inspect(ep, c.body); err == nil && ep.native {
		err = refuseWideningBetas(&ctx.Request.Header) // anthropic.go
	}
	if err != nil {
		s.writeError(ctx, err)
		return false
	}
	m, ok := c.rt.catalog.LookupBytes(c.req.model)
	if !ok {
		s.writeError(ctx, pricing.ErrUnknownModel)
		return false
	}
	if ep.native && !c.rt.servesNative(m) {
		s.writeError(ctx, errNotNative(m, ep))
		return false
	}
	prev, err := s.checkPrevious(c.ident.Account, c.req.prevResponse, m) // responses.go
	if err != nil {
		s.writeError(ctx, err)
		return false
	}
	c.only, c.prevContext = prev.Provider, prev.Context
	c.model = m
	c.req.limitField = m.OutputLimitField
	ctx.Response.Header.SetCanonical(keyTier, []byte(m.Tier))
	hr, err := c.holdRequest()
	if err != nil {
		s.writeError(ctx, err)
		return false
	}
	hr, held, err := c.admit(hr) // limit.go
	if err != nil {
		s.writeError(ctx, err)
		return false
	}
	if c.hold, err = s.meter.Reserve(context.Background(), hr); err != nil {
		if held {
			c.releaseAdmission()
		}
		s.writeError(ctx, err)
		return false
	}
	s.inflight.Add(1)
	if c.handedOff = c.forward(ctx); !c.handedOff {
		s.inflight.Done()
	}
	return c.handedOff
}

// holdRequest sizes the worst case: the input estimate at the dearest input
// rate plus the output limit (the client's, or the most the account can
// afford up to the model's maximum), for every prompt of a batch and every
// choice. Where no hold can bound what the provider may bill, it refuses.
func (c *call) holdRequest() (metering.HoldRequest, error) {
	m := c.model
	hr := metering.HoldRequest{
		Account: c.ident.Account, KeyID: c.ident.KeyID, KeyLimited: c.ident.Limited, HoldID: c.id,
		Model: m.ID, OutputPer: max(c.req.choices, 1) * c.batch(),
	}
	in, err := c.inputTokens()
	if err != nil {
		return hr, err
	}
	c.inTokens = in // the Limiter holds the same estimate (limit.go)
	hr.InputTokens = in
	batch := c.batch()
	fixed, ok := mulHold(in, m.Hold.Input)
	if !ok {
		return hr, errTooLargeToHold(batch, c.req.choices)
	}
	if c.req.tools {
		// Per-use fees of the provider's tools: heldToolUses of them per prompt.
		fees, ok := mulHold(m.Hold.WebSearch, heldToolUses*batch)
		if fixed += fees; !ok || fixed > maxHold {
			return hr, errTooLargeToHold(batch, c.req.choices)
		}
	}
	hr.Fixed = fixed
	if c.ep.maxField == "" {
		return hr, nil
	}
	// Every choice ("n", "best_of") of every prompt may use the output limit,
	// and the provider bills them all.
	per, ok := mulHold(m.Hold.Output, max(c.req.choices, 1)*batch)
	if !ok {
		return hr, errTooLargeToHold(batch, c.req.choices)
	}
	hr.PerOutput = per
	if c.req.noOutput {
		return hr, nil // input only: no output is granted or held
	}
	room := maxHold - fixed // output mc a hold may still take
	if c.req.maxOut > 0 {
		if c.req.maxOut > m.MaxOutputTokens {
			return hr, invalid(c.req.maxField, "Parameter '%s' is too large: %d. This model supports at most %d output tokens.",
				c.req.maxField, c.req.maxOut, m.MaxOutputTokens)
		}
		if per > 0 && c.req.maxOut > room/per {
			return hr, errTooLargeToHold(batch, c.req.choices)
		}
		hr.MinOutput, hr.MaxOutput = c.req.maxOut, c.req.maxOut
		return hr, nil
	}
	hr.MinOutput, hr.MaxOutput = min(c.s.opts.MinOutputTokens, m.MaxOutputTokens), m.MaxOutputTokens
	if per > 0 && hr.MaxOutput > room/per {
		// No balance reaches this far; the gateway's own limit stays holdable.
		if hr.MaxOutput = room / per; hr.MinOutput > hr.MaxOutput {
			return hr, errTooLargeToHold(batch, c.req.choices)
		}
	}
	return hr, nil
}

// forward sends the call to each deployment in turn until one answers; it
// returns true when a streamBody took over the call (and its release). A
// deployment whose breaker is open is skipped while another can serve the
// call (breaker.go); a failure the provider cannot have billed is retried
// on the same deployment first (retry.go). The call holds and settles once
// whichever deployment answers.
func (c *call) forward(ctx *fasthttp.RequestCtx) (handedOff bool) {
	bp := getBuf()
	defer putBuf(bp)
	var (
		lastErr error
		resp    *fasthttp.Response
		up      *upstream
	)
	deps := c.model.Deployments
	brs := c.rt.breakers[c.model]
deployments:
	for i, d := range deps {
		u := c.rt.upstreams[d.Provider]
		if !c.servedBy(u, d) {
			continue
		}
		fallback := c.fallbackAfter(i)
		br := brs[i]
		if !br.allow() && fallback {
			continue // open: skipped for its cool-down while another deployment can serve
		}
		if lastErr != nil && time.Since(c.start) >= c.deadline() {
			// Past the call's send window (retryWait's bound too): no new
			// attempt starts, so that slow failures one after another cannot
			// keep a call, and its hold, alive without end. The last
			// failure is the answer.
			break deployments
		}
		out, rewritten := rewrite(*bp, &c.req, c.ep, c.body, d.Model, c.hold.OutputTokens)
		if rewritten {
			*bp = out // keep the grown buffer for the pool
		}
		for try := 0; ; try++ {
			r, err := c.send(ctx, u, out)
			if err != nil {
				lastErr = upstreamErr(err)
				c.upstreamFailed(u, upstreamReason(err, 0))
				if !isDialError(err) {
					// The request reached the provider (a timeout, an answer
					// over MaxResponseBytes, a connection cut mid-answer): it
					// may have generated and billed it, so it is never sent
					// again, here or to a fallback (a client could otherwise
					// have several generations made for one failed, uncharged
					// call). A timeout counts against the deployment's
					// breaker; an answer too large or cut does not: its
					// cause may be the request itself (a huge max_tokens, n
					// or logprobs), and five such calls would shut a
					// healthy deployment for every account.
					if errors.Is(lastErr, errTimeout) {
						br.report(false)
					}
					if errors.Is(err, fasthttp.ErrBodyTooLarge) {
						c.tooLarge(ctx, u)
						return false
					}
					break deployments
				}
				br.report(false)
				if wait, ok := c.retryWait(try); ok {
					time.Sleep(wait)
					continue // nothing reached the provider
				}
				continue deployments
			}
			status := r.StatusCode()
			if status < 500 && status != fasthttp.StatusTooManyRequests {
				br.report(true)
				resp, up = r, u
				break deployments
			}
			br.report(false)
			wait, retry := c.retryWait(try)
			if retry {
				wait = c.s.opts.Retry.honourRetryAfter(wait, r.Header.Peek("Retry-After"))
				retry = time.Since(c.start)+wait < c.deadline()
			}
			if !retry && !fallback {
				resp, up = r, u // the last word: relayed (502 or 429) below
				break deployments
			}
			c.upstreamFailed(u, upstreamReason(nil, status))
			discard(r) // before waiting: its connection goes back first
			lastErr = errUpstream
			if !retry {
				continue deployments
			}
			time.Sleep(wait)
		}
	}
	if resp == nil {
		if lastErr == nil {
			lastErr = errProvider
		}
		c.fail(ctx, lastErr, 0)
		return false
	}
	ctx.Response.Header.SetCanonical(keyProvider, []byte(up.name))
	c.answered(resp, up) // observe.go
	status := resp.StatusCode()
	if status < 200 || status > 299 {
		c.upstreamFailed(up, upstreamReason(nil, status))
		c.upstreamError(ctx, resp)
		fasthttp.ReleaseResponse(resp)
		return false
	}
	if c.req.stream && bytes.HasPrefix(resp.Header.ContentType(), strEventStream) {
		c.startStream(ctx, resp, up)
		return true
	}
	// A plain body (also when a stream was asked for but the provider
	// answered whole): complete reads it and meters it.
	c.complete(ctx, resp, up)
	fasthttp.ReleaseResponse(resp)
	return false
}

// servedBy reports whether the call may go to deployment d on u: the
// native endpoints need an Anthropic provider, and a call continuing a
// stored response the provider that stores it.
func (c *call) servedBy(u *upstream, d pricing.Deployment) bool {
	return (!c.ep.native || u.kind == "anthropic") && (c.only == "" || d.Provider == c.only)
}

// fallbackAfter reports whether a deployment after the i-th may serve the call.
func (c *call) fallbackAfter(i int) bool {
	for _, d := range c.model.Deployments[i+1:] {
		if c.servedBy(c.rt.upstreams[d.Provider], d) {
			return true
		}
	}
	return false
}

// send makes one attempt at u with body; the response is the caller's to
// release.
func (c *call) send(ctx *fasthttp.RequestCtx, u *upstream, body []byte) (*fasthttp.Response, error) {
	req := fasthttp.AcquireRequest()
	u.prepare(req, c.ep, c.req.stream)
	if c.ep.native {
		forwardNativeHeaders(req, &ctx.Request.Header) // anthropic.go
	}
	c.forwardTrace(req) // observe.go
	req.SetBodyRaw(body)
	r := fasthttp.AcquireResponse()
	var err error
	if c.req.stream {
		err = u.stream.Do(req, r)
	} else {
		err = u.plain.DoDeadline(req, r, c.start.Add(c.s.opts.Timeouts.Request))
	}
	fasthttp.ReleaseRequest(req)
	if err != nil {
		fasthttp.ReleaseResponse(r)
		return nil, err
	}
	return r, nil
}

// discard drops a response that is not relayed (its stream closed).
func discard(r *fasthttp.Response) {
	_ = r.CloseBodyStream()
	fasthttp.ReleaseResponse(r)
}

// upstreamError relays a provider's refusal uncharged (relayRefusal) and
// releases the hold.
func (c *call) upstreamError(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) {
	c.release(c.s.relayRefusal(ctx, resp, c.id), resp.StatusCode())
}

// relayRefusal answers ctx for a provider's non-2xx answer and returns the
// reason to record: 4xx pass through with the provider's body (it says what
// was wrong), 5xx become 502.
func (s *Server) relayRefusal(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, id string) (reason string) {
	status := resp.StatusCode()
	body := resp.Body() // for streamed responses this reads the (small) error body
	switch {
	case status >= 500 || status < 400 || status == 401 || status == 403 || status == 404:
		// The provider refused our credentials or deployment, or failed:
		// the caller's request is not at fault, and the provider's text (it
		// may quote our key) stays in the log.
		s.log.Warn("provider refused", zap.String("request_id", id), zap.Int("status", status), zap.ByteString("body", truncate(body, 512)))
		s.writeError(ctx, errUpstream)
		return "upstream_error"
	case status == fasthttp.StatusTooManyRequests:
		// Our provider account is rate limited: say so without its details.
		retry, _ := strconv.Atoi(string(resp.Header.Peek("Retry-After")))
		s.writeError(ctx, &LimitError{Limit: "provider", RetryAfter: max(retry, 1),
			Message: "The model provider is rate limiting this gateway; retry shortly. The call was not charged."})
		return "upstream_rate_limited"
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	if len(body) > 0 && len(body) < 64<<10 && fastjson.ValidateBytes(body) == nil {
		ctx.SetBody(body)
		return "upstream_status"
	}
	s.writeError(ctx, errUpstream)
	ctx.SetStatusCode(status)
	return "upstream_status"
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// fail releases the hold and answers with err's status.
func (c *call) fail(ctx *fasthttp.RequestCtx, err error, upstreamStatus int) {
	reason := "upstream_error"
	if errors.Is(err, errTimeout) {
		reason = "upstream_timeout"
	}
	c.release(reason, upstreamStatus)
	c.s.writeError(ctx, err)
}

// release drops the hold, recording the failed call. A failed release only
// delays the hold's expiry; it never charges.
func (c *call) release(reason string, status int) {
	rec := c.record(usage{}, c.req.stream)
	rec.Failed, rec.Reason, rec.Status = true, reason, status
	c.ended(&rec, nil)
	if err := c.s.meter.Release(context.Background(), c.ident.Account, c.ident.KeyID, c.id, &rec); err != nil {
		c.s.log.Warn("releasing hold", zap.String("request_id", c.id), zap.Error(err))
	}
}

// tooLarge ends a call whose answer exceeded MaxResponseBytes. The provider
// generated it (and bills it), but its usage cannot be read: the call is
// charged what it reserved, the most it could cost, rather than given away —
// a client could otherwise have any number of large answers made for free
// (n, logprobs, a high max_tokens). The client is told with a 502.
func (c *call) tooLarge(ctx *fasthttp.RequestCtx, up *upstream) {
	var u usage
	u.Input = c.inTokens
	u.Output = c.hold.OutputTokens * max(c.req.choices, 1) * c.batch()
	rec := c.record(u, false)
	rec.Provider, rec.Estimated, rec.Reason, rec.Status = up.name, true, "response_too_large", fasthttp.StatusBadGateway
	ch, ok := c.settle(c.hold.Amount, rec)
	if !ok {
		c.s.writeError(ctx, errUnsettled)
		return
	}
	h := &ctx.Response.Header
	var nb [24]byte
	h.SetCanonical(keyCharged, pricing.AppendCredits(nb[:0], ch.Charged))
	h.SetCanonical(keyBalance, pricing.AppendCredits(nb[:0], ch.BalanceAfter))
	c.s.writeError(ctx, errTooLarge)
}

func (c *call) record(u usage, streamed bool) metering.Record {
	return metering.Record{
		RequestID: c.id, Model: c.model.ID, Endpoint: c.ep.name,
		Input: u.Input, CachedInput: u.CachedInput, Output: u.Output, Reasoning: u.Reasoning,
		CacheWrite: u.CacheWrite, CacheWrite1h: u.CacheWrite1h, WebSearch: u.WebSearch,
		Streamed: streamed, Latency: time.Since(c.start), CreatedAt: c.start, Status: 200,
		ClientRequestID: c.clientID, UpstreamRequestID: c.upstreamID, Traceparent: c.traceparent, Tracestate: c.tracestate,
	}
}

// callFees adds to u what the provider bills per call without reporting it:
// a chat call's web_search_options search (OpenAI's search models bill one a
// call; their usage shows none). A count the provider did report stands.
func (c *call) callFees(u *usage) {
	if c.req.searchPerCall {
		u.WebSearch = max(u.WebSearch, 1)
	}
}

// complete meters a whole (non-streamed) 2xx response and answers with it.
func (c *call) complete(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, up *upstream) {
	body := resp.Body()
	u, v := usageFromBody(c.parser, c.ep.dialect, body)
	var stored []byte // a stored response's id, recorded for the account once settled
	if v != nil {
		stored = c.ep.dialect.stored(v) // dialect_*.go
	}
	estimated := false
	if !u.seen {
		u = c.estimateBody(up, v, body) // tokenize.go: off the path when usage is present
		estimated = true
	}
	c.callFees(&u)
	rec := c.record(u, false)
	rec.Provider, rec.Estimated, rec.TTFT = up.name, estimated, rec.Latency
	ch, ok := c.settle(c.model.Cost(u.Usage, c.start), rec)
	if !ok {
		// A bug (the Meter refused the settlement itself): refuse the answer
		// rather than give it away.
		c.s.writeError(ctx, errUnsettled)
		return
	}
	if len(stored) > 0 {
		c.s.recordResponse(c.ident.Account, string(stored), up.name, contextTokens(u)) // responses.go
	}
	h := &ctx.Response.Header
	var nb [24]byte
	h.SetCanonical(keyCharged, pricing.AppendCredits(nb[:0], ch.Charged))
	h.SetCanonical(keyBalance, pricing.AppendCredits(nb[:0], ch.BalanceAfter))
	ctx.SetStatusCode(resp.StatusCode())
	if ct := resp.Header.ContentType(); len(ct) > 0 {
		ctx.Response.Header.SetContentTypeBytes(ct)
	}
	ctx.SetBody(body) // the call's log line is written when it ends (observe.go)
}

var _ io.Reader = (*streamBody)(nil)
