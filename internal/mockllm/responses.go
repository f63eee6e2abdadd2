package mockllm

// Body and event builders for the OpenAI Responses API (/v1/responses).

import (
	"bytes"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

func appendResponsesUsage(b []byte, u *usage) []byte {
	b = append(b, `"usage":{"input_tokens":`...)
	b = appendInt(b, int64(u.prompt))
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	b = appendInt(b, int64(u.cached))
	b = append(b, `},"output_tokens":`...)
	b = appendInt(b, int64(u.completionTotal()))
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":`...)
	b = appendInt(b, int64(u.reasoning))
	b = append(b, `},"total_tokens":`...)
	b = appendInt(b, int64(u.total()))
	return append(b, '}')
}

// appendOutputMessage appends the assistant message output item.
func appendOutputMessage(b []byte, n int64, u *usage, done bool) []byte {
	b = append(b, `{"type":"message","id":"msg_mock_`...)
	b = appendInt(b, n)
	if !done {
		return append(b, `","status":"in_progress","role":"assistant","content":[]}`...)
	}
	b = append(b, `","status":"completed","role":"assistant","content":[`...)
	b = appendOutputText(b, u)
	return append(b, `]}`...)
}

func appendOutputText(b []byte, u *usage) []byte {
	b = append(b, `{"type":"output_text","text":"`...)
	b = appendText(b, u.completion)
	return append(b, `","annotations":[]}`...)
}

// appendResponse appends a response object. With status "completed" it has
// the output and usage; otherwise (in_progress) output is empty and usage
// null.
func appendResponse(b []byte, n int64, model []byte, u usage, status string) []byte {
	return appendResponseObj(b, n, model, &u, status)
}

func appendResponseObj(b []byte, n int64, model []byte, u *usage, status string) []byte {
	done := status == "completed"
	b = append(b, `{"id":"resp_mock_`...)
	b = appendInt(b, n)
	b = append(b, `","object":"response","created_at":`...)
	b = appendInt(b, mockCreated)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `","model":`...)
	b = append(b, model...)
	b = append(b, `,"output":[`...)
	if done {
		b = appendOutputMessage(b, n, u, true)
	}
	b = append(b, ']')
	switch {
	case !done:
		b = append(b, `,"usage":null`...)
	case !u.noUsage:
		b = append(b, ',')
		b = appendResponsesUsage(b, u)
	}
	return append(b, '}')
}

// appendRespEventHead appends "event: typ\ndata: {"type":"typ","sequence_number":seq,".
func appendRespEventHead(b []byte, typ string, seq int) []byte {
	b = append(b, "event: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: {\"type\":\""...)
	b = append(b, typ...)
	b = append(b, `","sequence_number":`...)
	b = appendInt(b, int64(seq))
	return append(b, ',')
}

// appendRespItemRef appends `"item_id":"msg_mock_N","output_index":0,"content_index":0,`.
func appendRespItemRef(b []byte, n int64) []byte {
	b = append(b, `"item_id":"msg_mock_`...)
	b = appendInt(b, n)
	return append(b, `","output_index":0,"content_index":0,`...)
}

// Responses stream steps (besides per-token deltas).
const (
	respCreated = iota
	respInProgress
	respItemAdded
	respPartAdded
	respTextDone
	respPartDone
	respItemDone
	respCompleted
)

func appendRespEvent(b []byte, n int64, model []byte, u *usage, step, seq int) []byte {
	switch step {
	case respCreated:
		b = appendRespEventHead(b, "response.created", seq)
		b = append(b, `"response":`...)
		b = appendResponseObj(b, n, model, u, "in_progress")
	case respInProgress:
		b = appendRespEventHead(b, "response.in_progress", seq)
		b = append(b, `"response":`...)
		b = appendResponseObj(b, n, model, u, "in_progress")
	case respItemAdded:
		b = appendRespEventHead(b, "response.output_item.added", seq)
		b = append(b, `"output_index":0,"item":`...)
		b = appendOutputMessage(b, n, u, false)
	case respPartAdded:
		b = appendRespEventHead(b, "response.content_part.added", seq)
		b = appendRespItemRef(b, n)
		b = append(b, `"part":{"type":"output_text","text":"","annotations":[]}`...)
	case respTextDone:
		b = appendRespEventHead(b, "response.output_text.done", seq)
		b = appendRespItemRef(b, n)
		b = append(b, `"text":"`...)
		b = appendText(b, u.completion)
		b = append(b, '"')
	case respPartDone:
		b = appendRespEventHead(b, "response.content_part.done", seq)
		b = appendRespItemRef(b, n)
		b = append(b, `"part":`...)
		b = appendOutputText(b, u)
	case respItemDone:
		b = appendRespEventHead(b, "response.output_item.done", seq)
		b = append(b, `"output_index":0,"item":`...)
		b = appendOutputMessage(b, n, u, true)
	case respCompleted:
		b = appendRespEventHead(b, "response.completed", seq)
		b = append(b, `"response":`...)
		b = appendResponseObj(b, n, model, u, "completed")
	}
	return append(b, "}\n\n"...)
}

// appendRespDelta appends one response.output_text.delta event for token i.
func appendRespDelta(b []byte, n int64, u *usage, i, seq int) []byte {
	b = appendRespEventHead(b, "response.output_text.delta", seq)
	b = appendRespItemRef(b, n)
	b = append(b, `"delta":"`...)
	b = appendDelta(b, i, u.completion)
	return append(b, "\"}\n\n"...)
}

var (
	responsesPrefix = []byte("/v1/responses/")
	strInputItems   = []byte("/input_items")
	strMockRespID   = []byte("resp_mock_")
)

// storedResponse answers the stored-response routes: GET and DELETE
// /v1/responses/{id} and GET /v1/responses/{id}/input_items. Every id the
// mock issued (resp_mock_N) exists until it is deleted; other ids are 404.
// The retrieved response is completed, with no output or usage (the mock
// keeps no bodies); input_items is an empty list.
func (s *Server) storedResponse(ctx *fasthttp.RequestCtx, rest []byte) {
	id, items := rest, false
	if cut, ok := bytes.CutSuffix(rest, strInputItems); ok {
		id, items = cut, true
	}
	switch {
	case ctx.IsGet():
	case ctx.IsDelete() && !items:
	default:
		writeError(ctx, kindResponses, fasthttp.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if _, gone := s.deleted.Load(string(id)); gone || !bytes.HasPrefix(id, strMockRespID) || bytes.IndexByte(id, '/') >= 0 {
		writeError(ctx, kindResponses, fasthttp.StatusNotFound, "Response with id '"+string(id)+"' not found.")
		return
	}
	bp := getBuf()
	b := (*bp)[:0]
	switch {
	case items:
		b = append(b, `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`...)
	case ctx.IsDelete():
		s.deleted.Store(string(id), struct{}{})
		b = append(b, `{"id":`...)
		b = gjson.AppendJSONString(b, string(id))
		b = append(b, `,"object":"response","deleted":true}`...)
	default:
		b = append(b, `{"id":`...)
		b = gjson.AppendJSONString(b, string(id))
		b = append(b, `,"object":"response","created_at":`...)
		b = appendInt(b, mockCreated)
		b = append(b, `,"status":"completed","model":"mock-gpt","output":[],"usage":null}`...)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	*bp = b
	putBuf(bp)
}
