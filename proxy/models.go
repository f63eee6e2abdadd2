package proxy

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/pricing"
)

// renderModels pre-renders GET /v1/models: the OpenAI list shape plus each
// model's tier, rates (credits per 1K tokens) and limits.
func renderModels(c *pricing.Catalog) []byte {
	b := []byte(`{"object":"list","data":[`)
	for i, m := range c.Models() {
		if i > 0 {
			b = append(b, ',')
		}
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
		b = append(b, `,"pricing":{"unit":"credits per 1K tokens","input":`...)
		b = strconv.AppendInt(b, m.Rates.Input, 10)
		b = append(b, `,"cached_input":`...)
		b = strconv.AppendInt(b, m.Rates.CachedInput, 10)
		b = append(b, `,"output":`...)
		b = strconv.AppendInt(b, m.Rates.Output, 10)
		if m.PricedByUSD() {
			b = append(b, `,"passthrough_usd":true`...)
		}
		b = append(b, `},"context_window":`...)
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
		b = append(b, "]}"...)
	}
	return append(b, "]}"...)
}

func (s *Server) handleModels(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		s.writeError(ctx, errMethod)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(s.models)
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
	b = append(b, `},"credits_charged":"`...)
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
	b = append(b, '}')
	*bp = b
	ctx.SetContentType("application/json")
	ctx.Response.SetBody(b)
}
