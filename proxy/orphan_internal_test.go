package proxy

import (
	"testing"

	"github.com/tollgate/tollgate/pricing"
)

// TestInputUnsized: which streams a hangup leaves to be read on for their
// usage — those whose input an estimate cannot size — and which are cut at
// once, their estimate being a measure of the call.
func TestInputUnsized(t *testing.T) {
	m, err := benchCatalog(t).Lookup("gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	const user = `[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name string
		ep   *endpoint
		body string
		prev int64 // the continued response's recorded context
		want bool
	}{
		{"chat text", epChat, `{"model":"m","stream":true,"messages":` + user + `}`, 0, false},
		{"chat text naming a file", epChat, `{"model":"m","stream":true,"messages":[{"role":"user","content":"{\"type\":\"file\",\"file_id\":\"f\"}"}]}`, 0, false},
		{"chat file by id", epChat, `{"model":"m","stream":true,"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}`, 0, true},
		{"chat inline text file", epChat, `{"model":"m","stream":true,"messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"data:text/plain;base64,aGVsbG8="}}]}]}`, 0, false},
		{"chat image by URL", epChat, `{"model":"m","stream":true,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, 0, false},
		{"chat cached content", epChat, `{"model":"m","stream":true,"cached_content":"cachedContents/abc","messages":` + user + `}`, 0, true},
		{"chat web search", epChat, `{"model":"m","stream":true,"web_search_options":{},"messages":` + user + `}`, 0, true},
		{"chat function tool", epChat, `{"model":"m","stream":true,"tools":[{"type":"function","function":{"name":"f"}}],"messages":` + user + `}`, 0, false},
		{"responses text", epResponses, `{"model":"m","stream":true,"input":"hi"}`, 0, false},
		{"responses conversation", epResponses, `{"model":"m","stream":true,"conversation":"conv_1","input":"hi"}`, 0, true},
		{"responses stored prompt", epResponses, `{"model":"m","stream":true,"prompt":{"id":"pmpt_1"}}`, 0, true},
		{"responses item reference", epResponses, `{"model":"m","stream":true,"input":[{"type":"item_reference","id":"msg_1"}]}`, 0, true},
		{"responses file by URL", epResponses, `{"model":"m","stream":true,"input":[{"role":"user","content":[{"type":"input_file","file_url":"https://x/a.pdf"}]}]}`, 0, true},
		{"responses previous, context unknown", epResponses, `{"model":"m","stream":true,"previous_response_id":"resp_1","input":"hi"}`, 0, true},
		{"responses previous, context recorded", epResponses, `{"model":"m","stream":true,"previous_response_id":"resp_1","input":"hi"}`, 900, false},
		{"messages document by URL", epMessages, `{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]}`, 0, true},
		{"messages text", epMessages, `{"model":"m","stream":true,"max_tokens":10,"messages":` + user + `}`, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			r, err := inspect(tc.ep, body)
			if err != nil {
				t.Fatal(err)
			}
			c := &call{s: &Server{}, ep: tc.ep, req: r, model: m, body: body, prevContext: tc.prev}
			sb := newStreamBody(c, nil, nil, nil, nil)
			if got := sb.inputUnsized(); got != tc.want {
				t.Fatalf("inputUnsized %v, want %v (remote %q)", got, tc.want, r.remote)
			}
			sb.u.seen, sb.outFinal = true, true // the provider's final count came: nothing to wait for
			if sb.inputUnsized() {
				t.Fatal("inputUnsized with the provider's final count")
			}
		})
	}
}

// Anthropic states the input first (message_start), but a provider-side
// tool's results are read after it: the input of a call with a web search
// grows until message_delta (2,679 → 10,682 in the fixture). Such a stream
// is read on after a hangup until its final count; one whose request is all
// the input is not (found by review: every Messages stream had its input
// count after the first event, so none was read on).
func TestInputUnsizedAnthropicFirstCount(t *testing.T) {
	m, err := benchCatalog(t).Lookup("gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body string
		want       bool
	}{
		{"web search", `{"model":"m","stream":true,"max_tokens":10,"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[{"role":"user","content":"hi"}]}`, true},
		{"text", `{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			r, err := inspect(epMessages, body)
			if err != nil {
				t.Fatal(err)
			}
			sb := newStreamBody(&call{s: &Server{}, ep: epMessages, req: r, model: m, body: body}, nil, nil, nil, nil)
			sb.messageUsage(evMessageStart, usage{seen: true, hasInput: true, Usage: pricing.Usage{Input: 2679}})
			if got := sb.inputUnsized(); got != tc.want {
				t.Fatalf("after message_start: inputUnsized %v, want %v", got, tc.want)
			}
			sb.messageUsage(evMessageDelta, usage{seen: true, hasInput: true, Usage: pricing.Usage{Input: 10682, Output: 510}})
			if sb.inputUnsized() {
				t.Fatal("inputUnsized after the final count")
			}
		})
	}
}
