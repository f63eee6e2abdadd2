package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/proxy"
)

const (
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTracestate  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
)

// TestClientRequestIDAndTrace: the caller's X-Request-Id is echoed (in
// X-Client-Request-Id; X-Request-Id stays Tollgate's id), its trace context
// reaches the provider, and the cost record keeps both with the provider's
// own request id — streamed or not.
func TestClientRequestIDAndTrace(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("trace", 1000)
	for _, c := range []struct {
		name, body string
	}{
		{"plain", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`},
		{"stream", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			clientID := "client-" + c.name + ".42:a/b+c=d@e"
			r := e.post("/v1/chat/completions", key, c.body,
				"X-Request-Id", clientID, "Traceparent", testTraceparent, "Tracestate", testTracestate)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			own := r.header.Get("X-Request-Id")
			if !strings.HasPrefix(own, "req_") || own == clientID {
				t.Fatalf("X-Request-Id %q: want Tollgate's own id", own)
			}
			if got := r.header.Get("X-Client-Request-Id"); got != clientID {
				t.Fatalf("X-Client-Request-Id %q, want %q", got, clientID)
			}
			_, _, hdr := e.mock.LastRequest()
			if hdr["Traceparent"] != testTraceparent || hdr["Tracestate"] != testTracestate {
				t.Fatalf("provider saw traceparent %q tracestate %q", hdr["Traceparent"], hdr["Tracestate"])
			}
			e.sync()
			g := e.do(http.MethodGet, "/v1/generation?id="+own, key, "")
			if g.status != 200 {
				t.Fatalf("generation: %d %s", g.status, g.body)
			}
			m := g.json(t)
			if m["client_request_id"] != clientID || m["traceparent"] != testTraceparent || m["tracestate"] != testTracestate {
				t.Fatalf("generation ids: %s", g.body)
			}
			if up, _ := m["upstream_request_id"].(string); !strings.HasPrefix(up, "req_mock_") {
				t.Fatalf("generation upstream_request_id %v: %s", m["upstream_request_id"], g.body)
			}
		})
	}
}

// TestClientRequestIDRefused: an id that could break a header or a log line
// (too long, odd characters) and a malformed traceparent are dropped: not
// echoed, not forwarded, not recorded; the call goes through.
func TestClientRequestIDRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("badids", 1000)
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`
	for _, c := range []struct{ id, traceparent string }{
		{strings.Repeat("a", 129), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"},
		{`x"},"account":"admin`, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{"<script>", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"tab\tid", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
	} {
		r := e.post("/v1/chat/completions", key, body, "X-Request-Id", c.id, "Traceparent", c.traceparent, "Tracestate", "a=b")
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if got := r.header.Get("X-Client-Request-Id"); got != "" {
			t.Errorf("id %q echoed as %q", c.id, got)
		}
		_, _, hdr := e.mock.LastRequest()
		if hdr["Traceparent"] != "" || hdr["Tracestate"] != "" {
			t.Errorf("traceparent %q forwarded as %q (tracestate %q)", c.traceparent, hdr["Traceparent"], hdr["Tracestate"])
		}
		e.sync()
		g := e.do(http.MethodGet, "/v1/generation?id="+r.header.Get("X-Request-Id"), key, "")
		m := g.json(t)
		if m["client_request_id"] != nil || m["traceparent"] != nil {
			t.Errorf("recorded %v %v: %s", m["client_request_id"], m["traceparent"], g.body)
		}
	}
}

// logBuffer is a zap JSON core's sink that tests read line by line.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) Sync() error    { return nil }
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// callLines returns the "call" log lines, decoded.
func (l *logBuffer) callLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, sc.Bytes())
		}
		if m["msg"] == "call" {
			out = append(out, m)
		}
	}
	return out
}

// TestCallLogLine: one Info line per metered call, failed and refused ones
// included, with its ids, tokens, credits and timings — and never the API
// key, the provider's key or the prompt.
func TestCallLogLine(t *testing.T) {
	for _, mode := range []string{"", proxy.LogCallsAll, proxy.LogCallsErrors, proxy.LogCallsNone} {
		t.Run("mode="+mode, func(t *testing.T) {
			logs := &logBuffer{}
			e := newEnv(t, envOpts{proxy: func(o *proxy.Options) {
				o.Logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), logs, zap.DebugLevel))
				o.LogCalls = mode
			}})
			key := e.account("logged", 1000)
			const prompt = "PROMPT-TEXT-that-must-never-be-logged"
			ok := e.post("/v1/chat/completions", key,
				`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`+prompt+`"}],"max_tokens":8}`,
				"X-Request-Id", "my-call-1", "Traceparent", testTraceparent)
			if ok.status != 200 {
				t.Fatalf("status %d: %s", ok.status, ok.body)
			}
			st := e.post("/v1/chat/completions", key,
				`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`+prompt+`"}],"max_tokens":8,"stream":true}`)
			if st.status != 200 {
				t.Fatalf("stream status %d: %s", st.status, st.body)
			}
			bad := e.post("/v1/chat/completions", key+"x", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`+prompt+`"}]}`)
			unknown := e.post("/v1/chat/completions", key, `{"model":"no-such-model","messages":[{"role":"user","content":"`+prompt+`"}]}`)
			if bad.status != 401 || unknown.status != 404 {
				t.Fatalf("statuses %d %d", bad.status, unknown.status)
			}
			e.sync()
			want := map[string]int{"": 4, proxy.LogCallsAll: 4, proxy.LogCallsErrors: 2, proxy.LogCallsNone: 0}[mode]
			lines := logs.callLines(t)
			for deadline := time.Now().Add(5 * time.Second); len(lines) < want && time.Now().Before(deadline); lines = logs.callLines(t) {
				time.Sleep(5 * time.Millisecond) // a stream's line comes as its body is closed
			}
			if len(lines) != want {
				t.Fatalf("%d call lines, want %d:\n%s", len(lines), want, logs)
			}
			if all := logs.String(); strings.Contains(all, key) || strings.Contains(all, "sk-upstream-secret") ||
				strings.Contains(all, prompt) || strings.Contains(all, "Bearer") {
				t.Fatalf("the log holds a key or the prompt:\n%s", all)
			}
			if want < 4 {
				for _, l := range lines {
					if s, _ := l["status"].(float64); s < 400 {
						t.Errorf("mode %q logged a call answered %v", mode, s)
					}
				}
				return
			}
			first := lines[0]
			for k, v := range map[string]any{
				"level": "info", "request_id": ok.header.Get("X-Request-Id"), "client_request_id": "my-call-1",
				"account": "logged", "model": "gpt-4o-mini", "provider": "openai", "status": 200.0, "stream": false,
				"endpoint": "chat.completions", "traceparent": testTraceparent,
			} {
				if first[k] != v {
					t.Errorf("field %s = %v, want %v (%v)", k, first[k], v, first)
				}
			}
			for _, k := range []string{"key_id", "upstream_request_id", "credits"} {
				if s, _ := first[k].(string); s == "" {
					t.Errorf("field %s empty: %v", k, first)
				}
			}
			if first["credits"] != ok.header.Get("X-Credits-Charged") {
				t.Errorf("credits %v, charged %q", first["credits"], ok.header.Get("X-Credits-Charged"))
			}
			for _, k := range []string{"input_tokens", "output_tokens", "latency", "ttfb"} {
				if v, _ := first[k].(float64); v <= 0 {
					t.Errorf("field %s = %v", k, first[k])
				}
			}
			for _, k := range []string{"cached_input_tokens", "cache_write_tokens", "reasoning_tokens"} {
				if _, ok := first[k]; !ok {
					t.Errorf("field %s missing", k)
				}
			}
			if lines[1]["stream"] != true || lines[1]["status"] != 200.0 {
				t.Errorf("stream line: %v", lines[1])
			}
			if lines[2]["status"] != 401.0 || lines[3]["status"] != 404.0 || lines[3]["model"] != "" {
				t.Errorf("refused calls' lines: %v / %v", lines[2], lines[3])
			}
		})
	}
}

