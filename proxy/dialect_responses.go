package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// responsesDialect is OpenAI's Responses API (/v1/responses): stored
// responses the account may continue (previous_response_id; responses.go),
// named stream events ending in response.completed.
type responsesDialect struct{}

func (responsesDialect) inspect(_ *endpoint, r *request, s *scanner, body []byte) error {
	t := &s.top
	if t[nameBackground].kind == kindTrue {
		// A background response comes back queued, without usage; its
		// output would be generated with nothing to meter it by.
		return invalid("background", "Background responses are not supported by this gateway: their usage cannot be metered. Send the request without 'background' (streaming works).")
	}
	switch pv := t[namePreviousResponseID]; {
	case !pv.present():
	case pv.kind != kindString:
		return invalid("previous_response_id", "Parameter 'previous_response_id' must be a string.")
	case pv.escaped:
		r.prevResponse = unescapeJSON(nil, body[pv.start+1:pv.end-1])
	default:
		r.prevResponse = body[pv.start+1 : pv.end-1]
	}
	r.tools = s.toolOpenAI
	// A previous response's context is counted when it was recorded
	// (call.prevContext); streamBody.unsized checks that.
	r.unsized = r.unsized || t[nameConversation].present() || t[namePrompt].present() || s.storedItem || s.toolOpenAI
	switch {
	case r.remote != "":
	case t[namePreviousResponseID].present():
		r.remote = "previous_response_id (a stored response)"
	case t[nameConversation].present():
		r.remote = "conversation (a stored conversation)"
	case t[namePrompt].present():
		r.remote = "prompt (a stored prompt)"
	case s.storedItem:
		r.remote = reasonStored
	case s.toolOpenAI:
		r.remote = reasonTool
	}
	return nil
}

func (responsesDialect) requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64) {
	dst = append(dst, v.GetStringBytes("instructions")...)
	in := v.Get("input")
	if in != nil && in.Type() == fastjson.TypeString {
		dst = append(dst, in.GetStringBytes()...)
	}
	for _, it := range in.GetArray() {
		messages++
		dst = appendRequestContent(dst, it.Get("content"))
		dst = append(dst, it.GetStringBytes("name")...)
		dst = append(dst, it.GetStringBytes("arguments")...)
		dst = appendRequestContent(dst, it.Get("output"))
		dst = append(dst, '\n')
	}
	dst = appendJSON(dst, v.Get("tools"))
	return dst, messages, 0
}

func (responsesDialect) usage(v *fastjson.Value) (usage, bool) { return parseResponse(v) }

// stored: the response's id, recorded for the account once settled.
func (responsesDialect) stored(v *fastjson.Value) []byte { return v.GetStringBytes("id") }

// event: response.created records the stored response's owner;
// response.completed (or .incomplete) carries the usage and ends the
// stream, relayed with the charge in response.usage; output_item.added
// shows the web searches run, for an estimate should the stream be cut.
func (responsesDialect) event(sb *streamBody, name, data []byte) bool {
	if len(name) == 0 {
		name = eventType(data) // a server that sends no event: lines
	}
	switch {
	case bytes.Equal(name, evRespCreated):
		sb.recordStored(data)
	case bytes.Equal(name, evRespCompleted) || bytes.Equal(name, evRespIncomplet):
		sb.recordStored(data) // when response.created was missed
		if u, ok, _ := chunkUsage(data, parseResponse, "", "response"); ok {
			sb.u, sb.outFinal = u, true
		}
		sb.terminal = true
		sb.settle(false)
		sb.out = append(sb.out, strEvent...)
		sb.out = append(sb.out, ' ')
		sb.out = append(sb.out, name...)
		sb.out = append(sb.out, '\n')
		sb.out = append(sb.out, strData...)
		sb.out = append(sb.out, ' ')
		sb.out = sb.withResponseCredits(sb.out, data)
		sb.out = append(sb.out, '\n', '\n')
		return false
	case bytes.Equal(name, evRespFailed) || bytes.Equal(name, evError):
		sb.failed("upstream_error_event")
	case bytes.HasSuffix(name, strDeltaSuffix):
		sb.collect(data)
	case bytes.Equal(name, evRespItemAdded):
		sb.searchStarted(data, strWebSearchCall, "item")
	}
	return true
}

func (responsesDialect) streamCut(sb *streamBody) {
	sb.cut(responsesCutEvent)
}

// responsesCutEvent is the Responses stream's error event for a cut stream.
var responsesCutEvent = responsesDialect{}.streamError("upstream_stream_cut", msgStreamCut)

// streamError is the Responses API's error event.
func (responsesDialect) streamError(code, msg string) string {
	return "event: error\ndata: {\"type\":\"error\",\"code\":\"" + code + "\",\"message\":\"" + msg + "\",\"param\":null}\n\n"
}

func (responsesDialect) usageObject(u *fastjson.Value) (usage, bool) { return parseResponsesUsage(u) }

func (responsesDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) { bearer(h, k) }

func (responsesDialect) errorShape() modelShape { return shapeOpenAI }
