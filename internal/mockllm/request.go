package mockllm

import (
	"errors"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// kind identifies the endpoint (and so the API dialect) of a request.
type kind uint8

const (
	kindUnknown kind = iota
	kindChat
	kindCompletions
	kindEmbeddings
	kindResponses
	kindMessages
	kindModels
	kindModel
	kindCountTokens // Anthropic /v1/messages/count_tokens
)

func (k kind) isGet() bool { return k == kindModels || k == kindModel }

// anthropic reports whether k is answered in Anthropic's shapes.
func (k kind) anthropic() bool { return k == kindMessages || k == kindCountTokens }

// perMessageTokens is the prompt-token overhead of every message / input item.
const perMessageTokens = 3

var (
	//lint:ignore ST1005 OpenAI's own message, word for word
	errInvalidJSON = errors.New("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
	errNotObject   = errors.New("the request body must be a JSON object")
)

// request holds what the mock needs from a request body. Slices and
// gjson.Results point into the request body and are only valid during the
// handler.
type request struct {
	model        []byte // raw JSON string token including quotes
	stream       bool
	includeUsage bool
	maxTokens    int // smallest positive max_tokens / max_completion_tokens / max_output_tokens; 0 = none
	prompt       int // prompt tokens P
	input        gjson.Result
	base64       bool // embeddings encoding_format "base64"
}

var defaultModel = []byte(`"mock"`)

// parse scans body once (plus gjson's validation pass).
func (r *request) parse(k kind, body []byte) error {
	if !gjson.ValidBytes(body) {
		return errInvalidJSON
	}
	root := gjson.Parse(bytesToString(body))
	if !root.IsObject() {
		return errNotObject
	}
	r.model = defaultModel
	root.ForEach(func(key, v gjson.Result) bool {
		switch key.Str {
		case "model":
			if v.Type == gjson.String {
				r.model = stringToBytes(v.Raw)
			}
		case "stream":
			r.stream = v.Type == gjson.True
		case "stream_options":
			r.includeUsage = v.Get("include_usage").Type == gjson.True
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			if v.Type == gjson.Number {
				if m := int(v.Int()); m > 0 && (r.maxTokens == 0 || m < r.maxTokens) {
					r.maxTokens = m
				}
			}
		case "messages":
			if k == kindChat || k.anthropic() {
				r.prompt += countMessages(v)
			}
		case "system":
			if k.anthropic() {
				r.prompt += contentWords(v)
			}
		case "instructions":
			if k == kindResponses && v.Type == gjson.String {
				r.prompt += countWords(v.Str)
			}
		case "prompt":
			if k == kindCompletions {
				r.prompt += countPrompt(v)
			}
		case "input":
			switch k {
			case kindEmbeddings:
				r.input = v
				r.prompt += countPrompt(v)
			case kindResponses:
				if v.Type == gjson.String {
					r.prompt += countWords(v.Str)
				} else {
					r.prompt += countMessages(v)
				}
			}
		case "encoding_format":
			r.base64 = v.Type == gjson.String && v.Str == "base64"
		}
		return true
	})
	return nil
}

// countMessages counts an array of messages / input items:
// 3 + words of "content" each.
func countMessages(v gjson.Result) int {
	if !v.IsArray() {
		return 0
	}
	n := 0
	v.ForEach(func(_, m gjson.Result) bool {
		n += perMessageTokens
		if m.IsObject() {
			n += contentWords(m.Get("content"))
		}
		return true
	})
	return n
}

// contentWords counts a content value: a string, or an array of strings or
// parts/blocks whose "text" field is counted.
func contentWords(v gjson.Result) int {
	switch {
	case v.Type == gjson.String:
		return countWords(v.Str)
	case v.IsArray():
		n := 0
		v.ForEach(func(_, p gjson.Result) bool {
			switch {
			case p.Type == gjson.String:
				n += countWords(p.Str)
			case p.IsObject():
				if t := p.Get("text"); t.Type == gjson.String {
					n += countWords(t.Str)
				}
			}
			return true
		})
		return n
	}
	return 0
}

// countPrompt counts a completions prompt / embeddings input: a string, an
// array of strings, a token array, or an array of token arrays.
func countPrompt(v gjson.Result) int {
	switch {
	case v.Type == gjson.String:
		return countWords(v.Str)
	case v.IsArray():
		n := 0
		v.ForEach(func(_, e gjson.Result) bool {
			switch {
			case e.Type == gjson.String:
				n += countWords(e.Str)
			case e.Type == gjson.Number:
				n++
			case e.IsArray():
				e.ForEach(func(_, t gjson.Result) bool {
					if t.Type == gjson.Number {
						n++
					}
					return true
				})
			}
			return true
		})
		return n
	}
	return 0
}

var asciiSpace = [256]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// countWords counts like len(strings.Fields(s)) without allocating.
func countWords(s string) int {
	n := 0
	inWord := false
	for i := 0; i < len(s); {
		c := s[i]
		var space bool
		if c < utf8.RuneSelf {
			space = asciiSpace[c]
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			space = unicode.IsSpace(r)
			i += size
		}
		if space {
			inWord = false
		} else if !inWord {
			inWord = true
			n++
		}
	}
	return n
}

func bytesToString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func stringToBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
