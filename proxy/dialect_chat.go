package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// chatDialect is OpenAI's Chat Completions (/v1/chat/completions), as every
// OpenAI-compatible server speaks it.
type chatDialect struct{}

func (chatDialect) inspect(_ *endpoint, r *request, s *scanner, body []byte) error {
	r.addUsage = r.stream && !r.wantUsage
	search := s.top[nameWebSearchOptions].present()
	r.tools = s.toolOpenAI || search
	r.searchPerCall = search
	r.unsized = r.unsized || r.tools
	switch {
	case r.remote != "":
	case search:
		r.remote = "web_search_options (a provider-side web search)"
	case s.toolOpenAI:
		r.remote = reasonTool
	}
	return readChoices(r, s, body)
}

func (chatDialect) requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64) {
	for _, m := range v.GetArray("messages") {
		messages++
		dst = appendRequestContent(dst, m.Get("content"))
		for _, tc := range m.GetArray("tool_calls") {
			dst = append(dst, tc.GetStringBytes("function", "name")...)
			dst = append(dst, tc.GetStringBytes("function", "arguments")...)
		}
		dst = append(dst, '\n')
	}
	dst = appendJSON(dst, v.Get("tools"))
	dst = appendJSON(dst, v.Get("functions"))
	return dst, messages, 0
}

func (chatDialect) usage(v *fastjson.Value) (usage, bool) { return parseOpenAIUsage(v.Get("usage")) }

func (chatDialect) stored(v *fastjson.Value) []byte { return storesNothing(v) }

func (chatDialect) event(sb *streamBody, name, data []byte) bool { return openAIEvent(sb, name, data) }

func (chatDialect) streamCut(sb *streamBody) { sb.cut(openAICutEvent) }

func (chatDialect) streamError(code, msg string) string { return openAIStreamError(code, msg) }

func (chatDialect) usageObject(u *fastjson.Value) (usage, bool) { return parseOpenAIUsage(u) }

func (chatDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) { bearer(h, k) }

func (chatDialect) errorShape() modelShape { return shapeOpenAI }

// openAICutEvent is OpenAI's mid-stream error object for a cut stream
// (openAIStreamError's, made once).
var openAICutEvent = openAIStreamError("upstream_stream_cut", msgStreamCut)

// openAIEvent meters an event of a chat or completions stream: data lines
// of chunks, the usage-only chunk (held until [DONE] to carry the charge;
// dropped when the client did not ask for it), [DONE] at the end.
func openAIEvent(sb *streamBody, name, data []byte) bool {
	switch {
	case bytes.Equal(data, strDone):
		sb.terminal = true
		sb.settle(false)
		sb.emitHeld()
	case bytes.Equal(name, evError) || hasObjectKey(data, strErrorKey):
		sb.failed("upstream_error_event")
	default:
		sb.collect(data)
		if hasObjectKey(data, strUsageKey) {
			u, ok, usageOnly := chunkUsage(data, parseOpenAIUsage, "choices", "usage")
			if ok {
				sb.u, sb.outFinal = u, true
			}
			if ok && usageOnly {
				if sb.c.req.wantUsage {
					sb.held = append(sb.held[:0], data...)
				}
				return false
			}
		}
	}
	return true
}
