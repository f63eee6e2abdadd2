package proxy

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// embeddingsDialect is OpenAI's Embeddings (/v1/embeddings): input tokens
// only, an input or a batch of them, never streamed.
type embeddingsDialect struct{}

func (embeddingsDialect) inspect(_ *endpoint, r *request, s *scanner, _ []byte) error {
	if r.stream {
		return invalid("stream", "Embeddings cannot be streamed.")
	}
	r.prompts = promptCount(s.top[nameInput])
	return nil
}

func (embeddingsDialect) requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64) {
	dst, direct = appendPrompt(dst, v.Get("input"))
	return dst, 0, direct
}

func (embeddingsDialect) usage(v *fastjson.Value) (usage, bool) {
	return parseOpenAIUsage(v.Get("usage"))
}

func (embeddingsDialect) stored(v *fastjson.Value) []byte { return storesNothing(v) }

func (embeddingsDialect) event(sb *streamBody, name, data []byte) bool {
	return noStream(sb, name, data)
}

func (embeddingsDialect) streamCut(sb *streamBody) { sb.cut(openAICutEvent) }

func (embeddingsDialect) streamError(code, msg string) string { return openAIStreamError(code, msg) }

func (embeddingsDialect) usageObject(u *fastjson.Value) (usage, bool) { return parseOpenAIUsage(u) }

func (embeddingsDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) { bearer(h, k) }

func (embeddingsDialect) errorShape() modelShape { return shapeOpenAI }
