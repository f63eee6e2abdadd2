package proxy

import (
	"bytes"
	"math"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/valyala/fastjson"
	"github.com/valyala/fastjson/fastfloat"

	"github.com/tollgate/tollgate/pricing"
)

// maxReportedTokens bounds each usage figure a provider reports: a larger
// one is clamped to it (the settle caps the charge at the hold), never read
// as zero, so that a garbled count cannot make a call free.
const maxReportedTokens = 1 << 32

// usage is what a provider reported (or what was estimated).
type usage struct {
	pricing.Usage
	Reasoning int64
	seen      bool
	// hasInput: the provider stated the input count (Anthropic's usage may
	// leave it out: message_delta does); OpenAI shapes require it.
	hasInput bool
}

// tokenField reads a token count (see tokenCount); anything that is not one
// reads 0.
func tokenField(v *fastjson.Value, keys ...string) int64 {
	n, _ := tokenCount(v.Get(keys...))
	return n
}

// tokenCount reads a token count: a non-negative integer, or a number or a
// numeric string that stands for one (12.0, 1e3, "12"; a fraction rounds
// up), clamped at maxReportedTokens. ok is false for anything else —
// absent, null, negative, text — so that a usage object whose counts are
// garbled is not taken for a free call (see validCounts).
func tokenCount(f *fastjson.Value) (n int64, ok bool) {
	if f == nil {
		return 0, false
	}
	var x float64
	switch f.Type() {
	case fastjson.TypeNumber:
		if n, err := f.Int64(); err == nil {
			return clampCount(n)
		}
		x = f.GetFloat64()
	case fastjson.TypeString:
		var err error
		if x, err = fastfloat.Parse(string(f.GetStringBytes())); err != nil {
			return 0, false
		}
	default:
		return 0, false
	}
	switch {
	case math.IsNaN(x) || x < 0:
		return 0, false
	case x >= maxReportedTokens:
		return maxReportedTokens, true
	}
	return int64(math.Ceil(x)), true
}

func clampCount(n int64) (int64, bool) {
	if n < 0 {
		return 0, false
	}
	return min(n, maxReportedTokens), true
}

// validCounts says whether a usage object states the call's counts: each
// required field is a count, each optional one is a count or absent (or
// null, when nullOK: gateways in front of Anthropic, such as Bedrock, send
// null for the cache counts they do not have), and at least one is a count.
// A value that is present and not a count (negative, text) makes the whole
// object unreadable. A usage object that fails is estimated as if none had
// come, so that {"prompt_tokens":null} is never charged 0.
func validCounts(u *fastjson.Value, required, optional []string, nullOK bool) bool {
	counts := 0
	for _, k := range required {
		if _, ok := tokenCount(u.Get(k)); !ok {
			return false
		}
		counts++
	}
	for _, k := range optional {
		f := u.Get(k)
		if f == nil || (nullOK && f.Type() == fastjson.TypeNull) {
			continue
		}
		if _, ok := tokenCount(f); !ok {
			return false
		}
		counts++
	}
	return counts > 0
}

// The fields validCounts checks, per shape.
var (
	openAIRequired    = []string{"prompt_tokens"}
	openAIOptional    = []string{"completion_tokens"} // embeddings have none
	responsesRequired = []string{"input_tokens", "output_tokens"}
	anthropicOptional = []string{"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"}
)

