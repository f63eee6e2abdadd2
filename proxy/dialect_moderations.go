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
	return appendModerationInput(dst, v.Get("input")), 0, 0
}

// appendModerationInput appends what a moderation's input holds to be
// counted: strings, and the text of text parts (image parts are counted by
// media.go). Whatever else a request puts there (an object input, nested
// arrays, other parts) is counted as its whole JSON, so that no shape of
// input is estimated below its size.
func appendModerationInput(dst []byte, in *fastjson.Value) []byte {
	if in == nil {
		return dst
	}
	switch in.Type() {
	case fastjson.TypeString:
		return append(dst, in.GetStringBytes()...)
	case fastjson.TypeArray:
		for _, e := range in.GetArray() {
			switch {
			case e.Type() == fastjson.TypeString:
				dst = append(dst, e.GetStringBytes()...)
			case e.Type() == fastjson.TypeObject && string(e.GetStringBytes("type")) == "text":
				dst = append(dst, e.GetStringBytes("text")...)
			case e.Type() == fastjson.TypeObject && string(e.GetStringBytes("type")) == "image_url":
				// counted by media.go
			default:
				dst = e.MarshalTo(dst)
			}
		}
		return dst
	}
	return in.MarshalTo(dst)
}

func (moderationsDialect) usage(v *fastjson.Value) (usage, bool) {
	return parseOpenAIUsage(v.Get("usage")) // none from OpenAI; a server that reports it is believed
}

func (moderationsDialect) stored(v *fastjson.Value) []byte { return storesNothing(v) }

func (moderationsDialect) event(sb *streamBody, name, data []byte) bool {
	return noStream(sb, name, data)
}

func (moderationsDialect) streamCut(sb *streamBody) { sb.cut(openAICutEvent) }

func (moderationsDialect) streamError(code, msg string) string { return openAIStreamError(code, msg) }

func (moderationsDialect) usageObject(u *fastjson.Value) (usage, bool) { return parseOpenAIUsage(u) }

func (moderationsDialect) setKey(h *fasthttp.RequestHeader, k *upstreamKey) { bearer(h, k) }

func (moderationsDialect) errorShape() modelShape { return shapeOpenAI }
