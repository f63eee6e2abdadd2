package proxy

import (
	"context"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/pricing"
)

// GET /v1/models and GET /v1/models/{id} answer in the shape the client's
// SDK reads: OpenAI's by default, Anthropic's when the request carries an
// anthropic-version header (every Anthropic SDK sends one). Both are
// rendered once, at New; like /v1/models before them, they need no key.

// modelShape is the wire shape of a models answer.
type modelShape uint8

const (
	shapeOpenAI modelShape = iota
	shapeAnthropic
	numShapes
)

// anthropicCreatedAt is every model's created_at in Anthropic's shape: the
// catalog has no release dates (the OpenAI shape says "created":0).
const anthropicCreatedAt = "1970-01-01T00:00:00Z"

// modelBodies are the pre-rendered answers, by shape, with the prices in
// force when they were rendered; next is when a scheduled price comes into
// force (zero: none), and the bodies must be rendered again.
type modelBodies struct {
	list [numShapes][]byte
	one  map[*pricing.Model]*[numShapes][]byte
	next time.Time
}

func renderModels(c *pricing.Catalog, at time.Time) *modelBodies {
	ms := c.Models()
	mb := &modelBodies{one: make(map[*pricing.Model]*[numShapes][]byte, len(ms))}
	for _, m := range ms {
		for _, p := range m.Prices {
			if p.From.After(at) && (mb.next.IsZero() || p.From.Before(mb.next)) {
				mb.next = p.From
			}
		}
	}
	oa := []byte(`{"object":"list","data":[`)
	an := []byte(`{"data":[`)
	for i, m := range ms {
		if i > 0 {
			oa, an = append(oa, ','), append(an, ',')
		}
		one := &[numShapes][]byte{appendOpenAIModel(nil, m, at), appendAnthropicModel(nil, m)}
		mb.one[m] = one
		oa = append(oa, one[shapeOpenAI]...)
		an = append(an, one[shapeAnthropic]...)
	}
	mb.list[shapeOpenAI] = append(oa, "]}"...)
	an = append(an, `],"has_more":false,"first_id":`...)
	if len(ms) == 0 {
		an = append(an, `null,"last_id":null`...)
	} else {
		an = appendJSONString(an, ms[0].ID)
		an = append(an, `,"last_id":`...)
		an = appendJSONString(an, ms[len(ms)-1].ID)
	}
	mb.list[shapeAnthropic] = append(an, '}')
	return mb
}

// appendOpenAIModel appends m in the OpenAI model shape plus its tier, its
// pricing (the rates in force at at, every kind; see appendPricing), limits
// and aliases.
func appendOpenAIModel(b []byte, m *pricing.Model, at time.Time) []byte {
	owner := ""
	if len(m.Deployments) > 0 {
		owner = m.Deployments[0].Provider
	}
	b = append(b, `{"id":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"object":"model","created":0,"owned_by":`...)
	b = appendJSONString(b, owner)
	b = append(b, `,"tier":`...)
	b = appendJSONString(b, m.Tier)
	b = append(b, `,"pricing":`...)
	b = appendPricing(b, m, at)
	b = append(b, `,"context_window":`...)
	b = strconv.AppendInt(b, m.ContextWindow, 10)
	b = append(b, `,"max_output_tokens":`...)
	b = strconv.AppendInt(b, m.MaxOutputTokens, 10)
	b = append(b, `,"aliases":[`...)
	for j, a := range m.Aliases {
		if j > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, a)
	}
	return append(b, "]}"...)
}

// appendAnthropicModel appends m in Anthropic's model shape (the catalog id
// is also its display name).
func appendAnthropicModel(b []byte, m *pricing.Model) []byte {
	b = append(b, `{"type":"model","id":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"display_name":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"created_at":"`+anthropicCreatedAt+`"}`...)
	return b
}

// modelShapeOf is the shape a models request is answered (and refused) in.
func modelShapeOf(h *fasthttp.RequestHeader) modelShape {
	if len(h.PeekBytes(hdrAnthropicVersion)) > 0 {
		return shapeAnthropic
	}
	return shapeOpenAI
}

// modelBodies returns the rendered models, rendered again once a scheduled
// price has come into force.
func (rt *liveConf) modelBodies() *modelBodies {
	mb := rt.models.Load()
	if now := time.Now(); !mb.next.IsZero() && !now.Before(mb.next) {
		mb = renderModels(rt.catalog, now)
		rt.models.Store(mb) // racing renders store equal bodies
	}
	return mb
}

// handleModels serves GET /v1/models.
func (s *Server) handleModels(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		s.writeError(ctx, errMethod)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(s.rt.Load().modelBodies().list[modelShapeOf(&ctx.Request.Header)])
}

