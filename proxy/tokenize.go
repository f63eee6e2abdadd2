package proxy

import (
	"math/rand/v2"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer/codec"
	"github.com/valyala/fastjson"

	"github.com/tollgate/tollgate/pricing"
)

// Tokenizer estimates, for calls whose provider reported no usage.
//
// They run only on that path (never when usage is present) and use the
// offline BPE vocabularies of github.com/tiktoken-go/tokenizer, built once on
// first use (a vocabulary takes tens of milliseconds and some megabytes to
// build). OpenAI's current families (gpt-4o, gpt-4.1, gpt-5, o-series) use
// o200k_base; every other model, older OpenAI and other providers' alike, is
// counted with cl100k_base: no other provider's tokenizer ships offline, and
// cl100k's smaller vocabulary counts a little more tokens than o200k's, which
// is closer to what Claude, Gemini and DeepSeek report for the same text.
//
// Exact counting is bounded: past maxExactBytes of text, the count of the
// first maxExactBytes is extrapolated by bytes, so that no response, however
// long, costs more than a few milliseconds of CPU to estimate.

// encoding names a BPE vocabulary.
type encoding uint8

const (
	encCL100K encoding = iota
	encO200K
)

const (
	maxExactBytes = 32 << 10 // text tokenized exactly (≈2.5 ms); past it, as much is sampled
	maxTextSample = 32 << 10 // streamed text kept for an estimate

	// Chat framing, as OpenAI documents for counting a conversation: each
	// message costs 3 tokens beside its content (its role among them; one
	// more is the newline that separates messages in the counted text), and
	// the reply is primed with 3 more.
	tokensPerMessage = 3
	tokensReplyPrime = 3
)

type lazyCodec struct {
	once sync.Once
	c    *codec.Codec
	new  func() *codec.Codec
}

func (l *lazyCodec) get() *codec.Codec {
	l.once.Do(func() {
		c := l.new()
		c.SetErrorMode(codec.ErrorModeReplace) // before sharing: not safe to change later
		l.c = c
	})
	return l.c
}

var codecs = [...]lazyCodec{
	encCL100K: {new: codec.NewCl100kBase},
	encO200K:  {new: codec.NewO200kBase},
}

// o200kPrefixes are the model families tokenized with o200k_base.
var o200kPrefixes = []string{"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss"}

// encodingFor picks the vocabulary for a model from its public name and its
// deployments' provider names ("openai/gpt-4o" style prefixes ignored).
func encodingFor(m *pricing.Model) encoding {
	if m == nil {
		return encCL100K
	}
	if isO200K(m.ID) {
		return encO200K
	}
	for _, d := range m.Deployments {
		if isO200K(d.Model) {
			return encO200K
		}
	}
	return encCL100K
}

