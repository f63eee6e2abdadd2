package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// messagesDialect is Anthropic's Messages API (/v1/messages and its
// count_tokens), served only by Anthropic providers: max_tokens required
// (0 is a cache pre-warm), the key as x-api-key, usage in message_start and
// message_delta, errors in Anthropic's envelope.
type messagesDialect struct{}

func (messagesDialect) inspect(ep *endpoint, r *request, s *scanner, _ []byte) error {
	t := &s.top
	r.tools = s.toolAnthropic
	mcp := t[nameMCPServers]
	r.unsized = r.unsized || s.toolAnthropic || (mcp.present() && !(mcp.kind == kindArray && mcp.elems == 0)) || t[nameContainer].present()
	if r.remote == "" {
		switch m := t[nameMCPServers]; {
		case m.present() && !(m.kind == kindArray && m.elems == 0):
			r.remote = "mcp_servers (provider-side MCP connectors)"
		case t[nameContainer].present():
			r.remote = "container (a provider-side code execution container and its files)"
		case s.toolAnthropic:
			r.remote = reasonTool
		}
	}
	if ep.maxField != "" && r.maxOut == 0 && !r.noOutput {
		return invalid("max_tokens", "Missing required parameter: 'max_tokens'.")
	}
	return nil
}

func (messagesDialect) requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64) {
	dst = appendRequestContent(dst, v.Get("system"))
	for _, m := range v.GetArray("messages") {
		messages++
		dst = appendRequestContent(dst, m.Get("content"))
		dst = append(dst, '\n')
	}
	dst = appendJSON(dst, v.Get("tools"))
	return dst, messages, 0
}

func (messagesDialect) usage(v *fastjson.Value) (usage, bool) {
	u, ok := parseAnthropicUsage(v.Get("usage"))
	if !ok || !u.hasInput { // a whole message states its input: else estimated
		return usage{}, false
	}
	return u, true
}

func (messagesDialect) stored(v *fastjson.Value) []byte { return storesNothing(v) }

// event: message_start has the input figures, message_delta the cumulative
// output (held until message_stop so that it can carry the charge),
// message_stop ends the stream; content_block_start shows the web searches
// run, for an estimate should the stream be cut.
func (messagesDialect) event(sb *streamBody, name, data []byte) bool {
	if len(name) == 0 {
		name = eventType(data) // a server that sends no event: lines
	}
	switch {
	case bytes.Equal(name, evMessageStart):
		if u, ok, _ := chunkUsage(data, parseAnthropicUsage, "", "message", "usage"); ok {
			sb.messageUsage(name, u)
		}
	case bytes.Equal(name, evMessageDelta):
		if u, ok, _ := chunkUsage(data, parseAnthropicUsage, "", "usage"); ok {
			sb.messageUsage(name, u)
		}
		sb.held = append(sb.held[:0], data...)
		return false
	case bytes.Equal(name, evMessageStop):
		sb.terminal = true
		sb.settle(false)
		if len(sb.held) > 0 {
			sb.appendMessageDelta(true)
			sb.held = sb.held[:0]
		}
	case bytes.Equal(name, evError):
		sb.failed("upstream_error_event")
	case bytes.Equal(name, evBlockDelta):
		sb.collect(data)
	case bytes.Equal(name, evBlockStart):
		sb.searchStarted(data, strServerToolUse, "content_block")
	}
	return true
}

// messageUsage takes the usage of event name: message_start's input figures
// (its output_tokens is a first count), or message_delta's cumulative
// output. Newer API versions restate the input figures in message_delta too
// (cumulative as well: the larger of the two readings of each is the count,
// never their sum).
func (sb *streamBody) messageUsage(name []byte, u usage) {
	if bytes.Equal(name, evMessageStart) {
		sb.u = u               // input is final here; output_tokens is a first count
		sb.u.seen = u.hasInput // without its input the usage is not the call's
		return
	}
	sb.u.Output, sb.u.Reasoning = u.Output, u.Reasoning
	sb.u.Input, sb.u.CachedInput = max(sb.u.Input, u.Input), max(sb.u.CachedInput, u.CachedInput)
	sb.u.CacheWrite, sb.u.CacheWrite1h = max(sb.u.CacheWrite, u.CacheWrite), max(sb.u.CacheWrite1h, u.CacheWrite1h)
	sb.u.WebSearch = max(sb.u.WebSearch, u.WebSearch)
	// Usage is the call's once some event stated its input; a delta's
	// output count is final whatever came before.
	sb.u.seen, sb.outFinal = sb.u.seen || u.hasInput, true
}

// streamCut passes on the message_delta held (uncharged), then Anthropic's
// error event with our code beside its type.
func (messagesDialect) streamCut(sb *streamBody) {
	if len(sb.held) > 0 {
		sb.appendMessageDelta(false)
	}
	sb.cut(messagesCutEvent)
}

// messagesCutEvent is the Messages stream's error event for a cut stream.
var messagesCutEvent = messagesDialect{}.streamError("upstream_stream_cut", msgStreamCut)

// streamError is Anthropic's error event, with our code beside its type.
func (messagesDialect) streamError(code, msg string) string {
	return "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"code\":\"" + code + "\",\"message\":\"" + msg + "\"}}\n\n"
}

func (messagesDialect) usageObject(u *fastjson.Value) (usage, bool) { return parseAnthropicUsage(u) }

// appendMessageDelta relays the message_delta held, with the charge added
// when charged.
func (sb *streamBody) appendMessageDelta(charged bool) {
	sb.out = append(sb.out, "event: message_delta\n"...)
	sb.out = append(sb.out, strData...)
	sb.out = append(sb.out, ' ')
	if charged {
		sb.out = sb.withCredits(sb.out, sb.held)
	} else {
		sb.out = append(sb.out, sb.held...)
	}
	sb.out = append(sb.out, '\n', '\n')
}

func (messagesDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) {
	h.SetCanonical(hdrXAPIKey, k.apiKey)
}

func (messagesDialect) errorShape() modelShape { return shapeAnthropic }
