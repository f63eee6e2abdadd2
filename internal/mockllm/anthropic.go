package mockllm

import "github.com/valyala/fasthttp"

// Body and event builders for the native Anthropic Messages API
// (/v1/messages). Anthropic reports input_tokens without cache reads, so
// input_tokens is P-X and cache_read_input_tokens is X.

func stopReason(u *usage) string {
	if u.limited {
		return "max_tokens"
	}
	return "end_turn"
}

func appendAnthropicUsage(b []byte, u *usage, outputTokens int) []byte {
	b = append(b, `"usage":{"input_tokens":`...)
	b = appendInt(b, int64(u.prompt-u.cached))
	b = append(b, `,"output_tokens":`...)
	b = appendInt(b, int64(outputTokens))
	b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":`...)
	b = appendInt(b, int64(u.cached))
	return append(b, '}')
}

func appendMessageHead(b []byte, n int64, model []byte) []byte {
	b = append(b, `{"id":"msg_mock_`...)
	b = appendInt(b, n)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, model...)
	return append(b, ',')
}

// appendMessage appends a non-streaming Messages API response.
func appendMessage(b []byte, n int64, model []byte, u usage) []byte {
	b = appendMessageHead(b, n, model)
	b = append(b, `"content":[{"type":"text","text":"`...)
	b = appendText(b, u.completion)
	b = append(b, `"}],"stop_reason":"`...)
	b = append(b, stopReason(&u)...)
	b = append(b, `","stop_sequence":null`...)
	if !u.noUsage {
		b = append(b, ',')
		b = appendAnthropicUsage(b, &u, u.completionTotal())
	}
	return append(b, '}')
}

// Anthropic stream steps (besides per-token content_block_delta events).
const (
	msgStart = iota
	msgBlockStart
	msgBlockStop
	msgDelta
	msgStop
)

func appendMessageEvent(b []byte, n int64, model []byte, u *usage, step int) []byte {
	switch step {
	case msgStart:
		b = append(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"...)
		b = appendMessageHead(b, n, model)
		b = append(b, `"content":[],"stop_reason":null,"stop_sequence":null`...)
		if !u.noUsage {
			b = append(b, ',')
			b = appendAnthropicUsage(b, u, 1)
		}
		b = append(b, '}')
	case msgBlockStart:
		b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}"...)
	case msgBlockStop:
		b = append(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0"...)
	case msgDelta:
		b = append(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\""...)
		b = append(b, stopReason(u)...)
		b = append(b, `","stop_sequence":null}`...)
		if !u.noUsage {
			b = append(b, `,"usage":{"output_tokens":`...)
			b = appendInt(b, int64(u.completionTotal()))
			b = append(b, '}')
		}
	case msgStop:
		b = append(b, "event: message_stop\ndata: {\"type\":\"message_stop\""...)
	}
	return append(b, "}\n\n"...)
}

// appendMessageDelta appends one content_block_delta event for token i.
func appendMessageDelta(b []byte, u *usage, i int) []byte {
	b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\""...)
	b = appendDelta(b, i, u.completion)
	return append(b, "\"}}\n\n"...)
}

// writeTokenCount answers POST /v1/messages/count_tokens: {"input_tokens":P},
// the prompt counted as for /v1/messages (cache reads included).
func writeTokenCount(ctx *fasthttp.RequestCtx, req *request) {
	var nb [48]byte
	b := append(nb[:0], `{"input_tokens":`...)
	b = appendInt(b, int64(req.prompt))
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '}'))
}
