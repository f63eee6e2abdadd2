package proxy

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// moderationsDialect is OpenAI's Moderations (/v1/moderations): input only
// (text, or text and image parts), never streamed; the answer reports no
// usage, so the input is estimated. The endpoint's default model stands in
// when the request names none.
type moderationsDialect struct{}

func (moderationsDialect) inspect(_ *endpoint, r *request, s *scanner, _ []byte) error {
	if r.stream {
		return invalid("stream", "Moderations cannot be streamed.")
	}
	if !s.top[nameInput].present() {
		return invalid("input", "Missing required parameter: 'input'.")
	}
	r.prompts = promptCount(s.top[nameInput])
	return nil
}

func (moderationsDialect) requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64) {
	in := v.Get("input")
	if a := in.GetArray(); len(a) > 0 && a[0].Type() == fastjson.TypeObject {
		return appendRequestContent(dst, in), 0, 0 // text and image parts
	}
	dst, direct = appendPrompt(dst, in)
	return dst, 0, direct
}

func (moderationsDialect) usage(v *fastjson.Value) (usage, bool) {
	return parseOpenAIUsage(v.Get("usage")) // none from OpenAI; a server that reports it is believed
}

func (moderationsDialect) stored(v *fastjson.Value) []byte { return storesNothing(v) }

func (moderationsDialect) event(sb *streamBody, name, data []byte) bool {
	return noStream(sb, name, data)
}

func (moderationsDialect) streamCut(sb *streamBody) { sb.cut(openAICutEvent) }

func (moderationsDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) { bearer(h, k) }

func (moderationsDialect) errorShape() modelShape { return shapeOpenAI }
