package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Errors the proxy raises itself; each maps to one status in writeError.
var (
	errNoKey        = errors.New("proxy: missing API key")
	errBodyTooLarge = errors.New("proxy: request body too large")
	errNotFound     = errors.New("proxy: no such route")
	errMethod       = errors.New("proxy: method not allowed")
	errTimeout      = errors.New("proxy: upstream timed out")
	errUpstream     = errors.New("proxy: upstream failed")
	errProvider     = errors.New("proxy: provider not configured")
	errDraining     = errors.New("proxy: shutting down")
	errUnsettled    = errors.New("proxy: served, but the meter refused the charge")
	errNoResponse   = errors.New("proxy: no such stored response for this account")
	errTooLarge     = errors.New("proxy: upstream answer over the response size limit")
)

// badRequest is a client error with a message safe to show.
type badRequest struct {
	msg   string
	param string
	code  string
}

func (e *badRequest) Error() string { return "proxy: bad request: " + e.msg }

func invalid(param, format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...), param: param, code: "invalid_request"}
}

// LimitError is a plan or rate limit refusal (429).
type LimitError struct {
	Limit      string // e.g. "requests_per_minute"; the error's param names it
	Message    string
	RetryAfter int // seconds
}

func (e *LimitError) Error() string { return "proxy: limit exceeded: " + e.Limit }

// apiError is the OpenAI error shape.
type apiError struct {
	status int
	typ    string
	code   string
	param  string
	msg    string
}

// classify maps an error to what the caller sees. Internal text never leaks:
// unknown errors become a generic 500 and are logged by the caller.
func classify(err error) apiError {
	var (
		br  *badRequest
		ins *metering.InsufficientError
		lim *LimitError
		kr  *metering.KeyRuleError
	)
	switch {
	case errors.As(err, &br):
		return apiError{400, "invalid_request_error", br.code, br.param, br.msg}
	case errors.Is(err, errNoKey):
		return apiError{401, "authentication_error", "missing_api_key", "", "Missing API key: send Authorization: Bearer <key>."}
	case errors.Is(err, metering.ErrBadKey):
		return apiError{401, "authentication_error", "invalid_api_key", "", "Invalid or revoked API key."}
	case errors.As(err, &ins):
		what := "available"
		if ins.KeyLimit {
			what = "left under this API key's credit limit"
		}
		return apiError{402, "insufficient_quota", "insufficient_credits", "",
			"Insufficient credits: this call needs at least " + pricing.FormatCredits(ins.Needed) +
				" credits, " + pricing.FormatCredits(max(ins.Available, 0)) + " " + what + "."}
	case errors.As(err, &kr):
		return keyRuleError(kr) // keyrules.go
	case errors.Is(err, metering.ErrNoAccount):
		return apiError{401, "authentication_error", "invalid_api_key", "", "Invalid or revoked API key."}
	case errors.Is(err, pricing.ErrUnknownModel):
		return apiError{404, "invalid_request_error", "model_not_found", "model", "The model does not exist or is not served by this gateway; GET /v1/models lists them."}
	case errors.Is(err, errBodyTooLarge):
		return apiError{413, "invalid_request_error", "request_too_large", "", "Request body too large."}
	case errors.As(err, &lim):
		return apiError{429, "rate_limit_error", "rate_limit_exceeded", lim.Limit, lim.Message}
	case errors.Is(err, errUnsettled):
		return apiError{500, "api_error", "internal_error", "", "The call could not be charged, so its answer was withheld; you were not charged."}
	case errors.Is(err, metering.ErrUnavailable):
		return apiError{503, "api_error", "store_unavailable", "", "The credit store is unavailable; the call was not forwarded and not charged. Retry shortly."}
	case errors.Is(err, errDraining):
		return apiError{503, "api_error", "shutting_down", "", "The gateway is shutting down; retry."}
	case errors.Is(err, errTooLarge):
		return apiError{502, "api_error", "response_too_large", "",
			"The model provider's answer exceeded this gateway's response size limit, so it was not relayed. The provider generated it, so the call was charged what it reserved (see X-Credits-Charged); ask for less output (max_tokens, n, logprobs)."}
	case errors.Is(err, errTimeout):
		return apiError{504, "api_error", "upstream_timeout", "", "The model provider did not answer in time; the call was not charged."}
	case errors.Is(err, errUpstream):
		return apiError{502, "api_error", "upstream_error", "", "The model provider failed; the call was not charged."}
	case errors.Is(err, errProvider):
		return apiError{502, "api_error", "provider_unavailable", "", "No provider is configured for this model."}
	case errors.Is(err, errNotFound):
		return apiError{404, "invalid_request_error", "not_found", "", "No such endpoint."}
	case errors.Is(err, errMethod):
		return apiError{405, "invalid_request_error", "method_not_allowed", "", "Method not allowed."}
	case errors.Is(err, errNoResponse):
		// The same answer whether the id is unknown, expired, or another
		// account's: an id is never confirmed to exist.
		return apiError{404, "invalid_request_error", "response_not_found", "response_id", "No response with this id was created with this account's keys."}
	case errors.Is(err, metering.ErrNotFound):
		return apiError{404, "invalid_request_error", "not_found", "id", "No such generation for this account."}
	}
	return apiError{500, "api_error", "internal_error", "", "Internal error."}
}

