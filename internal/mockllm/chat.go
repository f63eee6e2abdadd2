package mockllm

import "strconv"

// Body and event builders for /v1/chat/completions and /v1/completions.
// Everything is appended by hand: ids, numbers and the "tokN" output are
// ASCII, and the model is the request's raw (already escaped) JSON string.

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// appendText appends "tok1 tok2 ... tokC" (no quotes).
func appendText(b []byte, c int) []byte {
	for i := 1; i <= c; i++ {
		if i > 1 {
			b = append(b, ' ')
		}
		b = append(b, "tok"...)
		b = appendInt(b, int64(i))
	}
	return b
}

// appendDelta appends the text of streamed token i of c (no quotes):
// "tokI " for all but the last token, which has no trailing space.
func appendDelta(b []byte, i, c int) []byte {
	b = append(b, "tok"...)
	b = appendInt(b, int64(i))
	if i < c {
		b = append(b, ' ')
	}
	return b
}

func finishReason(u *usage) string {
	if u.limited {
		return "length"
	}
	return "stop"
}

// appendOpenAIUsage appends `"usage":{...}` in the chat/completions shape.
func appendOpenAIUsage(b []byte, u *usage) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = appendInt(b, int64(u.prompt))
	b = append(b, `,"completion_tokens":`...)
	b = appendInt(b, int64(u.completionTotal()))
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, int64(u.total()))
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = appendInt(b, int64(u.cached))
	b = append(b, `},"completion_tokens_details":{"reasoning_tokens":`...)
	b = appendInt(b, int64(u.reasoning))
	b = append(b, `}}`...)
	return b
}

func appendChatHead(b []byte, n int64, model []byte, object string) []byte {
	b = append(b, `{"id":"chatcmpl-mock-`...)
	b = appendInt(b, n)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = appendInt(b, mockCreated)
	b = append(b, `,"model":`...)
	b = append(b, model...)
	b = append(b, `,"system_fingerprint":"fp_mock",`...)
	return b
}

// appendChatCompletion appends a non-streaming chat.completion body.
func appendChatCompletion(b []byte, n int64, model []byte, u usage) []byte {
	b = appendChatHead(b, n, model, "chat.completion")
	b = append(b, `"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	b = appendText(b, u.completion)
	b = append(b, `","refusal":null},"logprobs":null,"finish_reason":"`...)
	b = append(b, finishReason(&u)...)
	b = append(b, `"}]`...)
	if !u.noUsage {
		b = append(b, ',')
		b = appendOpenAIUsage(b, &u)
	}
	return append(b, '}')
}

// chatChunk kinds.
const (
	chunkRole   = iota // first chunk: role only
	chunkToken         // one token, finish_reason on the last one
	chunkFinish        // empty delta with finish_reason (zero-token output)
	chunkUsage         // "choices":[] and usage
)

// appendChatChunk appends one SSE event with a chat.completion.chunk.
// withUsageNull adds "usage":null like OpenAI does when include_usage is set.
func appendChatChunk(b []byte, n int64, model []byte, u *usage, what, i int, withUsageNull bool) []byte {
	b = append(b, "data: "...)
	b = appendChatHead(b, n, model, "chat.completion.chunk")
	switch what {
	case chunkRole:
		b = append(b, `"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`...)
	case chunkToken:
		b = append(b, `"choices":[{"index":0,"delta":{"content":"`...)
		b = appendDelta(b, i, u.completion)
		b = append(b, `"},"logprobs":null,"finish_reason":`...)
		b = appendFinish(b, u, i == u.completion)
		b = append(b, `}]`...)
	case chunkFinish:
		b = append(b, `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":`...)
		b = appendFinish(b, u, true)
		b = append(b, `}]`...)
	case chunkUsage:
		b = append(b, `"choices":[],`...)
		b = appendOpenAIUsage(b, u)
		return append(b, "}\n\n"...)
	}
	if withUsageNull {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}

func appendFinish(b []byte, u *usage, last bool) []byte {
	if !last {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = append(b, finishReason(u)...)
	return append(b, '"')
}

func appendCompletionHead(b []byte, n int64, model []byte) []byte {
	b = append(b, `{"id":"cmpl-mock-`...)
	b = appendInt(b, n)
	b = append(b, `","object":"text_completion","created":`...)
	b = appendInt(b, mockCreated)
	b = append(b, `,"model":`...)
	b = append(b, model...)
	b = append(b, ',')
	return b
}

// appendTextCompletion appends a non-streaming legacy completion body.
func appendTextCompletion(b []byte, n int64, model []byte, u usage) []byte {
	b = appendCompletionHead(b, n, model)
	b = append(b, `"choices":[{"text":"`...)
	b = appendText(b, u.completion)
	b = append(b, `","index":0,"logprobs":null,"finish_reason":"`...)
	b = append(b, finishReason(&u)...)
	b = append(b, `"}]`...)
	if !u.noUsage {
		b = append(b, ',')
		b = appendOpenAIUsage(b, &u)
	}
	return append(b, '}')
}

// appendCompletionChunk appends one SSE event of a streamed legacy
// completion. what is chunkToken, chunkFinish or chunkUsage.
func appendCompletionChunk(b []byte, n int64, model []byte, u *usage, what, i int, withUsageNull bool) []byte {
	b = append(b, "data: "...)
	b = appendCompletionHead(b, n, model)
	switch what {
	case chunkToken:
		b = append(b, `"choices":[{"text":"`...)
		b = appendDelta(b, i, u.completion)
		b = append(b, `","index":0,"logprobs":null,"finish_reason":`...)
		b = appendFinish(b, u, i == u.completion)
		b = append(b, `}]`...)
	case chunkFinish:
		b = append(b, `"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":`...)
		b = appendFinish(b, u, true)
		b = append(b, `}]`...)
	case chunkUsage:
		b = append(b, `"choices":[],`...)
		b = appendOpenAIUsage(b, u)
		return append(b, "}\n\n"...)
	}
	if withUsageNull {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}
