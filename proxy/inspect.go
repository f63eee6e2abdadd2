package proxy

import (
	"bytes"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// dialect is the wire shape of an endpoint's request, response and stream.
type dialect uint8

const (
	dialectChat dialect = iota
	dialectCompletions
	dialectEmbeddings
	dialectResponses
	dialectMessages // Anthropic native
)

// endpoint describes one metered route.
type endpoint struct {
	name     string // for records: "chat.completions"
	path     string // upstream path below the provider's base URL
	dialect  dialect
	maxField string // the request's output-limit field ("" = no output)
	altMax   string // an alternative spelling the client may use
	native   bool   // served only by providers of the matching kind
}

var (
	epChat        = &endpoint{name: "chat.completions", path: "/chat/completions", dialect: dialectChat, maxField: "max_tokens", altMax: "max_completion_tokens"}
	epCompletions = &endpoint{name: "completions", path: "/completions", dialect: dialectCompletions, maxField: "max_tokens"}
	epEmbeddings  = &endpoint{name: "embeddings", path: "/embeddings", dialect: dialectEmbeddings}
	epResponses   = &endpoint{name: "responses", path: "/responses", dialect: dialectResponses, maxField: "max_output_tokens"}
	epMessages    = &endpoint{name: "messages", path: "/messages", dialect: dialectMessages, maxField: "max_tokens", native: true}

	// endpoints lists every metered route (upstream URIs are parsed once for each).
	endpoints = [...]*endpoint{epChat, epCompletions, epEmbeddings, epResponses, epMessages}
)

// request is what inspection learned of a call's body. Slices point into the
// parser, valid while it is held.
type request struct {
	root      *fastjson.Value
	model     []byte
	stream    bool
	wantUsage bool   // the client asked for the usage chunk (chat/completions streams)
	maxOut    int64  // the client's output limit; 0 when absent
	maxField  string // which field carried it
	choices   int64  // completions generated per call ("n", "best_of"); the output limit applies to each
	// remoteInput: the provider adds input the body does not carry (a stored
	// conversation, images or files by reference), so its size is unknown.
	remoteInput bool
	// limitField is the chat field to use when the gateway sets an output
	// limit the client did not (the model's catalog setting; "" = max_tokens).
	limitField string
}

var remoteInputMarkers = [][]byte{[]byte(`"image_url"`), []byte(`"input_image"`), []byte(`"file_id"`), []byte(`"input_file"`)}

// hasRemoteInput reports whether the provider will read input the body does
// not contain.
func hasRemoteInput(ep *endpoint, v *fastjson.Value, body []byte) bool {
	if ep.dialect == dialectResponses && (v.Get("previous_response_id") != nil || v.Get("conversation") != nil || v.Get("prompt") != nil) {
		return true
	}
	for _, m := range remoteInputMarkers {
		if bytes.Contains(body, m) {
			return true
		}
	}
	return false
}

// maxChoices is the most completions one call may ask for (OpenAI's limit).
const maxChoices = 128

var parserPool fastjson.ParserPool

// inspect validates body and extracts what pricing and forwarding need.
func inspect(p *fastjson.Parser, ep *endpoint, body []byte) (request, error) {
	var r request
	if len(body) == 0 {
		return r, invalid("", "Request body is empty; expected a JSON object.")
	}
	if !utf8.Valid(body) {
		return r, invalid("", "Request body is not valid UTF-8.")
	}
	// fastjson's parser accepts NaN and Inf; its validator, like every
	// provider, does not.
	if fastjson.ValidateBytes(body) != nil {
		return r, invalid("", "Request body is not valid JSON.")
	}
	v, err := p.ParseBytes(body)
	if err != nil {
		return r, invalid("", "Request body is not valid JSON.")
	}
	if v.Type() != fastjson.TypeObject {
		return r, invalid("", "Request body must be a JSON object.")
	}
	if k := duplicateKey(v); k != "" {
		// Tollgate reads the first value, providers the last: refuse rather
		// than price one model (or limit, or mode) and serve another.
		return r, invalid(k, "Parameter '%s' is given more than once.", k)
	}
	r.root = v
	mv := v.Get("model")
	if mv == nil {
		return r, invalid("model", "Missing required parameter: 'model'.")
	}
	if r.model, err = mv.StringBytes(); err != nil || len(r.model) == 0 {
		return r, invalid("model", "Parameter 'model' must be a non-empty string.")
	}
	if sv := v.Get("stream"); sv != nil {
		switch sv.Type() {
		case fastjson.TypeTrue:
			r.stream = true
		case fastjson.TypeFalse, fastjson.TypeNull:
		default:
			return r, invalid("stream", "Parameter 'stream' must be a boolean.")
		}
	}
	if r.stream && ep.dialect == dialectEmbeddings {
		return r, invalid("stream", "Embeddings cannot be streamed.")
	}
	if r.stream {
		if u := v.Get("stream_options", "include_usage"); u != nil && u.Type() == fastjson.TypeTrue {
			r.wantUsage = true
		}
	}
	for _, f := range [2]string{ep.maxField, ep.altMax} {
		if f == "" {
			continue
		}
		mt := v.Get(f)
		if mt == nil || mt.Type() == fastjson.TypeNull {
			continue
		}
		n, err := mt.Int64()
		if err != nil || mt.Type() != fastjson.TypeNumber {
			return r, invalid(f, "Parameter '%s' must be an integer.", f)
		}
		if n < 1 {
			return r, invalid(f, "Parameter '%s' must be at least 1.", f)
		}
		if r.maxOut != 0 {
			// Servers disagree on which wins; the hold must cover either.
			return r, invalid(f, "Give either '%s' or '%s', not both.", ep.maxField, ep.altMax)
		}
		r.maxOut, r.maxField = n, f
	}
	r.remoteInput = hasRemoteInput(ep, v, body)
	r.choices = 1
	if ep.dialect == dialectChat || ep.dialect == dialectCompletions {
		for _, f := range [2]string{"n", "best_of"} {
			nv := v.Get(f)
			if nv == nil || nv.Type() == fastjson.TypeNull {
				continue
			}
			n, err := nv.Int64()
			if err != nil || nv.Type() != fastjson.TypeNumber || n < 1 || n > maxChoices {
				return r, invalid(f, "Parameter '%s' must be an integer from 1 to %d.", f, maxChoices)
			}
			r.choices = max(r.choices, n)
		}
	}
	if ep.dialect == dialectMessages && r.maxOut == 0 {
		return r, invalid("max_tokens", "Missing required parameter: 'max_tokens'.")
	}
	return r, nil
}

// duplicateKey returns a top-level key given more than once ("" when none).
func duplicateKey(v *fastjson.Value) string {
	o, err := v.Object()
	if err != nil {
		return ""
	}
	var (
		buf  [32][]byte
		keys = buf[:0]
		dup  string
	)
	o.Visit(func(k []byte, _ *fastjson.Value) {
		if dup != "" {
			return
		}
		for _, seen := range keys {
			if string(seen) == string(k) {
				dup = string(k)
				return
			}
		}
		keys = append(keys, k)
	})
	return dup
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

var arenaPool fastjson.ArenaPool

// rewrite returns the body to send upstream: the provider's model name, the
// usage chunk requested for streams, and the granted output limit. It
// returns body itself (and false) when nothing needs to change.
//
// The arena must outlive every later use of r.root (values set here point into it).
func rewrite(dst []byte, a *fastjson.Arena, r *request, ep *endpoint, body []byte, upstreamModel string, grantOut int64) ([]byte, bool) {
	setModel := string(r.model) != upstreamModel
	setUsage := r.stream && !r.wantUsage && (ep.dialect == dialectChat || ep.dialect == dialectCompletions)
	setMax := ep.maxField != "" && (r.maxOut == 0 || grantOut < r.maxOut)
	if !setModel && !setUsage && !setMax {
		return body, false
	}
	v := r.root
	if setModel {
		v.Set("model", a.NewString(upstreamModel))
	}
	if setUsage {
		so := v.Get("stream_options")
		if so == nil || so.Type() != fastjson.TypeObject {
			so = a.NewObject()
			v.Set("stream_options", so)
		}
		so.Set("include_usage", a.NewTrue())
	}
	if setMax {
		field := r.maxField
		if field == "" {
			field = ep.maxField
			if ep.dialect == dialectChat && r.limitField != "" {
				field = r.limitField
			}
		}
		v.Set(field, a.NewNumberInt(int(grantOut)))
	}
	return v.MarshalTo(dst[:0]), true
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