// writeError answers ctx with the OpenAI-shaped error for err. It is the one
// place where errors become statuses.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, err error) {
	e := classify(err)
	if e.status >= 500 && s.log.Core().Enabled(zap.WarnLevel) {
		s.log.Warn("request failed", zap.ByteString("request_id", ctx.Response.Header.Peek(hdrRequestID)),
			zap.Int("status", e.status), zap.Error(err))
	}
	var lim *LimitError
	if errors.As(err, &lim) && lim.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(lim.RetryAfter))
	} else if wait := keyRuleRetry(err); wait > 0 { // keyrules.go
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(wait))
	}
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	bp := getBuf()
	if anthropicEnvelope(ctx) {
		// Anthropic clients read {"type":"error","error":{"type",…}} with
		// Anthropic's type names; the OpenAI fields stay inside it.
		e.typ = anthropicErrorType(e.status)
		b := appendErrorJSON(append((*bp)[:0], `{"type":"error",`...), e)
		n := len(`{"type":"error",`)
		*bp = append(b[:n], b[n+1:]...) // drop the inner object's opening brace
	} else {
		*bp = appendErrorJSON((*bp)[:0], e)
	}
	ctx.Response.SetBody(*bp)
	putBuf(bp)
}

// anthropicEnvelope reports whether ctx's errors take Anthropic's envelope:
// on the routes of a dialect that answers in it (errorShape), and on the
// models routes when an Anthropic SDK asks (modelShapeOf).
func anthropicEnvelope(ctx *fasthttp.RequestCtx) bool {
	switch p := ctx.Path(); {
	case bytes.HasPrefix(p, strV1):
		for _, ep := range endpoints {
			if string(p[len(strV1):]) == ep.path {
				return ep.dialect.errorShape() == shapeAnthropic // dialect_*.go
			}
		}
		if string(p) == "/v1/models" || bytes.HasPrefix(p, modelsPrefix) {
			return modelShapeOf(&ctx.Request.Header) == shapeAnthropic
		}
	}
	return false
}

var strV1 = []byte("/v1")

// errNotNative refuses a model no Anthropic deployment serves on an
// Anthropic route: a 502 would have SDKs retry what cannot succeed.
func errNotNative(m *pricing.Model, ep *endpoint) error {
	return &badRequest{param: "model", code: "model_not_supported",
		msg: fmt.Sprintf("The model '%s' is not served through Anthropic's Messages API (/v1%s) on this gateway; call it through /v1/chat/completions.", m.ID, ep.path)}
}

// anthropicErrorType names a status the way the Anthropic API does.
func anthropicErrorType(status int) string {
	switch status {
	case 400, 405:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 504:
		return "timeout_error"
	}
	return "api_error"
}

// appendErrorJSON appends {"error":{…}} (the OpenAI shape).
func appendErrorJSON(b []byte, e apiError) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, e.msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.typ)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, e.code)
	b = append(b, `,"param":`...)
	if e.param == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, e.param)
	}
	return append(b, "}}"...)
}
