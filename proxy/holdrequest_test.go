package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// holdModel is a tier-priced model for holdRequest tests: 1 mc per input
// token, 2 per output token.
func holdModel(window, maxOut int64) *pricing.Model {
	return &pricing.Model{ID: "m", Tier: "core", Hold: pricing.HoldRates{Input: 1, Output: 2},
		ContextWindow: window, MaxOutputTokens: maxOut}
}

// cacheModel is holdModel (5000-token window) with cache-write rates.
func cacheModel(cw, cw1h int64) *pricing.Model {
	m := holdModel(5000, 100)
	m.Hold.Input = max(m.Hold.Input, cw, cw1h) // the dearest input kind
	return m
}

// holdFor inspects body on ep and sizes its hold for model m.
func holdFor(t *testing.T, s *Server, m *pricing.Model, ep *endpoint, body string) (metering.HoldRequest, error) {
	t.Helper()
	r, err := inspect(ep, []byte(body))
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	c := &call{s: s, ep: ep, id: "h", model: m, req: r, body: []byte(body)}
	return c.holdRequest()
}

// TestHoldRequestBoundsWhatCanBeBilled: the hold covers every prompt of a
// batch and every choice, the real size of a batch's input (one window per
// prompt), the whole window for input of unknown size; where nothing bounds
// the cost the call is refused.
func TestHoldRequestBoundsWhatCanBeBilled(t *testing.T) {
	s, _, _ := fuzzServer(t)
	minOut := s.opts.MinOutputTokens
	prompts := func(n, size int) string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = `"` + strings.Repeat("w", size) + `"`
		}
		return "[" + strings.Join(ps, ",") + "]"
	}
	bodyOf := func(b string) int64 { return inputEstimate(len(b), 0) } // the uncapped estimate
	type want struct {
		fixed, perOut, minOut, maxOut int64
		err                           string // refusal text ("" = held)
	}
	for _, tc := range []struct {
		name string
		m    *pricing.Model
		ep   *endpoint
		body string
		want func(body string) want
	}{
		{"completions: prompts × n", holdModel(1000, 100), epCompletions, `{"model":"m","prompt":["a","b","c"],"max_tokens":10,"n":2}`,
			func(b string) want { return want{fixed: bodyOf(b), perOut: 2 * 2 * 3, minOut: 10, maxOut: 10} }},
		{"completions: best_of × prompts", holdModel(1000, 100), epCompletions, `{"model":"m","prompt":[[1,2],[3]],"max_tokens":10,"n":1,"best_of":4}`,
			func(b string) want { return want{fixed: bodyOf(b), perOut: 2 * 4 * 2, minOut: 10, maxOut: 10} }},
		{"completions: one tokenized prompt", holdModel(1000, 100), epCompletions, `{"model":"m","prompt":[1,2,3],"max_tokens":10}`,
			func(b string) want { return want{fixed: bodyOf(b), perOut: 2, minOut: 10, maxOut: 10} }},
		{"completions: prompts × gateway limit", holdModel(1000, 100), epCompletions, `{"model":"m","prompt":["a","b","c","d","e"]}`,
			func(b string) want { return want{fixed: bodyOf(b), perOut: 2 * 5, minOut: minOut, maxOut: 100} }},
		{"completions: input capped at a window per prompt", holdModel(100, 100), epCompletions, `{"model":"m","prompt":` + prompts(4, 300) + `,"max_tokens":1}`,
			func(b string) want { return want{fixed: 400, perOut: 2 * 4, minOut: 1, maxOut: 1} }},
		{"embeddings: batch input past one window", holdModel(100, 1), epEmbeddings, `{"model":"m","input":` + prompts(10, 100) + `}`,
			func(b string) want { return want{fixed: bodyOf(b)} }},
		{"embeddings: batch capped at a window each", holdModel(100, 1), epEmbeddings, `{"model":"m","input":` + prompts(3, 1000) + `}`,
			func(b string) want { return want{fixed: 300} }},
		{"embeddings: one input capped at its window", holdModel(100, 1), epEmbeddings, `{"model":"m","input":"` + strings.Repeat("w", 1000) + `"}`,
			func(b string) want { return want{fixed: 100} }},
		{"remote input holds the window", holdModel(5000, 100), epChat, `{"model":"m","max_tokens":7,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`,
			func(b string) want { return want{fixed: 5000, perOut: 2, minOut: 7, maxOut: 7} }},
		{"provider tool holds the window", holdModel(5000, 100), epMessages, `{"model":"m","max_tokens":7,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`,
			func(b string) want { return want{fixed: 5000, perOut: 2, minOut: 7, maxOut: 7} }},
		{"remote input, no window: refused", holdModel(0, 100), epResponses, `{"model":"m","input":"hi","previous_response_id":"resp_1"}`,
			func(string) want { return want{err: "no context window"} }},
		{"provider tool, no window: refused", holdModel(0, 100), epMessages, `{"model":"m","max_tokens":7,"messages":[],"mcp_servers":[{"type":"url","url":"https://x","name":"x"}]}`,
			func(string) want { return want{err: "no context window"} }},
		{"no window, inline input: from its bytes", holdModel(0, 100), epChat, `{"model":"m","max_tokens":7,"messages":[]}`,
			func(b string) want { return want{fixed: bodyOf(b), perOut: 2, minOut: 7, maxOut: 7} }},
		// The input estimate is held at the dearest input-side rate: a
		// provider may bill any of it as a cache write.
		{"5-minute cache write is the dearest input", cacheModel(3, 2), epMessages, `{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hello"}]}`,
			func(b string) want { return want{fixed: 3 * bodyOf(b), perOut: 2, minOut: 7, maxOut: 7} }},
		{"1-hour cache write is the dearest input", cacheModel(3, 5), epMessages, `{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hello"}]}`,
			func(b string) want { return want{fixed: 5 * bodyOf(b), perOut: 2, minOut: 7, maxOut: 7} }},
		{"window held at the 1-hour write rate", cacheModel(3, 5), epMessages, `{"model":"m","max_tokens":7,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`,
			func(b string) want { return want{fixed: 5 * 5000, perOut: 2, minOut: 7, maxOut: 7} }},
		{"past any balance: refused", &pricing.Model{ID: "m", Hold: pricing.HoldRates{Input: 1 << 30, Output: 1 << 30}, ContextWindow: 1 << 40, MaxOutputTokens: 1 << 20},
			epChat, `{"model":"m","max_tokens":7,"messages":[],"tools":[{"type":"web_search"}]}`,
			func(string) want { return want{err: "more than any balance"} }},
		{"output past any balance: refused", &pricing.Model{ID: "m", Hold: pricing.HoldRates{Input: 1, Output: 1 << 30}, ContextWindow: 1000, MaxOutputTokens: 1 << 30},
			epCompletions, `{"model":"m","max_tokens":1073741824,"n":128,"prompt":["a","b"]}`,
			func(string) want { return want{err: "more than any balance"} }},
		{"gateway limit kept holdable", &pricing.Model{ID: "m", Hold: pricing.HoldRates{Input: 1, Output: 1 << 30}, ContextWindow: 1000, MaxOutputTokens: 1 << 30},
			epCompletions, `{"model":"m","n":128,"prompt":["a","b"]}`,
			func(b string) want {
				per := int64(1<<30) * 128 * 2
				return want{fixed: bodyOf(b), perOut: per, minOut: minOut, maxOut: (maxHold - bodyOf(b)) / per}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.want(tc.body)
			hr, err := holdFor(t, s, tc.m, tc.ep, tc.body)
			if w.err != "" {
				var br *badRequest
				if !errors.As(err, &br) || !strings.Contains(br.msg, w.err) {
					t.Fatalf("held %+v (err %v); want a 400 saying %q", hr, err, w.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{fixed: hr.Fixed, perOut: hr.PerOutput, minOut: hr.MinOutput, maxOut: hr.MaxOutput}
			if got != w {
				t.Fatalf("hold %+v, want %+v", got, w)
			}
			if worst := hr.Fixed + hr.PerOutput*hr.MaxOutput; worst > maxHold || worst < 0 {
				t.Fatalf("worst case %d past maxHold", worst)
			}
		})
	}
}

// TestNoOutputPrewarm: /v1/messages with max_tokens 0 (a prompt-cache
// pre-warm) holds its input only and is forwarded unchanged; elsewhere a
// zero output limit stays a 400.
func TestNoOutputPrewarm(t *testing.T) {
	s, _, _ := fuzzServer(t)
	body := `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"warm"}]}`
	hr, err := holdFor(t, s, holdModel(5000, 100), epMessages, body)
	if err != nil {
		t.Fatal(err)
	}
	if hr.Fixed != inputEstimate(len(body), 0) || hr.MinOutput != 0 || hr.MaxOutput != 0 {
		t.Fatalf("hold %+v: want the input estimate and no output", hr)
	}
	r, err := inspect(epMessages, []byte(body))
	if err != nil || !r.noOutput {
		t.Fatalf("inspect: %+v %v", r, err)
	}
	if out, changed := rewrite(nil, &r, epMessages, []byte(body), "m", 0); changed {
		t.Fatalf("rewritten: %s", out)
	}
	for _, tc := range []struct {
		ep   *endpoint
		body string
	}{
		{epChat, `{"model":"m","max_tokens":0,"messages":[]}`},
		{epResponses, `{"model":"m","max_output_tokens":0,"input":"x"}`},
		{epMessages, `{"model":"m","max_tokens":-1,"messages":[]}`},
	} {
		if _, err := inspect(tc.ep, []byte(tc.body)); err == nil {
			t.Errorf("%s %s accepted", tc.ep.name, tc.body)
		}
	}
}
