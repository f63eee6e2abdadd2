package mockllm

import (
	"strconv"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// writeError answers status with an OpenAI-shaped error body, or an
// Anthropic-shaped one for /v1/messages. 429 also sets "Retry-After: 1".
func writeError(ctx *fasthttp.RequestCtx, k kind, status int, msg string) {
	bp := getBuf()
	b := (*bp)[:0]
	if k.anthropic() {
		b = append(b, `{"type":"error","error":{"type":"`...)
		b = append(b, anthropicErrorType(status)...)
		b = append(b, `","message":`...)
		b = gjson.AppendJSONString(b, msg)
		b = append(b, `}}`...)
	} else {
		typ, code := openAIErrorType(status)
		b = append(b, `{"error":{"message":`...)
		b = gjson.AppendJSONString(b, msg)
		b = append(b, `,"type":"`...)
		b = append(b, typ...)
		b = append(b, `","param":null,"code":"`...)
		b = append(b, code...)
		b = append(b, `"}}`...)
	}
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	if status == fasthttp.StatusTooManyRequests {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	ctx.SetBody(b)
	*bp = b
	putBuf(bp)
}

func openAIErrorType(status int) (typ, code string) {
	switch status {
	case 400:
		return "invalid_request_error", "invalid_request"
	case 401:
		return "invalid_request_error", "invalid_api_key"
	case 403:
		return "invalid_request_error", "permission_denied"
	case 404:
		return "invalid_request_error", "unknown_url"
	case 405:
		return "invalid_request_error", "method_not_allowed"
	case 429:
		return "requests", "rate_limit_exceeded"
	case 500:
		return "server_error", "server_error"
	case 503:
		return "server_error", "service_unavailable"
	}
	if status >= 500 {
		return "server_error", "http_" + strconv.Itoa(status)
	}
	return "invalid_request_error", "http_" + strconv.Itoa(status)
}

func anthropicErrorType(status int) string {
	switch status {
	case 400:
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
	case 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}