// parseOpenAIUsage reads an OpenAI-style usage object (chat, completions,
// embeddings), with the cached-input variants of OpenAI, DeepSeek and Gemini's
// compatibility layer. Reasoning tokens are output: OpenAI and DeepSeek count
// them inside completion_tokens already; see reconcileOutput for providers
// that report them beside it. Web searches a chat call's web_search_options
// ran are charged when the provider reports them, in the shape OpenAI-compatible
// layers carry over from Anthropic's (server_tool_use.web_search_requests).
func parseOpenAIUsage(u *fastjson.Value) (usage, bool) {
	if u == nil || u.Type() != fastjson.TypeObject {
		return usage{}, false
	}
	if !validCounts(u, openAIRequired, openAIOptional, false) {
		return usage{}, false
	}
	prompt := tokenField(u, "prompt_tokens")
	cached := tokenField(u, "prompt_tokens_details", "cached_tokens")
	if hit := tokenField(u, "prompt_cache_hit_tokens"); hit > cached { // DeepSeek
		cached = hit
	}
	cached = min(cached, prompt)
	r := usage{seen: true, hasInput: true}
	r.Input, r.CachedInput = prompt-cached, cached
	r.Output, r.Reasoning = reconcileOutput(prompt, tokenField(u, "completion_tokens"),
		tokenField(u, "completion_tokens_details", "reasoning_tokens"), tokenField(u, "total_tokens"))
	r.WebSearch = tokenField(u, "server_tool_use", "web_search_requests")
	return r, true
}

// reconcileOutput returns the output tokens to bill and the reasoning tokens
// among them, from a provider's input, output, reasoning and total counts.
//
// Reasoning is output. OpenAI and DeepSeek include reasoning_tokens in the
// output count; some compatibility layers report thinking beside it instead:
// Gemini's OpenAI-compatible endpoint counts thought tokens only in
// total_tokens (so total > prompt + completion), and others report a
// reasoning count larger than the output count. The rule, which bills
// exactly what the provider bills: the output is the largest of the reported
// output, output + reasoning when reasoning exceeds output (it cannot be
// inside it), and total − input (whatever the total counts beyond the input
// is generated); reasoning is then at least what the total adds beyond the
// reported output, and never more than the output.
func reconcileOutput(in, out, reasoning, total int64) (output, reasoningOut int64) {
	reported := out
	if reasoning > out {
		out += reasoning
	}
	if total > in && total-in > out {
		out = total - in
		reasoning = max(reasoning, out-reported)
	}
	return out, min(reasoning, out)
}

// parseResponse reads a whole Responses API response object: its usage, and
// the web searches it ran — OpenAI bills each web_search_call output item,
// and reports them there rather than in usage.
func parseResponse(resp *fastjson.Value) (usage, bool) {
	u, ok := parseResponsesUsage(resp.Get("usage"))
	if ok {
		u.WebSearch = countItems(resp.Get("output"), "web_search_call")
	}
	return u, ok
}

// countItems counts the objects of an array whose "type" is typ.
func countItems(a *fastjson.Value, typ string) int64 {
	if a == nil || a.Type() != fastjson.TypeArray {
		return 0
	}
	var n int64
	for _, it := range a.GetArray() {
		if string(it.GetStringBytes("type")) == typ {
			n++
		}
	}
	return n
}

// parseResponsesUsage reads an OpenAI Responses API usage object.
func parseResponsesUsage(u *fastjson.Value) (usage, bool) {
	if u == nil || u.Type() != fastjson.TypeObject || !validCounts(u, responsesRequired, nil, false) {
		return usage{}, false
	}
	in := tokenField(u, "input_tokens")
	cached := min(tokenField(u, "input_tokens_details", "cached_tokens"), in)
	r := usage{seen: true, hasInput: true}
	r.Input, r.CachedInput = in-cached, cached
	r.Output, r.Reasoning = reconcileOutput(in, tokenField(u, "output_tokens"),
		tokenField(u, "output_tokens_details", "reasoning_tokens"), tokenField(u, "total_tokens"))
	return r, true
}

