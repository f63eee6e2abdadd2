package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// The provider's usage in hangupUpstream's streams.
const (
	orphanPromptTokens = 5000
	orphanChunks       = 40 // each a completion token
)

// hangupUpstream is a provider on 127.0.0.1 that streams orphanChunks chat
// chunks pace apart, then as its end, by how: "usage" a usage chunk
// (orphanPromptTokens, orphanChunks) and [DONE]; "none" [DONE] alone;
// "error" an error event; "silent" nothing, holding the connection open until the proxy closes it.
// A Responses call gets a Responses stream, ending with its usage in
// response.completed whatever how. Each call sends on the channel whether
// it wrote its whole body.
func hangupUpstream(t *testing.T, pace time.Duration, how string) (*httptest.Server, <-chan bool) {
	t.Helper()
	full := make(chan bool, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		f := w.(http.Flusher)
		emit := func(s string) bool {
			if _, err := fmt.Fprint(w, s); err != nil {
				return false
			}
			f.Flush()
			return true
		}
		responses := strings.HasSuffix(r.URL.Path, "/responses")
		chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"word "}}]}` + "\n\n"
		if responses {
			chunk = "event: response.output_text.delta\n" + `data: {"type":"response.output_text.delta","delta":"word "}` + "\n\n"
			if !emit("event: response.created\n" + `data: {"type":"response.created","response":{"id":"resp_orphan","status":"in_progress","usage":null}}` + "\n\n") {
				full <- false
				return
			}
		}
		for i := range orphanChunks {
			if i > 0 {
				time.Sleep(pace)
			}
			if !emit(chunk) {
				full <- false
				return
			}
		}
		if responses {
			full <- emit("event: response.completed\n" + fmt.Sprintf(`data: {"type":"response.completed","response":{"id":"resp_orphan","status":"completed","usage":{"input_tokens":%d,"output_tokens":%d,"total_tokens":%d}}}`,
				orphanPromptTokens, orphanChunks, orphanPromptTokens+orphanChunks) + "\n\n")
			return
		}
		switch how {
		case "usage":
			if !emit(fmt.Sprintf(`data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n",
				orphanPromptTokens, orphanChunks, orphanPromptTokens+orphanChunks)) {
				full <- false
				return
			}
		case "error":
			full <- emit(`data: {"error":{"message":"overloaded","type":"server_error"}}` + "\n\n")
			return
		case "silent":
			<-r.Context().Done() // the proxy closed the connection
			full <- false
			return
		}
		full <- emit("data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv, full
}

// Chat bodies for raw-model: input the estimate sizes (text), and input it
// cannot (a file by id: the estimate is the model's whole window).
const (
	textBody = `{"model":"raw-model","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"write"}]}`
	fileBody = `{"model":"raw-model","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"summarize"},{"type":"file","file":{"file_id":"file-abc"}}]}]}`
	// A Responses call continuing a stored conversation: the estimate counts
	// only "go on".
	conversationBody = `{"model":"raw-model","stream":true,"max_output_tokens":1000,"conversation":"conv_1","input":"go on"}`
)

// hangUp starts a stream with body, reads its first event and hangs up. It
// returns the call's request id.
func (e *env) hangUp(key, body string) string {
	e.t.Helper()
	path := "/v1/chat/completions"
	if strings.Contains(body, `"input"`) {
		path = "/v1/responses"
	}
	req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		e.t.Error(err)
		return ""
	}
	defer resp.Body.Close() // hang up
	if resp.StatusCode != http.StatusOK {
		e.t.Errorf("status %d", resp.StatusCode)
		return ""
	}
	var buf []byte
	tmp := make([]byte, 512)
	for !bytes.Contains(buf, []byte("\n\n")) {
		n, err := resp.Body.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			e.t.Errorf("reading the first event: %v", err)
			break
		}
	}
	return resp.Header.Get("X-Request-Id")
}

// priceOf is raw-model's price of u now, in mc.
func (e *env) priceOf(u pricing.Usage) int64 {
	e.t.Helper()
	m, err := e.opts.Catalog.Lookup("raw-model")
	if err != nil {
		e.t.Fatal(err)
	}
	return m.Cost(u, time.Now())
}

func tokensOf(g map[string]any, k string) int64 {
	return int64(g["tokens"].(map[string]any)[k].(float64))
}

