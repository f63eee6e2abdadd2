package proxy

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// dialect is the wire shape of an endpoint's requests, answers and streams:
// everything the proxy does differently for one API. There is one type per
// dialect, each in its own file (dialect_chat.go, dialect_messages.go, …);
// adding a dialect is that file and an endpoint (inspect.go) naming it. The
// types are empty structs: a call through the interface does not allocate.
type dialect interface {
	// inspect reads the dialect's own members of a request, after the ones
	// every dialect shares (model, stream, output limit; inspect.go): the
	// batch size and choices, provider-side tools, input the body does not
	// size (remote.go), and the checks only this API makes. ep is the
	// endpoint (count_tokens shares the Messages dialect without an output
	// limit). r is the scanner's (a local's address through an interface
	// call would move it to the heap).
	inspect(ep *endpoint, r *request, s *scanner, body []byte) error
	// requestText appends the text of a parsed request that a tokenizer
	// estimate counts (tokenize.go), and the number of messages and of
	// tokens given as ids.
	requestText(dst []byte, v *fastjson.Value) (text []byte, messages, direct int64)
	// usage reads a complete (non-streamed) answer's usage.
	usage(v *fastjson.Value) (usage, bool)
	// stored is the id of a complete answer the provider stores for the
	// account to continue (responses.go), nil when the dialect stores none.
	stored(v *fastjson.Value) []byte
	// event meters one stream event (stream.go): it collects text, reads
	// usage, and at the stream's end marker settles the call; it reports
	// whether the event passes on as it came (false: the dialect wrote,
	// held or dropped it).
	event(sb *streamBody, name, data []byte) (pass bool)
	// streamCut ends a stream the provider cut: what the dialect held, then
	// its own error event (stream.go: failed).
	streamCut(sb *streamBody)
	// streamError is the dialect's mid-stream error event with code and msg:
	// how a stream tells its client why it ended (or lost an event).
	streamError(code, msg string) string
	// usageObject reads a usage object itself (not an answer holding one),
	// as a stream event carries it: what an event too large to relay leaves
	// at its end (stream.go: dropOversize).
	usageObject(u *fastjson.Value) (usage, bool)
	// setKey puts one of the provider's keys on an upstream request.
	setKey(h *fasthttp.RequestHeader, k *upstreamKey)
	// errorShape is the envelope of the endpoint's error answers.
	errorShape() modelShape
}

// The dialects, one value each (endpoints name them).
var (
	dialectChat        dialect = chatDialect{}
	dialectCompletions dialect = completionsDialect{}
	dialectEmbeddings  dialect = embeddingsDialect{}
	dialectModerations dialect = moderationsDialect{}
	dialectResponses   dialect = responsesDialect{}
	dialectMessages    dialect = messagesDialect{} // Anthropic native
)

// openAIStreamError is the OpenAI-compatible dialects' mid-stream error
// object (chat, completions; and those that do not stream).
func openAIStreamError(code, msg string) string {
	return "data: {\"error\":{\"message\":\"" + msg + "\",\"type\":\"api_error\",\"code\":\"" + code + "\",\"param\":null}}\n\n"
}

// bearer is how every OpenAI-compatible dialect sends the provider's key.
func bearer(h *fasthttp.RequestHeader, k *upstreamKey) {
	h.SetCanonical(hdrAuthorization, k.auth)
}

// storesNothing is stored for the dialects whose answers are not stored.
func storesNothing(*fastjson.Value) []byte { return nil }

// noStream is the event handler of dialects that never stream.
func noStream(*streamBody, []byte, []byte) bool { return true }

// readChoices reads "n" and "best_of" (chat, completions): completions
// generated per prompt, each of which may use the output limit.
func readChoices(r *request, s *scanner, body []byte) error {
	t := &s.top
	for i, nv := range [2]jsonValue{t[nameN], t[nameBestOf]} {
		if !nv.present() {
			continue
		}
		f := [2]string{"n", "best_of"}[i]
		n, ok := parseInt(body[nv.start:nv.end])
		if nv.kind != kindNumber || !ok || n < 1 || n > maxChoices {
			return invalid(f, "Parameter '%s' must be an integer from 1 to %d.", f, maxChoices)
		}
		r.choices = max(r.choices, n)
	}
	return nil
}