// parseAnthropicUsage reads an Anthropic Messages usage object: input_tokens
// excludes cache reads and writes; reads (cache_read_input_tokens) are priced
// at the cached rate, writes (cache_creation_input_tokens) at the cache-write
// rates, split by cache_creation.ephemeral_5m_input_tokens and
// ephemeral_1h_input_tokens when present (see cacheWrites). output_tokens
// includes thinking; output_tokens_details.thinking_tokens, when present, says
// how much of it was reasoning.
func parseAnthropicUsage(u *fastjson.Value) (usage, bool) {
	if u == nil || u.Type() != fastjson.TypeObject || !validCounts(u, nil, anthropicOptional, true) {
		return usage{}, false
	}
	r := usage{seen: true}
	r.Input, r.hasInput = tokenCount(u.Get("input_tokens"))
	r.CacheWrite, r.CacheWrite1h = cacheWrites(u)
	r.CachedInput = tokenField(u, "cache_read_input_tokens")
	r.Output = tokenField(u, "output_tokens")
	r.Reasoning = min(tokenField(u, "output_tokens_details", "thinking_tokens"), r.Output)
	r.WebSearch = tokenField(u, "server_tool_use", "web_search_requests")
	return r, true
}

// cacheWrites splits an Anthropic usage object's cache writes into 5-minute
// and 1-hour ones. cache_creation_input_tokens is their total; the
// cache_creation object, when present, says how many were written for an
// hour. Each token is counted once: the 1-hour ones are those the split
// names, the rest of the total is 5-minute. Should the split name more
// 5-minute tokens than the total leaves (the figures disagree), the split is
// billed: never less than either reading.
func cacheWrites(u *fastjson.Value) (w5m, w1h int64) {
	total := tokenField(u, "cache_creation_input_tokens")
	cc := u.Get("cache_creation")
	if cc == nil || cc.Type() != fastjson.TypeObject {
		return total, 0
	}
	w1h = tokenField(cc, "ephemeral_1h_input_tokens")
	return max(total-w1h, tokenField(cc, "ephemeral_5m_input_tokens")), w1h
}

// usageFromBody extracts usage from a complete (non-streamed) response body.
func usageFromBody(p *fastjson.Parser, d dialect, body []byte) (usage, *fastjson.Value) {
	v, err := p.ParseBytes(body)
	if err != nil {
		return usage{}, nil
	}
	u, _ := d.usage(v) // dialect_*.go
	return u, v
}

// appendDelivered appends the generated text of a complete response in any
// dialect's shape (chat and completions choices, Responses output items,
// Messages content blocks), unescaped: what a tokenizer estimate counts when
// the provider reported no usage.
func appendDelivered(dst []byte, v *fastjson.Value) []byte {
	if v == nil {
		return dst
	}
	for _, c := range v.GetArray("choices") {
		m := c.Get("message")
		dst = appendContent(dst, m.Get("content"))
		for _, k := range [...]string{"reasoning_content", "reasoning", "refusal"} {
			dst = append(dst, m.GetStringBytes(k)...)
		}
		for _, tc := range m.GetArray("tool_calls") {
			dst = append(dst, tc.GetStringBytes("function", "name")...)
			dst = append(dst, tc.GetStringBytes("function", "arguments")...)
		}
		dst = append(dst, m.GetStringBytes("function_call", "arguments")...)
		dst = append(dst, c.GetStringBytes("text")...)
	}
	for _, o := range v.GetArray("output") {
		dst = appendContent(dst, o.Get("content"))
		dst = appendContent(dst, o.Get("summary"))
		dst = append(dst, o.GetStringBytes("arguments")...)
	}
	dst = appendContent(dst, v.Get("content"))
	return dst
}

// appendContent appends a content value: a string, or an array of parts or
// blocks whose text, thinking, refusal or tool input is the generated text.
func appendContent(dst []byte, c *fastjson.Value) []byte {
	if c == nil {
		return dst
	}
	switch c.Type() {
	case fastjson.TypeString:
		return append(dst, c.GetStringBytes()...)
	case fastjson.TypeArray:
		for _, p := range c.GetArray() {
			if p.Type() == fastjson.TypeString {
				dst = append(dst, p.GetStringBytes()...)
				continue
			}
			for _, k := range [...]string{"text", "thinking", "refusal"} {
				dst = append(dst, p.GetStringBytes(k)...)
			}
			if in := p.Get("input"); in != nil && in.Type() == fastjson.TypeObject {
				dst = in.MarshalTo(dst) // Anthropic tool_use
			}
		}
	}
	return dst
}

