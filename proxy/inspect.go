package proxy

import (
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// defaultModerationModel is the model a moderations request without one
// gets, as OpenAI's API does.
const defaultModerationModel = "omni-moderation-latest"

// endpoint describes one metered route.
type endpoint struct {
	name     string  // for records: "chat.completions"
	path     string  // upstream path below the provider's base URL
	dialect  dialect // dialect.go: one type per API
	maxField string  // the request's output-limit field ("" = no output)
	altMax   string  // an alternative spelling the client may use
	native   bool    // served only by providers of the matching kind
	// zeroOut: an output limit of 0 is allowed (Anthropic's cache
	// pre-warm): held and charged for input only.
	zeroOut bool
	// defaultModel stands in for a request that names none ("": required).
	defaultModel string
}

var (
	epChat        = &endpoint{name: "chat.completions", path: "/chat/completions", dialect: dialectChat, maxField: "max_tokens", altMax: "max_completion_tokens"}
	epCompletions = &endpoint{name: "completions", path: "/completions", dialect: dialectCompletions, maxField: "max_tokens"}
	epEmbeddings  = &endpoint{name: "embeddings", path: "/embeddings", dialect: dialectEmbeddings}
	epResponses   = &endpoint{name: "responses", path: "/responses", dialect: dialectResponses, maxField: "max_output_tokens"}
	epMessages    = &endpoint{name: "messages", path: "/messages", dialect: dialectMessages, maxField: "max_tokens", native: true, zeroOut: true}
	epModerations = &endpoint{name: "moderations", path: "/moderations", dialect: dialectModerations, defaultModel: defaultModerationModel}
	// epCountTokens is Anthropic's token counter: forwarded like
	// /v1/messages, but unmetered and without an output limit (counttokens.go).
	epCountTokens = &endpoint{name: "messages.count_tokens", path: "/messages/count_tokens", dialect: dialectMessages, native: true}

	// endpoints lists every forwarded route (upstream URIs are parsed once for each).
	endpoints = [...]*endpoint{epChat, epCompletions, epEmbeddings, epResponses, epMessages, epCountTokens, epModerations}
)

// request is what inspection learned of a call's body. Slices point into the
// body, valid while the handler runs.
type request struct {
	model     []byte
	noModel   bool // a moderations request without one: rewrite adds it
	stream    bool
	wantUsage bool  // the client asked for the usage chunk (chat/completions streams)
	addUsage  bool  // rewrite asks the provider for it (the dialect's streams end with usage only when asked)
	maxOut    int64 // the client's output limit; 0 when absent
	// noOutput: the client asked for no output at all (Anthropic's
	// max_tokens: 0, a prompt-cache pre-warm): held and charged for input.
	noOutput bool
	maxField string // which field carried it
	choices  int64  // completions generated per prompt ("n", "best_of"); the output limit applies to each
	// prompts is the batch size: a completions "prompt" or embeddings "input"
	// given as a list of prompts is that many calls in one, each with its own
	// window and its own choices. 1 otherwise.
	prompts int64
	// remote says why the provider will read input whose size the body does
	// not bound (a stored conversation, images or files, provider-side
	// tools); "" when it will not. See remote.go.
	remote string
	// unsized: part of that input is read by the provider from where no
	// estimate can count it — a stored item, conversation or prompt, cached
	// content, what a provider-side tool fetches — so an estimate of the
	// call counts only the body's text. (Files and documents by id or URL
	// are known to the estimate itself: it charges the window for them,
	// inputEstimate.whole.) A stream the client leaves is then read to its
	// usage rather than estimated (orphan.go).
	unsized bool
	// tools: the provider may run a tool of its own (web search and the
	// like) that it bills per use; the hold covers heldToolUses of them.
	tools bool
	// searchPerCall: a chat call's web_search_options. OpenAI's chat search
	// models bill a search per call and their usage does not report it: the
	// call is charged one search when the provider reports none.
	searchPerCall bool
	// prevResponse is a Responses call's previous_response_id (nil when
	// absent or null): the stored response it continues, which must be the
	// account's own (responses.go).
	prevResponse []byte
	// limitField is the chat field to use when the gateway sets an output
	// limit the client did not (the model's catalog setting; "" = max_tokens).
	limitField string
	// at is where the values rewrite may set are in the body.
	at splicePoints
}

// splicePoints are the body's values that rewrite may replace, and where
// it may add members.
type splicePoints struct {
	model                                     span
	options, usage                            jsonValue // stream_options, stream_options.include_usage
	maxTokens, maxCompletionTokens, maxOutTok jsonValue
	end                                       int // the root's closing brace
}

// limit is where an output-limit field's value is (kind none: absent).
func (p *splicePoints) limit(field string) jsonValue {
	switch field {
	case "max_tokens":
		return p.maxTokens
	case "max_completion_tokens":
		return p.maxCompletionTokens
	case "max_output_tokens":
		return p.maxOutTok
	}
	return jsonValue{}
}

// promptCount is the number of prompts in a completions "prompt" or an
// embeddings "input": a list of strings or of token lists is one prompt per
// element; a string, or one list of token ids, is one prompt.
func promptCount(v jsonValue) int64 {
	if v.kind != kindArray || v.elems == 0 || v.numbers {
		return 1
	}
	return int64(v.elems)
}

// maxChoices is the most completions one call may ask for (OpenAI's limit).
const maxChoices = 128

var (
	parserPool fastjson.ParserPool
	arenaPool  fastjson.ArenaPool // stream.go: the usage chunk it writes
)

// inspect validates body and extracts what pricing and forwarding need, in
// one scan (scan.go). The parser is no longer used (inspection builds no
// tree); it stays in the signature while callers change.
func inspect(ep *endpoint, body []byte) (request, error) {
	if len(body) == 0 {
		return request{}, invalid("", "Request body is empty; expected a JSON object.")
	}
	if !utf8.Valid(body) {
		return request{}, invalid("", "Request body is not valid UTF-8.")
	}
	s := getScanner()
	defer putScanner(s)
	if err := s.scan(body); err != nil {
		return request{}, err
	}
	if !s.rootObject {
		return request{}, invalid("", "Request body must be a JSON object.")
	}
	// The request is built in the pooled scanner: the dialect's inspect
	// takes it by pointer without moving a local to the heap.
	r := &s.req
	*r = request{}
	t := &s.top
	switch mv := t[nameModel]; {
	case mv.kind == kindNone && ep.defaultModel != "":
		r.model, r.noModel = []byte(ep.defaultModel), true
	case mv.kind == kindNone:
		return *r, invalid("model", "Missing required parameter: 'model'.")
	case mv.kind != kindString || mv.end-mv.start == 2:
		return *r, invalid("model", "Parameter 'model' must be a non-empty string.")
	case mv.escaped: // rare: the name is copied out unescaped
		r.model = unescapeJSON(nil, body[mv.start+1:mv.end-1])
	default:
		r.model = body[mv.start+1 : mv.end-1]
	}
	switch t[nameStream].kind {
	case kindTrue:
		r.stream = true
	case kindNone, kindFalse, kindNull:
	default:
		return *r, invalid("stream", "Parameter 'stream' must be a boolean.")
	}
	if err := checkServiceTier(t[nameServiceTier], body); err != nil {
		return *r, err
	}
	if r.stream && t[nameStreamOptions].kind == kindObject && s.usage.kind == kindTrue {
		r.wantUsage = true
	}
	r.at = splicePoints{model: t[nameModel].span, options: t[nameStreamOptions], usage: s.usage,
		maxTokens: t[nameMaxTokens], maxCompletionTokens: t[nameMaxCompletionTokens], maxOutTok: t[nameMaxOutputTokens], end: s.rootEnd}
	for _, f := range [2]string{ep.maxField, ep.altMax} {
		if f == "" {
			continue
		}
		mt := r.at.limit(f)
		if !mt.present() {
			continue
		}
		n, ok := parseInt(body[mt.start:mt.end])
		if mt.kind != kindNumber || !ok {
			return *r, invalid(f, "Parameter '%s' must be an integer.", f)
		}
		if n == 0 && ep.zeroOut && !r.noOutput {
			r.noOutput, r.maxField = true, f
			continue
		}
		if n < 1 {
			return *r, invalid(f, "Parameter '%s' must be at least 1.", f)
		}
		if r.maxOut != 0 {
			// Servers disagree on which wins; the hold must cover either.
			return *r, invalid(f, "Give either '%s' or '%s', not both.", ep.maxField, ep.altMax)
		}
		r.maxOut, r.maxField = n, f
	}
	r.remote, r.unsized = s.remote, s.lookup // the dialect adds its own (remote.go)
	r.choices, r.prompts = 1, 1
	err := ep.dialect.inspect(ep, r, s, body) // dialect_*.go
	return *r, err
}

// checkServiceTier refuses a processing tier the provider bills above its
// standard rates (OpenAI's "priority", the older "scale"): the catalog prices
// the standard tier, so such a call would be charged less than it costs.
// The standard and cheaper tiers pass: "auto" and "default" (the project's
// tier, the operator's choice), "flex", and Anthropic's "standard_only".
func checkServiceTier(v jsonValue, body []byte) error {
	if !v.present() {
		return nil
	}
	if v.kind == kindString && !v.escaped {
		switch string(body[v.start+1 : v.end-1]) {
		case "auto", "default", "flex", "standard_only":
			return nil
		}
	}
	return invalid("service_tier", "Parameter 'service_tier' must be 'auto', 'default', 'flex' or 'standard_only': "+
		"this gateway charges standard rates and does not offer a tier the provider bills above them.")
}

// inputEstimate bounds the input tokens of a body of n bytes from above
// (text tokens average ~4 bytes; JSON framing adds more), capped at the
// model's context window, which no call can exceed.
func inputEstimate(n int, contextWindow int64) int64 {
	est := int64(n)/2 + 16
	if contextWindow > 0 && est > contextWindow {
		est = contextWindow
	}
	return est
}

// rewrite returns the body to send upstream: the provider's model name, the
// usage chunk requested for streams, and the granted output limit. It
// returns body itself (and false) when nothing needs to change. It splices
// the client's bytes at the points inspect found (splice.go).
func rewrite(dst []byte, r *request, ep *endpoint, body []byte, upstreamModel string, grantOut int64) ([]byte, bool) {
	setModel := string(r.model) != upstreamModel
	setUsage := r.addUsage
	setMax := ep.maxField != "" && !r.noOutput && (r.maxOut == 0 || grantOut < r.maxOut)
	if !setModel && !setUsage && !setMax {
		return body, false
	}
	field := r.maxField
	if field == "" {
		field = ep.maxField
		if ep.dialect == dialectChat && r.limitField != "" {
			field = r.limitField
		}
	}
	var (
		edits [3]edit
		n     int
		at    = &r.at
	)
	if setModel && r.noModel {
		edits[n] = edit{at.end, at.end, putModelMember}
		n++
	} else if setModel {
		edits[n] = edit{at.model.start, at.model.end, putModel}
		n++
	}
	if setMax {
		if v := at.limit(field); v.kind != kindNone {
			edits[n] = edit{v.start, v.end, putLimit}
		} else {
			edits[n] = edit{at.end, at.end, putLimitMember}
		}
		n++
	}
	if setUsage {
		switch o := at.options; {
		case o.kind == kindNone:
			edits[n] = edit{at.end, at.end, putOptionsMember}
		case o.kind != kindObject:
			edits[n] = edit{o.start, o.end, putUsageObject}
		case at.usage.kind != kindNone: // once at most: inspect refuses it twice
			edits[n] = edit{at.usage.start, at.usage.end, putTrue}
		default:
			edits[n] = edit{o.start + 1, o.start + 1, putUsageFirst}
		}
		n++
	}
	for i := 1; i < n; i++ { // by position; insertions at one place keep their order
		for j := i; j > 0 && edits[j].start < edits[j-1].start; j-- {
			edits[j], edits[j-1] = edits[j-1], edits[j]
		}
	}
	return splice(dst[:0], body, edits[:n], field, upstreamModel, grantOut, at.options.elems > 0), true
}

// bufPool pools byte buffers; buffers that grew past maxPooledBuf are dropped.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledBuf = 256 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