// TestHangupOnUnsizedInputChargesTheProviderUsage: a client that hangs up
// on a stream before its usage came was charged an estimate; for a call
// whose input the body does not size (a file by id) that is the model's
// whole window, here 25 times what the provider bills. Such a stream is now
// read on in the background to the provider's usage, which is the charge;
// when none comes it is the estimate, as before. A call whose input the
// estimate sizes is cut at once, as before: the provider stops generating.
func TestHangupOnUnsizedInputChargesTheProviderUsage(t *testing.T) {
	for _, tc := range []struct {
		name, body, how string
		orphan          bool // read on after the hangup
		full            bool // the provider wrote its whole stream
		estimated       bool
		input           int64 // the record's input tokens; 0: not checked
	}{
		{"file by id, usage at the end", fileBody, "usage", true, true, false, orphanPromptTokens},
		{"file by id, no usage", fileBody, "none", true, true, true, 128000},
		{"file by id, provider goes silent", fileBody, "silent", true, false, true, 128000},
		// The provider's error after the client left: charged as at the
		// hangup, never released free.
		{"file by id, error event", fileBody, "error", true, true, true, 128000},
		{"responses conversation, usage at the end", conversationBody, "usage", true, true, false, orphanPromptTokens},
		{"text", textBody, "usage", false, false, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, full := hangupUpstream(t, 20*time.Millisecond, tc.how)
			e := newEnv(t, envOpts{proxy: withUpstream(t, up, func(o *proxy.Options) {
				o.Timeouts = proxy.Timeouts{Request: 5 * time.Second, FirstByte: 5 * time.Second, StreamIdle: time.Second, Stream: time.Minute}
			})})
			orphans := make(chan struct{}, 1)
			proxy.OnOrphan(e.srv, func() { orphans <- struct{}{} })
			key := e.account("acme", 100000)
			before := e.balance("acme").Balance
			id := e.hangUp(key, tc.body)
			if got := <-full; got != tc.full {
				t.Fatalf("the provider wrote its whole stream: %v, want %v", got, tc.full)
			}
			g := e.generation(key, id, 20*time.Second)
			select {
			case <-orphans:
				if !tc.orphan {
					t.Fatal("the stream was read on after the client left")
				}
			default:
				if tc.orphan {
					t.Fatal("the stream was not read on after the client left")
				}
			}
			if g["cancelled"] != true || g["failed"] != false || g["estimated"] != tc.estimated || g["reason"] != "client_disconnected" {
				t.Fatalf("record %v", g)
			}
			if tc.input != 0 && tokensOf(g, "input") != tc.input {
				t.Fatalf("input tokens %d, want %d", tokensOf(g, "input"), tc.input)
			}
			charged := credits(t, g["credits_charged"].(string))
			if !tc.estimated {
				if out := tokensOf(g, "output"); out != orphanChunks {
					t.Fatalf("output tokens %d, want the provider's %d", out, orphanChunks)
				}
				if want := e.priceOf(pricing.Usage{Input: orphanPromptTokens, Output: orphanChunks}); charged != want {
					t.Fatalf("charged %d mc, want the provider's usage at %d mc", charged, want)
				}
			}
			if moved := before - e.balance("acme").Balance; moved != charged || charged <= 0 {
				t.Fatalf("balance moved by %d mc, charged %d", moved, charged)
			}
			e.assertLedger("acme")
		})
	}
}

// TestShutdownCutsAnOrphanStream: a stream read on after its client left is
// a call in flight: Shutdown past its deadline cuts it, and it is charged
// the estimate at once rather than left to run to its end.
func TestShutdownCutsAnOrphanStream(t *testing.T) {
	t.Run("context done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		shutdownCutsOrphan(t, ctx)
	})
	// With time left: an orphan holds no connection, so Shutdown may find
	// none open before its context ends; it must still cut the orphan
	// then, not wait for the stream's own end. (Here fasthttp happened to
	// wait out the context too; the wait on calls in flight is now bounded
	// by the context itself, as review asked.)
	t.Run("time left", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		shutdownCutsOrphan(t, ctx)
	})
}

func shutdownCutsOrphan(t *testing.T, ctx context.Context) {
	up, full := hangupUpstream(t, 250*time.Millisecond, "usage") // 10 s: only a cut ends it within the test
	e := newEnv(t, envOpts{proxy: withUpstream(t, up, nil)})
	orphans := make(chan struct{}, 1)
	proxy.OnOrphan(e.srv, func() { orphans <- struct{}{} })
	key := e.account("acme", 100000)
	id := e.hangUp(key, fileBody)
	select {
	case <-orphans:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream was not read on after the client left")
	}
	e.client.CloseIdleConnections() // no connection open: the orphan alone keeps a call in flight
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if <-full {
		t.Fatal("the provider wrote its whole stream: Shutdown did not cut it")
	}
	if n := e.srv.InFlight(); n != 0 {
		t.Fatalf("%d calls in flight after Shutdown", n)
	}
	// The call was settled before Shutdown returned (it was in flight).
	e.sync()
	entries, err := e.store.Ledger(context.Background(), "acme", metering.LedgerQuery{Limit: 1})
	if err != nil || len(entries) != 1 {
		t.Fatalf("ledger: %v %v", entries, err)
	}
	f := entries[0].Fields
	if f["request_id"] != id || f["reason"] != "client_disconnected" || f["estimated"] != "1" || f["cancelled"] != "1" || f["input_tokens"] != "128000" {
		t.Fatalf("ledger entry %v", f)
	}
	e.assertLedger("acme")
}

// TestConcurrentHangups: many clients hang up at once, on streams read on
// and on streams cut; every call is settled once and the books balance.
func TestConcurrentHangups(t *testing.T) {
	up, full := hangupUpstream(t, 5*time.Millisecond, "usage")
	e := newEnv(t, envOpts{proxy: withUpstream(t, up, nil)})
	key := e.account("acme", 1000000)
	const n = 16
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := textBody
			if i%2 == 0 {
				body = fileBody
			}
			ids[i] = e.hangUp(key, body)
		}()
	}
	wg.Wait()
	for range n {
		<-full
	}
	for i, id := range ids {
		g := e.generation(key, id, 20*time.Second)
		if g["reason"] != "client_disconnected" || g["estimated"] != (i%2 != 0) {
			t.Fatalf("call %d: record %v", i, g)
		}
	}
	e.assertLedger("acme")
}
