package proxy_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/proxy"
)

func TestStreamCutByUpstreamIsFree(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	for _, tc := range []struct{ name, path, body string }{
		{"chat", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":` + msg("[mock:cut=3]") + `}`},
		{"responses", "/v1/responses", `{"model":"gpt-4o-mini","stream":true,"input":"[mock:cut=2]"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.balance("acme").Balance
			r := e.post(tc.path, key, tc.body)
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			if !strings.Contains(string(r.body), "upstream_stream_cut") || strings.Contains(string(r.body), "[DONE]") {
				t.Fatalf("client not told of the cut: %s", r.body)
			}
			if got := r.trailer.Get("X-Credits-Charged"); got != "0.000" {
				t.Fatalf("trailer charged %q, want 0.000", got)
			}
			if after := e.balance("acme"); after.Balance != before || after.Reserved != 0 {
				t.Fatalf("balance %d → %d reserved %d", before, after.Balance, after.Reserved)
			}
			g := e.do(http.MethodGet, "/v1/generation?id="+r.header.Get("X-Request-Id"), key, "").json(t)
			if g["failed"] != true || g["streamed"] != true || g["credits_charged"] != "0.000" {
				t.Fatalf("record %v", g)
			}
		})
	}
	e.assertLedger("acme")
}

func TestMissingUsageIsEstimated(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	for _, body := range []string{
		`{"model":"gpt-4o-mini","messages":` + msg("[mock:nousage] hello there") + `}`,
		`{"model":"gpt-4o-mini","stream":true,"messages":` + msg("[mock:nousage] hello there") + `}`,
	} {
		before := e.balance("acme").Balance
		r := e.post("/v1/chat/completions", key, body)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		charged := credits(t, r.header.Get("X-Credits-Charged")+r.trailer.Get("X-Credits-Charged"))
		if charged <= 0 || before-e.balance("acme").Balance != charged {
			t.Fatalf("charged %d, balance moved %d", charged, before-e.balance("acme").Balance)
		}
		g := e.do(http.MethodGet, "/v1/generation?id="+r.header.Get("X-Request-Id"), key, "").json(t)
		if g["estimated"] != true || g["failed"] != false {
			t.Fatalf("record %v", g)
		}
		tokens := g["tokens"].(map[string]any)
		// The mock answers 16 words "tokN"; the estimate must see them.
		if tokens["output"].(float64) < 8 || tokens["input"].(float64) < 1 {
			t.Fatalf("estimate ignores what was delivered: %v", tokens)
		}
		e.sync()
		entries, err := e.store.Ledger(context.Background(), "acme", metering.LedgerQuery{Limit: 1})
		if err != nil || len(entries) != 1 || entries[0].Fields["estimated"] != "1" {
			t.Fatalf("ledger entry not marked estimated: %+v %v", entries, err)
		}
	}
	e.assertLedger("acme")
}

// TestClientDisconnectChargesWhatWasGenerated: a client hangs up after three
// chunks; the upstream is closed and the call is charged for what was
// generated until then — not for the whole answer, and not nothing.
func TestClientDisconnectChargesWhatWasGenerated(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	body := `{"model":"gpt-4o-mini","stream":true,"messages":` + msg("[mock:tokens=400,rate=40]") + `}`
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Header.Get("X-Request-Id")
	sc := bufio.NewScanner(resp.Body)
	chunks := 0
	for chunks < 3 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			chunks++
		}
	}
	resp.Body.Close() // hang up
	if chunks != 3 {
		t.Fatalf("read %d chunks", chunks)
	}
	g := e.generation(key, id, 10*time.Second) // the cancelled call, once settled
	if g["cancelled"] != true || g["failed"] != false {
		t.Fatalf("record %v", g)
	}
	out := g["tokens"].(map[string]any)["output"].(float64)
	if out < 1 || out > 200 {
		t.Fatalf("charged for %v output tokens: not what was generated before the hang-up", out)
	}
	if credits(t, g["credits_charged"].(string)) <= 0 {
		t.Fatalf("nothing charged: %v", g)
	}
	e.assertLedger("acme")
}

// TestClientDisconnectChargesPDFPages: a chat stream with a 3-page PDF is cut
// by the client before the provider's usage (OpenAI sends input usage only
// at the end): the estimate charges the PDF's pages, not just the text
// beside it.
func TestClientDisconnectChargesPDFPages(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 1_000_000)
	pdf := base64.StdEncoding.EncodeToString(proxy.MinimalPDF(3))
	body := `{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":[` +
		`{"type":"text","text":"[mock:tokens=400,rate=40] Summarize."},` +
		`{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,` + pdf + `"}}]}]}`
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	before := e.balance("acme").Balance
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	id := resp.Header.Get("X-Request-Id")
	sc := bufio.NewScanner(resp.Body)
	for chunks := 0; chunks < 3 && sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "data:") {
			chunks++
		}
	}
	resp.Body.Close()                          // hang up before the usage chunk
	g := e.generation(key, id, 10*time.Second) // the cancelled call, once settled
	if g["cancelled"] != true || g["estimated"] != true || g["reason"] != "client_disconnected" {
		t.Fatalf("record %v", g)
	}
	in := int64(g["tokens"].(map[string]any)["input"].(float64))
	if pages := int64(3 * proxy.PDFPageTokens); in < pages || in > pages+40 {
		t.Fatalf("charged %d input tokens; want the PDF's 3 pages (%d) and a few of text", in, pages)
	}
	if charged := credits(t, g["credits_charged"].(string)); charged <= 0 || before-e.balance("acme").Balance != charged {
		t.Fatalf("charged %d, balance moved %d", charged, before-e.balance("acme").Balance)
	}
	e.assertLedger("acme")
}
