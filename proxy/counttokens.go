package proxy

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// handleCountTokens serves POST /v1/messages/count_tokens, Anthropic's token
// counter for a Messages request. The provider does not bill it, so neither
// does the gateway: no hold, no ledger entry. It still needs a valid key
// (the provider's key is not lent to strangers), and it is validated,
// resolved and forwarded as /v1/messages is: the catalog's model becomes the
// deployment's, the client's anthropic-version and anthropic-beta go along,
// and the provider's answer (or refusal) is relayed.
func (s *Server) handleCountTokens(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		s.writeError(ctx, errMethod)
		return
	}
	start, id, _, ok := s.beginFree(ctx)
	if !ok {
		return
	}
	body := ctx.PostBody()
	r, err := inspect(epCountTokens, body)
	if err != nil {
		s.writeError(ctx, err)
		return
	}
	rt := s.rt.Load()
	m, ok := rt.catalog.LookupBytes(r.model)
	if !ok {
		s.writeError(ctx, pricing.ErrUnknownModel)
		return
	}
	if !rt.servesNative(m) {
		s.writeError(ctx, errNotNative(m, epCountTokens))
		return
	}
	bp := getBuf()
	defer putBuf(bp)
	lastErr := errProvider
	for i, d := range m.Deployments {
		u := rt.upstreams[d.Provider]
		if u.kind != "anthropic" {
			continue
		}
		out, rewritten := rewrite(*bp, &r, epCountTokens, body, d.Model, 0)
		if rewritten {
			*bp = out // keep the grown buffer for the pool
		}
		req := fasthttp.AcquireRequest()
		u.prepare(req, epCountTokens, false)
		forwardNativeHeaders(req, &ctx.Request.Header) // anthropic.go
		req.SetBodyRaw(out)
		resp := fasthttp.AcquireResponse()
		err := u.plain.DoDeadline(req, resp, start.Add(s.opts.Timeouts.Request))
		fasthttp.ReleaseRequest(req)
		if err != nil {
			fasthttp.ReleaseResponse(resp)
			if lastErr = upstreamErr(err); errors.Is(lastErr, errTimeout) {
				break // as for a metered call: a timed-out request is not sent twice
			}
			continue
		}
		status := resp.StatusCode()
		if (status >= 500 || status == fasthttp.StatusTooManyRequests) && rt.nativeAfter(m, i) {
			fasthttp.ReleaseResponse(resp)
			lastErr = errUpstream
			continue
		}
		ctx.Response.Header.SetCanonical(keyProvider, []byte(u.name))
		if status < 200 || status > 299 {
			s.relayRefusal(ctx, resp, id)
		} else {
			ctx.SetStatusCode(status)
			if ct := resp.Header.ContentType(); len(ct) > 0 {
				ctx.Response.Header.SetContentTypeBytes(ct)
			}
			ctx.SetBody(resp.Body())
		}
		fasthttp.ReleaseResponse(resp)
		if ce := s.log.Check(zap.DebugLevel, "count_tokens"); ce != nil {
			ce.Write(zap.String("request_id", id), zap.String("model", m.ID), zap.String("provider", u.name),
				zap.Int("status", status), zap.Duration("latency", time.Since(start)))
		}
		return
	}
	s.writeError(ctx, lastErr)
}

// beginFree starts a free (unmetered) forwarded call: refused while the
// server drains, given a request id, authenticated. ok is false when the
// caller has been answered.
func (s *Server) beginFree(ctx *fasthttp.RequestCtx) (start time.Time, id string, ident metering.Identity, ok bool) {
	if s.draining.Load() {
		ctx.SetConnectionClose()
		s.writeError(ctx, errDraining)
		return start, id, ident, false
	}
	start, id = time.Now(), s.ids.next()
	ctx.Response.Header.SetCanonical(keyRequestID, []byte(id))
	ident, err := s.authenticate(ctx)
	if err != nil {
		s.writeError(ctx, err)
		return start, id, ident, false
	}
	return start, id, ident, true
}