// estimateTokens estimates the tokens of n bytes of text (≈4 bytes a token),
// rounding up: the fallback when the tokenizer cannot be used.
func estimateTokens(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + 3) / 4
}

// hasObjectKey is a cheap pre-check before parsing a streamed chunk: true
// when the chunk holds key (quoted) with an object value, as "usage":{…} or
// "error":{…}. A string value cannot fool it: quotes inside strings are
// escaped.
func hasObjectKey(data, key []byte) bool {
	for {
		i := bytes.Index(data, key)
		if i < 0 {
			return false
		}
		data = data[i+len(key):]
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

// isTextKey tells the keys whose string values are generated text in a
// streamed chunk: chat and completions deltas (content, reasoning_content,
// reasoning, refusal, tool call arguments, text), Responses deltas (delta)
// and Anthropic block deltas (text, thinking, partial_json).
func isTextKey(k []byte) bool {
	switch string(k) {
	case "content", "text", "delta", "arguments", "reasoning_content", "reasoning",
		"refusal", "thinking", "partial_json":
		return true
	}
	return false
}

// scanText finds the string values of text keys (isTextKey) in a streamed
// chunk without decoding it, with one pass of a minimal JSON tokenizer that
// tells keys from values. It returns the total length of those values as
// they appear on the wire (JSON-escaped) and appends them, escaped, to dst
// while dst stays under limit bytes. Malformed input ends the scan; it never
// panics.
func scanText(dst, data []byte, limit int) ([]byte, int64) {
	var n int64
	for i := 0; i < len(data); {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			break
		}
		start := i + q + 1
		end := stringEnd(data, start)
		if end < 0 {
			break
		}
		k := skipSpace(data, end+1)
		if k >= len(data) || data[k] != ':' {
			i = end + 1 // a value: skipped whole, escapes included
			continue
		}
		v := skipSpace(data, k+1)
		if v >= len(data) || data[v] != '"' || !isTextKey(data[start:end]) {
			i = v
			continue
		}
		vend := stringEnd(data, v+1)
		if vend < 0 {
			break
		}
		val := data[v+1 : vend]
		n += int64(len(val))
		if room := limit - len(dst); room > 0 {
			dst = append(dst, val[:min(len(val), room)]...)
		}
		i = vend + 1
	}
	return dst, n
}

// stringEnd returns the index of the quote closing the JSON string whose
// contents start at i, or -1 when it is not closed.
func stringEnd(b []byte, i int) int {
	for i < len(b) {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return -1
		}
		q += i
		bs := 0 // backslashes right before the quote: an odd count escapes it
		for j := q - 1; j >= i && b[j] == '\\'; j-- {
			bs++
		}
		if bs%2 == 0 {
			return q
		}
		i = q + 1
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// unescapeJSON appends the JSON string contents src, unescaped, to dst.
// It is lenient: a truncated or invalid escape is dropped, never an error.
func unescapeJSON(dst, src []byte) []byte {
	for len(src) > 0 {
		i := bytes.IndexByte(src, '\\')
		if i < 0 {
			return append(dst, src...)
		}
		dst = append(dst, src[:i]...)
		src = src[i:]
		if len(src) < 2 {
			return dst
		}
		switch c := src[1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		case 'r':
			dst = append(dst, '\r')
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'u':
			r, ok := hex4(src[2:])
			if !ok {
				return dst // truncated: the sample ends here
			}
			src = src[6:]
			if utf16.IsSurrogate(r) {
				if len(src) >= 6 && src[0] == '\\' && src[1] == 'u' {
					if r2, ok := hex4(src[2:]); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							src = src[6:]
							r = d
						}
					}
				}
				if utf16.IsSurrogate(r) {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		}
		src = src[2:]
	}
	return dst
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
