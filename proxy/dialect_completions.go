package proxy

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// completionsDialect is OpenAI's legacy Completions (/v1/completions): a
// prompt or a batch of them, streamed like chat.
type completionsDialect struct{}

func (completionsDialect) inspect(_ *endpoint, r *request, s *scanner, body []byte) error {
	r.addUsage = r.stream && !r.wantUsage
	r.prompts = promptCount(s.top[namePrompt])
	return readChoices(r, s, body)
}

func (completionsDialect) requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64) {
	dst, direct = appendPrompt(dst, v.Get("prompt"))
	return dst, 0, direct
}

func (completionsDialect) usage(v *fastjson.Value) (usage, bool) {
	return parseOpenAIUsage(v.Get("usage"))
}

func (completionsDialect) stored(v *fastjson.Value) []byte { return storesNothing(v) }

func (completionsDialect) event(sb *streamBody, name, data []byte) bool {
	return openAIEvent(sb, name, data)
}

func (completionsDialect) streamCut(sb *streamBody) { sb.cut(openAICutEvent) }

func (completionsDialect) streamError(code, msg string) string { return openAIStreamError(code, msg) }

func (completionsDialect) usageObject(u *fastjson.Value) (usage, bool) { return parseOpenAIUsage(u) }

func (completionsDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) { bearer(h, k) }

func (completionsDialect) errorShape() modelShape { return shapeOpenAI }