// countingObserver records what the proxy tells an Observer.
type countingObserver struct {
	mu       sync.Mutex
	calls    []proxy.CallEvent
	upstream map[[2]string]int
}

func (o *countingObserver) CallEnded(ev proxy.CallEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, ev)
}

func (o *countingObserver) UpstreamFailed(provider, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.upstream == nil {
		o.upstream = map[[2]string]int{}
	}
	o.upstream[[2]string{provider, reason}]++
}

// TestObserverEveryCall: every call to a metered endpoint is observed once
// with the status its caller got — served, refused before forwarding,
// failed upstream, served by a second deployment after the first failed.
func TestObserverEveryCall(t *testing.T) {
	obs := &countingObserver{}
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) { o.Observer = obs }})
	key := e.account("observed", 1000)
	for _, c := range []struct {
		name, path, key, body string
		status                int
		model, provider       string
	}{
		{"served", "/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`, 200, "gpt-4o-mini", "openai"},
		{"stream", "/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}`, 200, "gpt-4o-mini", "openai"},
		{"bad key", "/v1/chat/completions", "tg-nope", `{"model":"gpt-4o-mini","messages":[]}`, 401, "", ""},
		{"unknown model", "/v1/chat/completions", key, `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, 404, "", ""},
		{"provider down", "/v1/chat/completions", key, `{"model":"dead-model","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`, 502, "dead-model", ""},
		{"fallback", "/v1/chat/completions", key, `{"model":"fallback-model","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`, 200, "fallback-model", "openai"},
		{"embeddings", "/v1/embeddings", key, `{"model":"text-embedding-3-small","input":"hi"}`, 200, "text-embedding-3-small", "openai"},
	} {
		before := len(obs.snapshot())
		r := e.post(c.path, c.key, c.body)
		if r.status != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
		}
		e.sync()
		calls := obs.snapshot()
		// A stream is observed when fasthttp closes its body, just after
		// the client has read the end.
		for deadline := time.Now().Add(5 * time.Second); len(calls) == before && time.Now().Before(deadline); calls = obs.snapshot() {
			time.Sleep(5 * time.Millisecond)
		}
		if len(calls) != before+1 {
			t.Fatalf("%s: %d events, want 1", c.name, len(calls)-before)
		}
		ev := calls[len(calls)-1]
		model := ""
		if ev.Model != nil {
			model = ev.Model.ID
		}
		if ev.Status != c.status || model != c.model || ev.Provider != c.provider || ev.Latency <= 0 {
			t.Errorf("%s: event %+v", c.name, ev)
		}
		if c.status == 200 && (ev.Charged <= 0 || ev.TTFB <= 0 || ev.Input <= 0) {
			t.Errorf("%s: served call's event %+v", c.name, ev)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if n := obs.upstream[[2]string{"down", proxy.ReasonNetwork}]; n != 2 {
		t.Errorf("upstream failures of the down provider: %v, want 2 (dead-model, then fallback-model's first deployment)", obs.upstream)
	}
}

func (o *countingObserver) snapshot() []proxy.CallEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]proxy.CallEvent(nil), o.calls...)
}
