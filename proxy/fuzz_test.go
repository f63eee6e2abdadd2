package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Fuzz targets: the SSE relay, every usage parser and the request inspector.
// Seeds live in testdata/fuzz/<FuzzName>/ (and the SSE fixtures are added as
// seeds too). `make fuzz` runs each for FUZZTIME.
//
// Properties: no input panics; usage figures are never negative, input and
// cached input stay within what a provider may report, reasoning never
// exceeds output; every stream ends settled exactly once or released exactly
// once, at a non-negative cost.

// fuzzMeter is a Meter that records what the relay asked of it.
type fuzzMeter struct {
	settles  []metering.Settlement
	releases []metering.Record
}

func (m *fuzzMeter) Authenticate(context.Context, []byte) (metering.Identity, error) {
	return metering.Identity{Account: "a", KeyID: "k"}, nil
}
func (m *fuzzMeter) Reserve(context.Context, metering.HoldRequest) (metering.Hold, error) {
	return metering.Hold{}, nil
}
func (m *fuzzMeter) Settle(_ context.Context, s metering.Settlement) (metering.Charge, error) {
	m.settles = append(m.settles, s)
	return metering.Charge{Charged: s.Cost, BalanceAfter: 1_000_000 - s.Cost}, nil
}
func (m *fuzzMeter) Release(_ context.Context, _, _, _ string, rec *metering.Record) error {
	m.releases = append(m.releases, *rec)
	return nil
}
func (m *fuzzMeter) Generation(context.Context, string, string) (metering.Generation, error) {
	return metering.Generation{}, metering.ErrNotFound
}
func (m *fuzzMeter) Ping(context.Context) error { return nil }
func (m *fuzzMeter) RecordResponse(context.Context, string, string, string, int64) error {
	return nil
}
func (m *fuzzMeter) StoredResponse(context.Context, string, string) (metering.StoredResponse, error) {
	return metering.StoredResponse{}, metering.ErrNotFound
}

var _ Meter = (*fuzzMeter)(nil)

