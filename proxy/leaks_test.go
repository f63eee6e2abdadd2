package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// sseUpstream is a provider on 127.0.0.1 that answers every call with the
// stream write produces (flushed after each call of emit).
func sseUpstream(t *testing.T, write func(emit func(string) error)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		f := w.(http.Flusher)
		write(func(s string) error {
			if _, err := fmt.Fprint(w, s); err != nil {
				return err
			}
			f.Flush()
			return nil
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// withUpstream adds provider "raw" at srv and a model "raw-model" (tier
// pro) served by it, and applies more to the Options.
func withUpstream(t *testing.T, srv *httptest.Server, more func(*proxy.Options)) func(*proxy.Options) {
	return func(o *proxy.Options) {
		spec := testSpec()
		spec.Models = append(spec.Models, pricing.ModelSpec{ID: "raw-model", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
			Deployments: []pricing.DeploymentSpec{{Provider: "raw", Model: "x"}}})
		cat, err := pricing.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		o.Catalog = cat
		o.Providers = append(o.Providers, proxy.Provider{Name: "raw", Kind: "openai", BaseURL: srv.URL + "/v1", APIKey: "sk-raw"})
		if more != nil {
			more(o)
		}
	}
}

// generation polls the call's record until it is written (the call ended).
func (e *env) generation(key, id string, within time.Duration) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := e.do(http.MethodGet, "/v1/generation?id="+id, key, "")
		if r.status == 200 {
			return r.json(e.t)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("call %s not ended after %s: %d %s", id, within, r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStalledClientIsChargedBeforeItsHoldExpires: a client opens a stream
// of several MB with a tiny receive window and stops reading. fasthttp
// blocks writing to it and never calls the body's Read again, so neither
// the stream's deadline nor the upstream's idle timer was ever checked: the
// call outlived its hold (its credits spendable elsewhere) and its settle,
// whenever the client left, was capped to what was left. Each write is now
// bounded by the stream idle timeout and the stream's deadline: the call is
// settled — charged what was generated, not capped — while its hold lives.
func TestStalledClientIsChargedBeforeItsHoldExpires(t *testing.T) {
	chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("word ", 200) + `"}}]}` + "\n\n"
	up := sseUpstream(t, func(emit func(string) error) {
		for range (32 << 20) / len(chunk) { // 32 MB: past every socket buffer on the way
			if emit(chunk) != nil {
				return // the proxy cut the stream
			}
		}
		_ = emit("data: [DONE]\n\n")
	})
	for _, tc := range []struct {
		name   string
		limits proxy.Timeouts
		reason string
	}{
		// The client's write stalls longer than the stream idle timeout.
		{"idle", proxy.Timeouts{Request: time.Minute, FirstByte: 5 * time.Second, StreamIdle: time.Second, Stream: time.Minute}, "client_stalled"},
		// The stream's deadline comes first: it is kept though Read is not called.
		{"deadline", proxy.Timeouts{Request: time.Minute, FirstByte: 5 * time.Second, StreamIdle: time.Minute, Stream: 1500 * time.Millisecond}, "stream_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{holdTTL: 6 * time.Second, proxy: withUpstream(t, up, func(o *proxy.Options) { o.Timeouts = tc.limits })})
			key := e.account("acme", 100000)
			c, _, id := slowClient(t, e, key, "", 10*time.Second)
			defer c.Close()
			// The client stops reading here, with the connection open.
			g := e.generation(key, id, 20*time.Second)
			if g["failed"] != false || g["capped"] != false || g["estimated"] != true || g["cancelled"] != true || g["reason"] != tc.reason {
				t.Fatalf("record %v", g)
			}
			charged := credits(t, g["credits_charged"].(string))
			if charged <= 0 {
				t.Fatalf("nothing charged: %v", g)
			}
			a := e.balance("acme")
			if a.Reserved != 0 || a.Balance != 100000*1000-charged {
				t.Fatalf("balance %d reserved %d after a charge of %d", a.Balance, a.Reserved, charged)
			}
			e.assertLedger("acme")
		})
	}
}

// TestOversizeAnswerIsCharged: a non-streamed answer over MaxResponseBytes
// was generated (and billed) by the provider, though its usage cannot be
// read: it is charged what the call reserved, the most it could cost, and
// the client is told so with a 502 — it was released free, so a client
// asking for huge answers (n, logprobs, max_tokens) had them made for
// nothing. It is sent once, neither retried nor to a fallback.
func TestOversizeAnswerIsCharged(t *testing.T) {
	e, big, other := oversizeEnv(t, func(o *proxy.Options) { o.Retry = proxy.Retry{Attempts: 3} })
	key := e.account("big", 1000)
	m, err := e.opts.Catalog.Lookup("big-model")
	if err != nil {
		t.Fatal(err)
	}
	atMost := m.Cost(pricing.Usage{Output: 4000}, time.Now()) // the output the hold covers
	before := e.balance("big").Balance
	r := e.post("/v1/chat/completions", key, `{"model":"big-model","max_tokens":4000,"messages":`+msg("hi")+`}`)
	if r.status != http.StatusBadGateway || r.errorCode(t) != "response_too_large" || !strings.Contains(string(r.body), "charged") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	charged := credits(t, r.header.Get("X-Credits-Charged"))
	// newFlaky reports 5 output tokens: a charge on them would be far less.
	if charged < atMost {
		t.Fatalf("charged %d, want the hold (at least %d for its output)", charged, atMost)
	}
	if moved := before - e.balance("big").Balance; moved != charged {
		t.Fatalf("balance moved %d, charged %d", moved, charged)
	}
	g := e.do(http.MethodGet, "/v1/generation?id="+r.header.Get("X-Request-Id"), key, "").json(t)
	if g["reason"] != "response_too_large" || g["failed"] != false || g["estimated"] != true || g["status"] != float64(502) {
		t.Fatalf("record %v", g)
	}
	if big.calls.Load() != 1 || other.calls.Load() != 0 {
		t.Fatalf("sent %d times to the provider, %d to the fallback: once in all", big.calls.Load(), other.calls.Load())
	}
	e.assertLedger("big")
}

// TestOversizeEventIsCharged: a stream whose final event is larger than
// MaxEventBytes (a Responses image_generation's response.completed repeats
// every output) was cut as an upstream failure and released free, though
// it was delivered whole. The event is not relayed, but the call is charged:
// by the usage found at the event's end, or else an estimate.
func TestOversizeEventIsCharged(t *testing.T) {
	const maxEvent = 32 << 10
	image := strings.Repeat("iVBORw0KGgo", 90) // a part of an image, base64
	for _, tc := range []struct {
		name  string
		usage string // at the end of response.completed
		lines bool   // the event spread over many data lines, each short
	}{
		{"usage at its end", `,"usage":{"input_tokens":1234,"output_tokens":567,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1801}`, false},
		{"usage at its end, many lines", `,"usage":{"input_tokens":1234,"output_tokens":567,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1801}`, true},
		{"no usage", ``, false},
		{"an error event after it", `,"usage":{"input_tokens":1234,"output_tokens":567,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1801}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Past the limit, and past the tail kept (64 KiB).
			items := make([]string, 4*maxEvent/len(image))
			for i := range items {
				items[i] = fmt.Sprintf(`{"type":"image_generation_call","id":"ig_%d","status":"completed","result":"%s"}`, i, image)
				if i == 0 || i == len(items)/2 || i == len(items)-1 { // read through, and in the tail kept
					items[i] = fmt.Sprintf(`{"type":"web_search_call","id":"ws_%d","status":"completed","action":{"type":"search","query":"cats"}}`, i)
				}
			}
			sep := ","
			if tc.lines {
				sep = ",\ndata: " // data lines join with newlines: JSON between its tokens
			}
			data := `data: {"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","output":[` +
				strings.Join(items, sep) + sep + `{"type":"message","id":"m_1","role":"assistant","content":[{"type":"output_text","text":"Here it is."}]}]` +
				tc.usage + `,"metadata":{}}}` + "\n"
			up := sseUpstream(t, func(emit func(string) error) {
				_ = emit("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n")
				for i := range 20 {
					_ = emit(fmt.Sprintf("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"part %d of the answer \"}\n\n", i))
				}
				if tc.name == "an error event after it" { // the dropped event is an item, then the provider fails
					_ = emit("event: response.output_item.done\n" + strings.Replace(data, "response.completed", "response.output_item.done", 1) + "\n")
					_ = emit("event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\"}\n\n")
					return
				}
				_ = emit("event: response.completed\n" + data + "\n")
			})
			e := newEnv(t, envOpts{proxy: withUpstream(t, up, func(o *proxy.Options) { o.MaxEventBytes = maxEvent })})
			key := e.account("acme", 1000)
			before := e.balance("acme").Balance
			r := e.post("/v1/responses", key, `{"model":"raw-model","stream":true,"max_output_tokens":2000,"input":"draw a cat"}`)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			charged := credits(t, r.trailer.Get("X-Credits-Charged"))
			if moved := before - e.balance("acme").Balance; moved != charged || charged <= 0 {
				t.Fatalf("charged %d (trailer), balance moved %d", charged, moved)
			}
			if bytes.Contains(r.body, []byte(image)) || !bytes.Contains(r.body, []byte("event_too_large")) || !bytes.Contains(r.body, []byte("part 19")) {
				t.Fatalf("the deltas, then a notice instead of the event, were not what came: %.2000s", r.body)
			}
			g := e.do(http.MethodGet, "/v1/generation?id="+r.header.Get("X-Request-Id"), key, "").json(t)
			if g["failed"] != false || g["reason"] != "event_too_large" || g["web_search_requests"] != float64(3) {
				t.Fatalf("record %v: want 3 web searches", g)
			}
			if tc.usage != "" {
				m, err := e.opts.Catalog.Lookup("raw-model")
				if err != nil {
					t.Fatal(err)
				}
				if want := m.Cost(pricing.Usage{Input: 1234, Output: 567}, time.Now()); charged != want || g["estimated"] != false {
					t.Fatalf("charged %d, want %d by the usage at the event's end: %v", charged, want, g)
				}
			} else if g["estimated"] != true {
				t.Fatalf("record %v: want an estimate", g)
			}
			e.assertLedger("acme")
		})
	}
}

// TestUpstreamCutAfterAClientStallIsCharged: a client stops reading for a
// while; the provider, whose writes no longer drain, gives up and closes the
// stream; the client then reads what was buffered. The cut is the client's
// doing, not the provider's failure: the call is charged what was generated,
// not released as a cut stream is.
func TestUpstreamCutAfterAClientStallIsCharged(t *testing.T) {
	chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("word ", 200) + `"}}]}` + "\n\n"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for range (32 << 20) / len(chunk) {
			// The provider's own write timeout: it gives up on a stream
			// that stops draining.
			_ = rc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := fmt.Fprint(w, chunk); err != nil || rc.Flush() != nil {
				panic(http.ErrAbortHandler) // cut: no terminating chunk
			}
		}
		_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, envOpts{proxy: withUpstream(t, up, func(o *proxy.Options) {
		o.Timeouts = proxy.Timeouts{Request: 5 * time.Second, FirstByte: 5 * time.Second, StreamIdle: 20 * time.Second, Stream: time.Minute}
	})})
	key := e.account("acme", 100000)
	c, br, id := slowClient(t, e, key, "Connection: close\r\n", 30*time.Second)
	defer c.Close()
	time.Sleep(3 * time.Second) // the stall: the provider gives up meanwhile
	rest, _ := io.ReadAll(br)
	if !bytes.Contains(rest, []byte("upstream_cut_after_client_stall")) && !bytes.Contains(rest, []byte("upstream_stream_cut")) {
		t.Fatalf("the client was not told of the cut: ...%s", rest[max(0, len(rest)-500):])
	}
	g := e.generation(key, id, 10*time.Second)
	if g["failed"] != false || g["reason"] != "upstream_cut_after_client_stall" || g["estimated"] != true {
		t.Fatalf("record %v", g)
	}
	charged := credits(t, g["credits_charged"].(string))
	if a := e.balance("acme"); charged <= 0 || a.Balance != 100000*1000-charged {
		t.Fatalf("charged %d, balance %d", charged, a.Balance)
	}
	e.assertLedger("acme")
}

// TestStreamWritesOutliveTheWriteTimeout: the server's write timeout (the
// request timeout) bounds a whole answer, and each stream's write is bounded
// apart (by the stream idle timeout): a stream longer than the write timeout
// is not cut, and the next answer on the same connection, after the stream's
// last write deadline has passed, is written whole.
func TestStreamWritesOutliveTheWriteTimeout(t *testing.T) {
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) {
		o.Timeouts = proxy.Timeouts{Request: time.Second, FirstByte: 5 * time.Second, StreamIdle: time.Second, Stream: time.Minute}
	}})
	key := e.account("acme", 100)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	send := func(body string) *http.Response {
		t.Helper()
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// About 2.5 s of stream: past the write timeout.
	resp := send(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":` + msg("[mock:tokens=50,rate=20]") + `}`)
	b, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Contains(b, []byte("[DONE]")) || credits(t, resp.Trailer.Get("X-Credits-Charged")) <= 0 {
		t.Fatalf("stream cut: %v %q, trailer %v", err, b[max(0, len(b)-300):], resp.Trailer)
	}
	time.Sleep(1500 * time.Millisecond) // past the stream's last write deadline
	resp = send(`{"model":"gpt-4o-mini","messages":` + msg("hi") + `}`)
	if b, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the next answer on the connection: %d %v %s", resp.StatusCode, err, b)
	}
	e.assertLedger("acme")
}

// slowClient opens a connection whose receive buffer is 4 KiB (a client
// that reads slowly once it stops), sends a chat stream request for key
// (with extra header lines), and reads up to the call's request id, within
// readFor. The caller closes the connection.
func slowClient(t *testing.T, e *env, key, extra string, readFor time.Duration) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"raw-model","stream":true,"max_tokens":8000,"messages":` + msg("write a lot") + `}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", key, extra, len(body), body)
	br := bufio.NewReaderSize(c, 1024)
	_ = c.SetReadDeadline(time.Now().Add(readFor))
	id := ""
	for id == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			t.Fatalf("reading the headers: %v", err)
		}
		if v, ok := strings.CutPrefix(line, "X-Request-Id: "); ok {
			id = strings.TrimSpace(v)
		}
	}
	return c, br, id
}

// oversizeEnv serves "big-model" from deployment "big", with "other" as its
// fallback, both answering completions larger than MaxResponseBytes (64);
// more adds to the Options.
func oversizeEnv(t *testing.T, more func(*proxy.Options)) (e *env, big, other *flaky) {
	big, other = newFlaky(t, 200), newFlaky(t, 200)
	models := []pricing.ModelSpec{
		{ID: "big-model", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
			Deployments: []pricing.DeploymentSpec{{Provider: "big", Model: "x"}, {Provider: "other", Model: "y"}}},
	}
	e = newEnv(t, envOpts{proxy: withProvider(t, "big", big, models, func(o *proxy.Options) {
		o.Providers = append(o.Providers, proxy.Provider{Name: "other", Kind: "openai", BaseURL: other.srv.URL + "/v1", APIKey: "sk-other"})
		o.MaxResponseBytes = 64 // every completion of newFlaky is larger
		more(o)
	})})
	return e, big, other
}
