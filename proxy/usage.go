package proxy

import (
	"bytes"

	"github.com/valyala/fastjson"

	"github.com/tollgate/tollgate/pricing"
)

// maxReportedTokens rejects absurd usage figures from a provider.
const maxReportedTokens = 1 << 32

// usage is what a provider reported (or what was estimated).
type usage struct {
	pricing.Usage
	Reasoning int64
	seen      bool
}

// tokenField reads a non-negative integer field; absent or bad values are 0.
func tokenField(v *fastjson.Value, keys ...string) int64 {
	f := v.Get(keys...)
	if f == nil || f.Type() != fastjson.TypeNumber {
		return 0
	}
	n, err := f.Int64()
	if err != nil || n < 0 || n > maxReportedTokens {
		return 0
	}
	return n
}

// parseOpenAIUsage reads an OpenAI-style usage object (chat, completions,
// embeddings), with the cached-input variants of OpenAI, DeepSeek and Gemini's
// compatibility layer. Reasoning tokens are already inside completion_tokens.
func parseOpenAIUsage(u *fastjson.Value) (usage, bool) {
	if u == nil || u.Type() != fastjson.TypeObject {
		return usage{}, false
	}
	prompt := tokenField(u, "prompt_tokens")
	out := tokenField(u, "completion_tokens")
	cached := tokenField(u, "prompt_tokens_details", "cached_tokens")
	if hit := tokenField(u, "prompt_cache_hit_tokens"); hit > cached { // DeepSeek
		cached = hit
	}
	cached = min(cached, prompt)
	r := usage{seen: true}
	r.Input, r.CachedInput, r.Output = prompt-cached, cached, out
	r.Reasoning = tokenField(u, "completion_tokens_details", "reasoning_tokens")
	if u.Get("prompt_tokens") == nil && u.Get("completion_tokens") == nil {
		return usage{}, false
	}
	return r, true
}

// parseResponsesUsage reads an OpenAI Responses API usage object.
func parseResponsesUsage(u *fastjson.Value) (usage, bool) {
	if u == nil || u.Type() != fastjson.TypeObject || u.Get("input_tokens") == nil {
		return usage{}, false
	}
	in := tokenField(u, "input_tokens")
	cached := min(tokenField(u, "input_tokens_details", "cached_tokens"), in)
	r := usage{seen: true}
	r.Input, r.CachedInput, r.Output = in-cached, cached, tokenField(u, "output_tokens")
	r.Reasoning = tokenField(u, "output_tokens_details", "reasoning_tokens")
	return r, true
}

// parseAnthropicUsage reads an Anthropic Messages usage object: input_tokens
// excludes cache reads and writes; writes are priced as input.
func parseAnthropicUsage(u *fastjson.Value) (usage, bool) {
	if u == nil || u.Type() != fastjson.TypeObject {
		return usage{}, false
	}
	r := usage{seen: true}
	r.Input = tokenField(u, "input_tokens") + tokenField(u, "cache_creation_input_tokens")
	r.CachedInput = tokenField(u, "cache_read_input_tokens")
	r.Output = tokenField(u, "output_tokens")
	return r, true
}

// usageFromBody extracts usage from a complete (non-streamed) response body.
func usageFromBody(p *fastjson.Parser, d dialect, body []byte) (usage, *fastjson.Value) {
	v, err := p.ParseBytes(body)
	if err != nil {
		return usage{}, nil
	}
	var u usage
	switch d {
	case dialectResponses:
		u, _ = parseResponsesUsage(v.Get("usage"))
	case dialectMessages:
		u, _ = parseAnthropicUsage(v.Get("usage"))
	default:
		u, _ = parseOpenAIUsage(v.Get("usage"))
	}
	return u, v
}

// deliveredText sums the bytes of generated text in a complete response, for
// estimates when the provider reported no usage.
func deliveredText(v *fastjson.Value) int64 {
	if v == nil {
		return 0
	}
	var n int64
	for _, c := range v.GetArray("choices") {
		n += int64(len(c.GetStringBytes("message", "content"))) + int64(len(c.GetStringBytes("text")))
		if tc := c.Get("message", "tool_calls"); tc != nil {
			n += int64(len(tc.MarshalTo(nil)))
		}
	}
	for _, o := range v.GetArray("output") {
		for _, c := range o.GetArray("content") {
			n += int64(len(c.GetStringBytes("text")))
		}
	}
	for _, c := range v.GetArray("content") {
		n += int64(len(c.GetStringBytes("text")))
	}
	return n
}

// estimateTokens estimates the tokens of n bytes of text (≈4 bytes a token),
// rounding up.
func estimateTokens(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + 3) / 4
}

// hasUsageObject is a cheap pre-check before parsing a streamed chunk: true
// when the chunk holds a non-null "usage" object.
func hasUsageObject(data []byte) bool {
	for {
		i := bytes.Index(data, strUsageKey)
		if i < 0 {
			return false
		}
		data = data[i+len(strUsageKey):]
		j := 0
		for j < len(data) && (data[j] == ' ' || data[j] == ':' || data[j] == '\t') {
			j++
		}
		if j < len(data) && data[j] == '{' {
			return true
		}
	}
}

var strUsageKey = []byte(`"usage"`)

// contentBytes sums the lengths of text deltas in a streamed chunk without
// decoding it: "content":"…", "text":"…" and "delta":"…" string values.
func contentBytes(data []byte) int64 {
	var n int64
	for _, key := range textKeys {
		rest := data
		for {
			i := bytes.Index(rest, key)
			if i < 0 {
				break
			}
			rest = rest[i+len(key):]
			j := 0
			for j < len(rest) && (rest[j] == ' ' || rest[j] == ':') {
				j++
			}
			if j >= len(rest) || rest[j] != '"' {
				continue
			}
			j++
			start := j
			for j < len(rest) && rest[j] != '"' {
				if rest[j] == '\\' {
					j++
				}
				j++
			}
			n += int64(j - start)
			rest = rest[min(j, len(rest)):]
		}
	}
	return n
}

var textKeys = [][]byte{[]byte(`"content"`), []byte(`"text"`), []byte(`"delta"`), []byte(`"arguments"`)}