// handleModel serves GET /v1/models/{id}: one model, by catalog id or alias.
func (s *Server) handleModel(ctx *fasthttp.RequestCtx, id []byte) {
	if !ctx.IsGet() && !ctx.IsHead() {
		s.writeError(ctx, errMethod)
		return
	}
	rt := s.rt.Load()
	m, ok := rt.catalog.LookupBytes(id)
	if !ok {
		s.writeError(ctx, pricing.ErrUnknownModel)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(rt.modelBodies().one[m][modelShapeOf(&ctx.Request.Header)])
}

// handleGeneration serves GET /v1/generation?id=…: a past call's cost record,
// to the account that made it.
func (s *Server) handleGeneration(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() {
		s.writeError(ctx, errMethod)
		return
	}
	ident, err := s.authenticate(ctx)
	if err != nil {
		s.writeError(ctx, err)
		return
	}
	id := ctx.QueryArgs().Peek("id")
	if len(id) == 0 || len(id) > 128 {
		s.writeError(ctx, invalid("id", "Query parameter 'id' (a request id from X-Request-Id) is required."))
		return
	}
	g, err := s.meter.Generation(context.Background(), ident.Account, string(id))
	if err != nil {
		s.writeError(ctx, err)
		return
	}
	bp := getBuf()
	defer putBuf(bp)
	b := append((*bp)[:0], `{"id":`...)
	b = appendJSONString(b, g.RequestID)
	b = append(b, `,"object":"generation","model":`...)
	b = appendJSONString(b, g.Model)
	b = append(b, `,"provider":`...)
	b = appendJSONString(b, g.Provider)
	b = append(b, `,"endpoint":`...)
	b = appendJSONString(b, g.Endpoint)
	b = append(b, `,"tokens":{"input":`...)
	b = strconv.AppendInt(b, g.Input, 10)
	b = append(b, `,"cached_input":`...)
	b = strconv.AppendInt(b, g.CachedInput, 10)
	b = append(b, `,"output":`...)
	b = strconv.AppendInt(b, g.Output, 10)
	b = append(b, `,"reasoning":`...)
	b = strconv.AppendInt(b, g.Reasoning, 10)
	b = append(b, `,"cache_write":`...)
	b = strconv.AppendInt(b, g.CacheWrite, 10)
	b = append(b, `,"cache_write_1h":`...)
	b = strconv.AppendInt(b, g.CacheWrite1h, 10)
	b = append(b, `},"web_search_requests":`...)
	b = strconv.AppendInt(b, g.WebSearch, 10)
	b = append(b, `,"credits_charged":"`...)
	b = pricing.AppendCredits(b, g.Charged)
	b = append(b, `","balance_after":`...)
	if g.Failed {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = pricing.AppendCredits(b, g.BalanceAfter)
		b = append(b, '"')
	}
	b = append(b, `,"estimated":`...)
	b = strconv.AppendBool(b, g.Estimated)
	b = append(b, `,"streamed":`...)
	b = strconv.AppendBool(b, g.Streamed)
	b = append(b, `,"cancelled":`...)
	b = strconv.AppendBool(b, g.Cancelled)
	b = append(b, `,"failed":`...)
	b = strconv.AppendBool(b, g.Failed)
	b = append(b, `,"over_hold":"`...)
	b = pricing.AppendCredits(b, g.OverHold)
	b = append(b, `","capped":`...)
	b = strconv.AppendBool(b, g.Capped)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(g.Status), 10)
	if g.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, g.Reason)
	}
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendFloat(b, float64(g.Latency.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"time_to_first_token_ms":`...)
	b = strconv.AppendFloat(b, float64(g.TTFT.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"created_at":`...)
	b = strconv.AppendInt(b, g.CreatedAt.Unix(), 10)
	b = appendTraceFields(b, &g.Record) // observe.go
	b = append(b, '}')
	*bp = b
	ctx.SetContentType("application/json")
	ctx.Response.SetBody(b)
}

// appendPricing appends m's pricing object: its mode, the rates in force at
// at (credits per 1K tokens, as exact decimals; web_search per 1K searches),
// their long-context rates, and, when m has dated prices, every price with
// the day it applies from and the book's source.
func appendPricing(b []byte, m *pricing.Model, at time.Time) []byte {
	b = append(b, `{"unit":"credits per 1K tokens","mode":`...)
	b = appendJSONString(b, m.Mode)
	p := m.PriceAt(at)
	b = appendPrice(b, p)
	if m.PricedByUSD() {
		b = append(b, `,"passthrough_usd":true`...)
	}
	if m.Source != "" {
		b = append(b, `,"source":`...)
		b = appendJSONString(b, m.Source)
		b = append(b, `,"checked":`...)
		b = appendJSONString(b, m.Checked)
	}
	if len(m.Prices) > 1 || !m.Prices[0].From.IsZero() {
		b = append(b, `,"prices":[`...)
		for i := range m.Prices {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			b = appendPrice(b, &m.Prices[i])
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendPrice appends a price's members (after a member already written, or
// at an object's start when b ends with '{').
func appendPrice(b []byte, p *pricing.Price) []byte {
	if b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	if !p.From.IsZero() {
		b = append(b, `"effective":"`...)
		b = p.From.AppendFormat(b, "2006-01-02")
		b = append(b, `",`...)
	}
	b = appendRates(b, &p.Rates)
	if p.Long != nil {
		b = append(b, `,"long_context":{"above_input_tokens":`...)
		b = strconv.AppendInt(b, p.Long.Above, 10)
		b = append(b, ',')
		b = appendRates(b, &p.Long.Rates)
		b = append(b, '}')
	}
	return b
}

func appendRates(b []byte, r *pricing.Rates) []byte {
	b = append(b, `"input":`...)
	b = r.Input.AppendDecimal(b)
	b = append(b, `,"cached_input":`...)
	b = r.CachedInput.AppendDecimal(b)
	b = append(b, `,"output":`...)
	b = r.Output.AppendDecimal(b)
	b = append(b, `,"cache_write":`...)
	b = r.CacheWrite.AppendDecimal(b)
	b = append(b, `,"cache_write_1h":`...)
	b = r.CacheWrite1h.AppendDecimal(b)
	b = append(b, `,"web_search":`...)
	b = r.WebSearch.AppendDecimal(b)
	b = append(b, `,"web_search_unit":"credits per 1K searches"`...)
	return b
}