func isO200K(name string) bool {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.ToLower(name)
	for _, p := range o200kPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// countTokens counts the tokens of text. Up to maxExactBytes it counts them
// all. Past that it samples: the text is cut in sampleStrata equal parts, a
// window of maxExactBytes/sampleStrata bytes is tokenized at a random place
// in each, and each part counts its window's tokens per byte (rounded up).
// Stratified random sampling is unbiased whatever the text, where scaling
// the head alone was not: a request that began with 32 KiB of whitespace
// had a megabyte of dense text after it counted at 1 %. It never fails:
// should the tokenizer panic, the estimate falls back to 4 bytes a token.
func countTokens(enc encoding, text []byte) (n int64) {
	if len(text) == 0 {
		return 0
	}
	defer func() {
		if recover() != nil {
			n = estimateTokens(int64(len(text)))
		}
	}()
	cd := codecs[enc].get()
	if len(text) <= maxExactBytes {
		c, err := cd.Count(string(text))
		if err != nil {
			return estimateTokens(int64(len(text)))
		}
		return int64(c)
	}
	part := len(text) / sampleStrata
	for i := range sampleStrata {
		lo, hi := i*part, (i+1)*part
		if i == sampleStrata-1 {
			hi = len(text)
		}
		// The window starts anywhere in the part and wraps around its end,
		// so that every byte of the part is as likely to be counted: a
		// window kept inside the part saw its edges less than its middle.
		const size = maxExactBytes / sampleStrata
		at := lo + rand.IntN(hi-lo)
		head := sampleWindow(text, at, min(size, hi-at))
		tail := sampleWindow(text, lo, size-(hi-at)) // empty unless it wrapped
		c1, err1 := cd.Count(string(head))
		c2, err2 := cd.Count(string(tail))
		w := len(head) + len(tail)
		if err1 != nil || err2 != nil || w == 0 {
			return estimateTokens(int64(len(text)))
		}
		n += (int64(c1+c2)*int64(hi-lo) + int64(w) - 1) / int64(w)
	}
	return n
}

// sampleStrata is how many parts countTokens samples a long text in.
const sampleStrata = 8

// sampleWindow is text[at:at+size], its ends moved onto rune starts (never
// splitting a rune; invalid UTF-8 is taken as it is).
func sampleWindow(text []byte, at, size int) []byte {
	if size <= 0 {
		return nil
	}
	end := min(at+size, len(text))
	for s := at; s < end && s < at+utf8.UTFMax; s++ {
		if utf8.RuneStart(text[s]) {
			at = s
			break
		}
	}
	for e := end; e > at && e > end-utf8.UTFMax; e-- {
		if e == len(text) || utf8.RuneStart(text[e]) {
			end = e
			break
		}
	}
	return text[at:end]
}

// requestText appends the text of a request that the provider tokenizes —
// messages, system prompt, instructions, prompt or input, tool definitions
// and tool calls — and returns it with the number of chat messages (each
// costs framing tokens) and the tokens given directly as token arrays.
// It never counts the JSON framing of the body itself.
func requestText(dst []byte, d dialect, v *fastjson.Value) (text []byte, messages, direct int64) {
	if v == nil {
		return dst, 0, 0
	}
	return d.requestText(dst, v) // dialect_*.go
}

// appendRequestContent appends a message's content: a string, or parts and
// blocks (text, input_text, output_text, thinking, tool_use input,
// tool_result content). Images and files are not text: media.go counts them.
func appendRequestContent(dst []byte, c *fastjson.Value) []byte {
	if c == nil {
		return dst
	}
	switch c.Type() {
	case fastjson.TypeString:
		return append(dst, c.GetStringBytes()...)
	case fastjson.TypeArray:
		for _, p := range c.GetArray() {
			switch p.Type() {
			case fastjson.TypeString:
				dst = append(dst, p.GetStringBytes()...)
			case fastjson.TypeObject:
				dst = append(dst, p.GetStringBytes("text")...)
				dst = append(dst, p.GetStringBytes("thinking")...)
				if in := p.Get("input"); in != nil && in.Type() == fastjson.TypeObject {
					dst = in.MarshalTo(dst)
				}
				dst = appendRequestContent(dst, p.Get("content")) // tool_result
			}
		}
	}
	return dst
}

// appendPrompt appends a completions prompt or an embeddings input: a
// string, strings, or token arrays (counted directly).
func appendPrompt(dst []byte, p *fastjson.Value) ([]byte, int64) {
	if p == nil {
		return dst, 0
	}
	var direct int64
	switch p.Type() {
	case fastjson.TypeString:
		return append(dst, p.GetStringBytes()...), 0
	case fastjson.TypeArray:
		for _, e := range p.GetArray() {
			switch e.Type() {
			case fastjson.TypeString:
				dst = append(dst, e.GetStringBytes()...)
			case fastjson.TypeNumber:
				direct++
			case fastjson.TypeArray:
				direct += int64(len(e.GetArray()))
			}
		}
	}
	return dst, direct
}

func appendJSON(dst []byte, v *fastjson.Value) []byte {
	if v == nil || v.Type() == fastjson.TypeNull {
		return dst
	}
	return v.MarshalTo(dst)
}

// estimator is what an estimate of a request's input needs beside its body.
type estimator struct {
	enc encoding
	// anthropic: the call is served by Anthropic (its API, or a provider of
	// its kind), whose image formula applies alone (media.go).
	anthropic bool
	// images is how the model counts an image at OpenAI (media.go).
	images imageRule
	// window is the input the hold assumed for input the body does not
	// carry: the model's context window for each prompt (inputTokens).
	window int64
}

// estimator returns the call's estimator when served by up (nil: unknown).
func (c *call) estimator(up *upstream) estimator {
	e := estimator{enc: encodingFor(c.model), anthropic: c.ep.dialect == dialectMessages || (up != nil && up.kind == "anthropic")}
	if c.model != nil {
		e.window, _ = mulHold(c.model.ContextWindow, c.batch())
		// The dearest rule among the model's names (its deployments may
		// name a model of another family).
		e.images = imageRuleFor(c.model.ID)
		for _, d := range c.model.Deployments {
			if r := imageRuleFor(d.Model); r.maxTokens() > e.images.maxTokens() {
				e.images = r
			}
		}
	}
	return e
}

// requestTokens estimates the input tokens of a request body: its text,
// tokenized, plus chat framing, token arrays, and its images and documents
// (media.go). A file or document the body does not carry makes it the
// window the hold assumed; otherwise images and documents never take it
// past that window (the provider reads no more). A body that is not JSON
// (it passed inspection, so it is) counts 4 bytes a token.
func requestTokens(e estimator, d dialect, body []byte) int64 {
	n, _ := requestInput(e, d, body)
	return n
}

// requestInput is requestTokens, and whether the estimate is the window
// because the body names input it does not carry (a file or document by id
// or URL): an estimate that is no measure of the call.
func requestInput(e estimator, d dialect, body []byte) (n int64, whole bool) {
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil {
		return estimateTokens(int64(len(body))), false
	}
	bp := getBuf()
	defer putBuf(bp)
	text, messages, direct := requestText((*bp)[:0], d, v)
	m := mediaEstimate{anthropic: e.anthropic, openAI: e.images}
	text = m.walk(text, v)
	*bp = text
	n = countTokens(e.enc, text) + direct + m.tokens
	if messages > 0 {
		n += messages*tokensPerMessage + tokensReplyPrime
	}
	switch {
	case m.unknown:
		n = max(n, e.window)
	case m.tokens > 0 && e.window > 0:
		n = min(n, e.window)
	}
	return n, m.unknown
}

// estimateBody prices a complete (non-streamed) response whose provider
// reported no usage: the request's text for input, the delivered text for
// output. v is the parsed response, or nil when it was not JSON; then the
// raw body counts as delivered text. up is the provider that answered.
func (c *call) estimateBody(up *upstream, v *fastjson.Value, raw []byte) usage {
	e := c.estimator(up)
	enc := e.enc
	var u usage
	u.Input = requestTokens(e, c.ep.dialect, c.body) + c.prevContext
	if c.ep.maxField == "" {
		return u // embeddings: no output
	}
	if v == nil {
		u.Output = countTokens(enc, raw)
		return u
	}
	bp := getBuf()
	defer putBuf(bp)
	*bp = appendDelivered((*bp)[:0], v)
	u.Output = countTokens(enc, *bp)
	return u
}

// streamedTokens estimates the tokens of streamed text from its sample (the
// first maxTextSample bytes, JSON-escaped) and its full escaped length.
func streamedTokens(enc encoding, sample []byte, total int64) int64 {
	if total <= 0 {
		return 0
	}
	bp := getBuf()
	defer putBuf(bp)
	*bp = unescapeJSON((*bp)[:0], sample)
	n := countTokens(enc, *bp)
	if int64(len(sample)) < total && len(sample) > 0 {
		n = (n*total + int64(len(sample)) - 1) / int64(len(sample))
	} else if len(sample) == 0 {
		n = estimateTokens(total)
	}
	return n
}