func fuzzServer(t testing.TB) (*Server, *pricing.Model, *fuzzMeter) {
	t.Helper()
	cat, err := pricing.New(pricing.Spec{
		CreditsPerUSD: 100000,
		Tiers:         map[string]pricing.TierSpec{"pro": {Input: pricing.Per1K(3), Output: pricing.Per1K(6)}},
		Models: []pricing.ModelSpec{{ID: "gpt-4o", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 16384,
			Deployments: []pricing.DeploymentSpec{{Provider: "p", Model: "gpt-4o"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &fuzzMeter{}
	s, err := New(Options{Catalog: cat, Meter: m, Providers: []Provider{{Name: "p", Kind: "openai", BaseURL: "http://127.0.0.1:9"}}})
	if err != nil {
		t.Fatal(err)
	}
	model, _ := cat.Lookup("gpt-4o")
	return s, model, m
}

// chunkedReader hands out its data in pieces of a size set by the fuzzer,
// then ends with EOF or with a connection error.
type chunkedReader struct {
	data []byte
	step int
	err  error
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := min(len(p), r.step, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

var (
	fuzzDialects  = [...]*endpoint{epChat, epCompletions, epResponses, epMessages}
	fuzzEndpoints = [...]*endpoint{epChat, epCompletions, epEmbeddings, epResponses, epMessages, epModerations}
)

// FuzzSSEReader drives the relay's line and event machinery (streamBody)
// with arbitrary upstream bytes, delivered in arbitrary pieces, through the
// same Read loop fasthttp uses.
func FuzzSSEReader(f *testing.F) {
	for i, name := range []string{"openai_chat_stream_usage.sse", "openai_chat_stream_error.sse", "openai_chat_stream_nousage.sse",
		"openai_responses_stream.sse", "openai_responses_stream_failed.sse", "anthropic_messages_stream.sse",
		"anthropic_messages_stream_thinking_tools.sse", "anthropic_messages_stream_error.sse", "gemini_chat_stream.sse",
		"deepseek_reasoner_stream.sse"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
		if err != nil {
			f.Fatal(err)
		}
		d := byte(0)
		switch {
		case strings.HasPrefix(name, "openai_responses"):
			d = 2
		case strings.HasPrefix(name, "anthropic"):
			d = 3
		}
		f.Add(d, byte(i*7+1), b)
	}
	// Web searches seen starting, for an estimate (a stream ended without usage).
	f.Add(byte(3), byte(5), []byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"s\",\"name\":\"web_search\",\"input\":{}}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
	f.Add(byte(2), byte(9), []byte("event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"item\":{\"type\":\"web_search_call\",\"id\":\"ws\"}}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n"))
	// Events past the relay's bound (1 KiB), with their usage at the end.
	big := strings.Repeat("x", 3<<10)
	f.Add(byte(0), byte(5), []byte("data: {\"choices\":[{\"delta\":{\"content\":\""+big+"\"}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n"))
	f.Add(byte(2), byte(9), []byte("event: response.completed\ndata: {\"response\":{\"output\":[{\"type\":\"web_search_call\"},{\"result\":\""+big+"\"}],\n"+
		"data: \"usage\":{\"input_tokens\":3,\"output_tokens\":16}}}\n\n"))
	f.Add(byte(3), byte(3), []byte("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_sequence\":\""+big+"\"},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {}\n\n"))
	s, model, m := fuzzServer(f)
	f.Fuzz(func(t *testing.T, d, step byte, data []byte) {
		relayFuzz(t, s, model, m, d, step, data)
	})
}

// relay runs data through a streamBody as the upstream body of a call on
// ep — delivered readStep bytes at a time, then endErr — and returns what
// the client received. m records the settle or release.
func relay(t testing.TB, s *Server, model *pricing.Model, m *fuzzMeter, ep *endpoint, wantUsage bool,
	data []byte, readStep, writeStep int, endErr error) []byte {
	t.Helper()
	m.settles, m.releases = m.settles[:0], m.releases[:0]
	c := &call{s: s, rt: s.rt.Load(), ep: ep, id: "req", ident: metering.Identity{Account: "a", KeyID: "k"}, model: model, start: time.Now(),
		body: []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello"}]}`)}
	c.req.wantUsage = wantUsage
	src := &chunkedReader{data: data, step: readStep, err: endErr}
	resp := fasthttp.AcquireResponse()
	var hdr fasthttp.ResponseHeader
	sb := newStreamBody(c, s.rt.Load().upstreams["p"], resp, src, &hdr)
	sb.maxLine = 1 << 10 // exercise the bounded line assembly
	s.inflight.Add(1)
	var out []byte
	buf := make([]byte, writeStep)
	for i := 0; ; i++ {
		n, err := sb.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil || n == 0 || i > 2*len(data)+1<<12 { // each Read makes progress, and the relay adds little
			t.Fatalf("Read: %v after %d reads", err, i)
		}
	}
	_ = sb.CloseWithError(nil)
	return out
}

// relayFuzz relays data as an upstream stream and checks the properties.
func relayFuzz(t testing.TB, s *Server, model *pricing.Model, m *fuzzMeter, d, step byte, data []byte) {
	ep := fuzzDialects[int(d)%len(fuzzDialects)]
	var endErr error = io.EOF
	if d&0x20 != 0 {
		endErr = errors.New("connection reset")
	}
	out := relay(t, s, model, m, ep, d&0x10 != 0, data, 1+int(step)%97, 1+int(step)%300, endErr)

	if len(m.settles)+len(m.releases) != 1 {
		t.Fatalf("%d settles and %d releases: every stream ends exactly once", len(m.settles), len(m.releases))
	}
	var rec metering.Record
	if len(m.settles) == 1 {
		st := m.settles[0]
		if st.Cost < 0 {
			t.Fatalf("negative cost %d", st.Cost)
		}
		rec = st.Record
		// A chat stream ends with [DONE], unless the provider cut it after an
		// event too large to relay: then with the notice of that event.
		notice := dialectChat.streamError("event_too_large", msgEventTooLarge)
		if ep.dialect == dialectChat && !bytes.HasSuffix(out, strDoneEvent) && (rec.Reason != "event_too_large" || !bytes.HasSuffix(out, []byte(notice))) {
			t.Fatalf("a settled chat stream does not end with [DONE]: %q", tail(out))
		}
	} else {
		rec = m.releases[0]
		if !rec.Failed || !bytes.Contains(out, []byte("upstream_stream_cut")) {
			t.Fatalf("a released stream is not failed or the client was not told: %+v %q", rec, tail(out))
		}
	}
	checkUsageBounds(t, usage{Usage: pricing.Usage{Input: rec.Input, CachedInput: rec.CachedInput, Output: rec.Output}, Reasoning: rec.Reasoning}, 3)
	if rec.Estimated && rec.Output > 2*int64(len(data))+maxReportedTokens {
		t.Fatalf("estimated %d output tokens from %d bytes", rec.Output, len(data))
	}
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

// checkUsageBounds: nothing negative; input, cached and cache writes within
// inputs reports (a provider reports at most maxReportedTokens per field);
// reasoning within output.
func checkUsageBounds(t testing.TB, u usage, inputFields int64) {
	t.Helper()
	if u.Input < 0 || u.CachedInput < 0 || u.Output < 0 || u.Reasoning < 0 || u.CacheWrite < 0 || u.CacheWrite1h < 0 {
		t.Fatalf("negative usage %+v", u)
	}
	if u.Input+u.CachedInput+u.CacheWrite+u.CacheWrite1h > inputFields*maxReportedTokens {
		t.Fatalf("input %d + cached %d + cache writes %d, %d past any report", u.Input, u.CachedInput, u.CacheWrite, u.CacheWrite1h)
	}
	if u.Reasoning > u.Output {
		t.Fatalf("reasoning %d > output %d", u.Reasoning, u.Output)
	}
}

// fuzzUsage parses data and hands both the value and its "usage" member to fn.
func fuzzUsage(t *testing.T, data []byte, fn func(*fastjson.Value) (usage, bool), inputFields int64) {
	var p fastjson.Parser
	v, err := p.ParseBytes(data)
	if err != nil {
		return
	}
	for _, x := range []*fastjson.Value{v, v.Get("usage"), v.Get("response", "usage"), v.Get("message", "usage")} {
		u, ok := fn(x)
		if !ok {
			if u != (usage{}) {
				t.Fatalf("no usage but %+v", u)
			}
			continue
		}
		checkUsageBounds(t, u, inputFields)
		if u.Output > 2*maxReportedTokens {
			t.Fatalf("output %d", u.Output)
		}
	}
}

func usageSeeds(f *testing.F) {
	for _, s := range []string{
		`{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":1024}}`,
		`{"prompt_tokens":20,"completion_tokens":198,"total_tokens":623}`,
		`{"prompt_tokens":1984,"completion_tokens":120,"prompt_cache_hit_tokens":1920,"prompt_cache_miss_tokens":64}`,
		`{"usage":{"prompt_tokens":5,"completion_tokens":-3,"completion_tokens_details":{"reasoning_tokens":99999999999999}}}`,
		`{"input_tokens":328,"input_tokens_details":{"cached_tokens":256},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":380}`,
		`{"input_tokens":21,"cache_creation_input_tokens":188,"cache_read_input_tokens":2048,"output_tokens":393,"output_tokens_details":{"thinking_tokens":400}}`,
		`{"input_tokens":40,"cache_creation_input_tokens":3000,"cache_read_input_tokens":500,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000},"output_tokens":120}`,
		`{"prompt_tokens":1e3,"completion_tokens":"5","total_tokens":null}`,
	} {
		f.Add([]byte(s))
	}
}

func FuzzParseOpenAIUsage(f *testing.F) {
	usageSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzUsage(t, data, parseOpenAIUsage, 1) })
}

func FuzzParseResponsesUsage(f *testing.F) {
	usageSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzUsage(t, data, parseResponsesUsage, 1) })
}

func FuzzParseAnthropicUsage(f *testing.F) {
	usageSeeds(f)
	// input, cache reads, and cache writes: the larger of their total and
	// the 5m + 1h split (at most two fields).
	f.Fuzz(func(t *testing.T, data []byte) { fuzzUsage(t, data, parseAnthropicUsage, 4) })
}

// FuzzInspect runs the request inspector on every endpoint, then what
// follows it for an accepted body: the upstream rewrite (which must stay
// valid JSON naming the upstream model) and the estimate's text extraction
// and tokenizer.
func FuzzInspect(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`,
		`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[],"max_completion_tokens":3,"max_tokens":9}`,
		`{"model":"m","prompt":["ab",[1,2,3]],"max_tokens":1}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"Q"}]}],"instructions":"x","max_output_tokens":7}`,
		`{"model":"m","max_tokens":9,"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text","text":"R"}]}]}]}`,
		`{"model":"m","input":["a","b"]}`,
		`{"model":"","stream":"yes"}`,
		`[1,2,3]`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":[]}`,
		`{"model":"m","stream":true,"stream_options":{"include\u005fusage":false},"prompt":"p","messages":[]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image\u005furl":{"url":"https://x"}}]}],"a":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12,"kd":13,"ke":14,"kf":15,"kg":16,"k5":17}}`,
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x"}}]}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`,
		`{"model":"m","prompt":["a",[1,2],"c"],"input":[[1],[2]],"n":3,"max_tokens":4}`,
		`{"model":"m","input":[{"id":"msg_1"},{"type":"reasoning","id":"rs_1"}],"tools":[{"type":"mcp"}],"previous_response_id":null}`,
		`{"input":"moderate me"}`,
		`{"input":[{"type":"text","text":"T"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}`,
		`{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"warm the cache"}]}`,
	} {
		for ep := range fuzzEndpoints {
			f.Add(byte(ep), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, e byte, body []byte) {
		ep := fuzzEndpoints[int(e)%len(fuzzEndpoints)]
		var p fastjson.Parser
		r, err := inspect(ep, body)
		// The scanner against an independent strict reading (encoding/json):
		// the same documents are JSON, and a key given twice is refused with
		// the path the strict reading finds.
		dup, strictErr := jsonDuplicate(body)
		if len(body) > 0 && utf8.Valid(body) {
			switch {
			case err == errNotJSON:
				if strictErr == nil {
					t.Fatalf("refused as not JSON, but encoding/json reads it: %q", body)
				}
			case err == errTooDeep:
			case strictErr != nil:
				if err == nil {
					t.Fatalf("encoding/json refuses it (%v), inspect accepted it: %q", strictErr, body)
				}
			case dup != "":
				var br *badRequest
				if !errors.As(err, &br) || br.param != dup {
					t.Fatalf("%q is given twice; inspect answered %v: %q", dup, err, body)
				}
			}
		}
		if err != nil {
			var br *badRequest
			if !errors.As(err, &br) {
				t.Fatalf("inspect error %v is not a client error", err)
			}
			return
		}
		if len(r.model) == 0 || r.maxOut < 0 || (r.stream && (ep.dialect == dialectEmbeddings || ep.dialect == dialectModerations)) {
			t.Fatalf("accepted %q: %+v", body, r)
		}
		if ep.dialect == dialectMessages && r.maxOut < 1 && !r.noOutput {
			t.Fatalf("messages without max_tokens accepted: %q", body)
		}
		if r.prompts < 1 || r.choices < 1 {
			t.Fatalf("%d prompts, %d choices: %q", r.prompts, r.choices, body)
		}
		root, err := p.ParseBytes(body)
		if err != nil {
			t.Fatalf("accepted, but fastjson cannot parse it (%v): %q", err, body)
		}
		text, msgs, direct := requestText(nil, ep.dialect, root)
		if msgs < 0 || direct < 0 {
			t.Fatalf("requestText: %d messages %d direct", msgs, direct)
		}
		if len(text) <= 4<<10 {
			if n := countTokens(encO200K, text); n < 0 || n > 3*int64(len(text))+1 {
				t.Fatalf("%d tokens for %d bytes", n, len(text))
			}
		}
		out, _ := rewrite(nil, &r, ep, body, "upstream-model", 7)
		v, err := fastjson.ParseBytes(out)
		if err != nil {
			t.Fatalf("rewrite produced invalid JSON: %v\n%s", err, out)
		}
		if string(v.GetStringBytes("model")) != "upstream-model" && string(r.model) != "upstream-model" {
			t.Fatalf("rewrite lost the model: %s", out)
		}
		if dup, err := jsonDuplicate(out); err != nil || dup != "" {
			t.Fatalf("upstream body gives %q twice (%v): %s", dup, err, out)
		}
		if r.stream && (ep.dialect == dialectChat || ep.dialect == dialectCompletions) {
			if vals, err := membersAt(out, "stream_options.include_usage"); err != nil || len(vals) != 1 || vals[0] != true {
				t.Fatalf("upstream include_usage %v (%v), want exactly one true: %s", vals, err, out)
			}
		}
		// Everything else reaches the provider as the client wrote it.
		if a, b := keptMembers(t, body), keptMembers(t, out); a != b {
			t.Fatalf("upstream body changed more than the gateway's fields:\n%s\n%s", body, out)
		}
	})
}

// keptMembers lists the members of a body (path and value) but those
// rewrite may set.
func keptMembers(t *testing.T, b []byte) string {
	ms, err := jsonMembers(b)
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	var sb strings.Builder
	for _, m := range ms {
		switch {
		case m.path == "model", m.path == "max_tokens", m.path == "max_completion_tokens", m.path == "max_output_tokens",
			m.path == "stream_options", m.path == "stream_options.include_usage",
			strings.HasPrefix(m.path, "stream_options["): // an array there is replaced whole
			continue
		}
		fmt.Fprintf(&sb, "%s=%v\n", m.path, m.value)
	}
	return sb.String()
}

// BenchmarkRelayFuzz is one FuzzSSEReader execution on a fixture stream.
func BenchmarkRelayFuzz(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "fixtures", "openai_responses_stream.sse"))
	if err != nil {
		b.Fatal(err)
	}
	s, model, m := fuzzServer(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		relayFuzz(b, s, model, m, 2, 200, data)
	}
}
