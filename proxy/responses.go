package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Stored responses. A Responses API response the provider stores (by
// default it does) can be read back, listed and deleted by its id, and
// continued with previous_response_id. Those ids are the provider's, and the
// provider's key is shared by every account: without a check any account
// could read any other's conversation by its id. So the id of every
// response a metered POST /v1/responses created is recorded for its account
// (metering's {a:ID}:resp:<id>, with the provider that served it), and only
// that account may use it:
//
//	GET    /v1/responses/{id}              forwarded, free
//	DELETE /v1/responses/{id}              forwarded, free
//	GET    /v1/responses/{id}/input_items  forwarded, free
//	POST   /v1/responses previous_response_id: 400 unless the account's
//
// Anything else — an unknown id, an expired record, another account's id —
// is 404 (400 for previous_response_id), alike.

var (
	responsesPrefix = []byte("/v1/responses/")
	strInputItems   = []byte("/input_items")
)

// recordTimeout bounds writing a stored response's owner.
const recordTimeout = 5 * time.Second

// recordResponse records, off the caller's path, that account created the
// stored response id at provider, and the tokens a continuation of it reads
// again (its prompt and visible output, once known; 0 when not). Until the
// write is done the record is kept here, so that this replica finds it at
// once (a continuation sent the moment its previous stream ended sees its
// context too); a failed write is logged (the call itself is not failed:
// the response stays unreachable through the gateway, or a continuation's
// estimate lacks its context).
func (s *Server) recordResponse(account, id, provider string, tokens int64) {
	if id == "" || len(id) > metering.MaxResponseIDLen {
		s.log.Warn("not recording a stored response: bad id", zap.String("account", account), zap.Int("id_len", len(id)))
		return
	}
	k := account + "\x00" + id
	rec := metering.StoredResponse{Provider: provider, Context: tokens}
	s.recording.Store(k, rec)
	s.inflight.Add(1) // Shutdown waits for the write
	go func() {
		defer s.inflight.Done()
		ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
		err := s.meter.RecordResponse(ctx, account, id, provider, tokens)
		cancel()
		s.recording.CompareAndDelete(k, rec) // a later write's entry stays until it is done
		if err != nil {
			s.log.Warn("recording stored response", zap.String("account", account), zap.String("response_id", id), zap.Error(err))
		}
	}()
}

// storedResponse returns what is recorded of account's stored response id,
// or an error matching metering.ErrNotFound.
func (s *Server) storedResponse(account string, id []byte) (metering.StoredResponse, error) {
	if !validResponseID(id) {
		return metering.StoredResponse{}, fmt.Errorf("response id: %w", metering.ErrNotFound)
	}
	if r, ok := s.recording.Load(account + "\x00" + string(id)); ok {
		return r.(metering.StoredResponse), nil
	}
	return s.meter.StoredResponse(context.Background(), account, string(id))
}

// contextTokens is what a continuation of a response with usage u reads
// again as input: u's whole prompt and its visible output (reasoning is not
// carried into the next turn); an estimate's when the provider sent none.
func contextTokens(u usage) int64 {
	return u.Input + u.CachedInput + u.CacheWrite + u.CacheWrite1h + max(u.Output-u.Reasoning, 0)
}

// validResponseID: what a provider's id looks like (resp_<hex> at OpenAI),
// safe as a path segment.
func validResponseID(id []byte) bool {
	if len(id) == 0 || len(id) > metering.MaxResponseIDLen {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkPrevious refuses a previous_response_id the account did not create,
// or one stored by a provider that serves no deployment of m (no other has
// it). It returns what is recorded of it: the provider the call must go to
// ("" = any) and the tokens of context the provider reads again.
func (s *Server) checkPrevious(account string, id []byte, m *pricing.Model) (metering.StoredResponse, error) {
	if len(id) == 0 {
		return metering.StoredResponse{}, nil
	}
	rec, err := s.storedResponse(account, id)
	if errors.Is(err, metering.ErrNotFound) {
		return rec, &badRequest{param: "previous_response_id", code: "previous_response_not_found",
			msg: "Previous response not found: no response with this id was created with this account's keys."}
	}
	if err != nil {
		return rec, err
	}
	for _, d := range m.Deployments {
		if d.Provider == rec.Provider {
			return rec, nil
		}
	}
	return rec, &badRequest{param: "previous_response_id", code: "previous_response_not_found",
		msg: fmt.Sprintf("The previous response was stored by a provider that does not serve the model '%s'; continue it with the model that created it.", m.ID)}
}

// handleStoredResponse serves GET and DELETE /v1/responses/{id} and GET
// /v1/responses/{id}/input_items (rest is what follows /v1/responses/):
// for the account that created the response, forwarded to the provider that
// served it with the provider's key, and the answer (or refusal) relayed.
// The provider does not bill these, so neither does the gateway.
func (s *Server) handleStoredResponse(ctx *fasthttp.RequestCtx, rest []byte) {
	id, items := rest, false
	if i := len(rest) - len(strInputItems); i > 0 && string(rest[i:]) == string(strInputItems) {
		id, items = rest[:i], true
	}
	switch {
	case ctx.IsGet():
	case ctx.IsDelete() && !items:
	default:
		s.writeError(ctx, errMethod)
		return
	}
	start, reqID, ident, ok := s.beginFree(ctx)
	if !ok {
		return
	}
	rec, err := s.storedResponse(ident.Account, id)
	provider := rec.Provider
	if err != nil {
		if errors.Is(err, metering.ErrNotFound) {
			err = errNoResponse
		}
		s.writeError(ctx, err)
		return
	}
	u := s.rt.Load().upstreams[provider]
	if u == nil {
		s.log.Warn("stored response's provider is no longer configured", zap.String("request_id", reqID), zap.String("provider", provider))
		s.writeError(ctx, errNoResponse)
		return
	}
	req := fasthttp.AcquireRequest()
	u.prepareStored(req, ctx.Method(), id, items, ctx.URI().QueryString())
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	err = u.plain.DoDeadline(req, resp, start.Add(s.opts.Timeouts.Request))
	fasthttp.ReleaseRequest(req)
	if err != nil {
		s.writeError(ctx, upstreamErr(err))
		return
	}
	ctx.Response.Header.SetCanonical(keyProvider, []byte(u.name))
	switch status := resp.StatusCode(); {
	case status == fasthttp.StatusNotFound:
		// The provider no longer has it (deleted, expired): the same
		// answer as for an id the account never created.
		s.writeError(ctx, errNoResponse)
	case status < 200 || status > 299:
		s.relayRefusal(ctx, resp, reqID)
	default:
		ctx.SetStatusCode(status)
		if ct := resp.Header.ContentType(); len(ct) > 0 {
			ctx.Response.Header.SetContentTypeBytes(ct)
		}
		ctx.SetBody(resp.Body())
	}
	if ce := s.log.Check(zap.DebugLevel, "stored response"); ce != nil {
		ce.Write(zap.String("request_id", reqID), zap.String("account", ident.Account), zap.ByteString("method", ctx.Method()),
			zap.String("provider", u.name), zap.Int("status", resp.StatusCode()), zap.Duration("latency", time.Since(start)))
	}
}
