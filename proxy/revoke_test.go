package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// A chargeback while two replicas serve the account, with streams in flight
// on both: every replica answers 402 to new calls within about a second, the
// streams in flight finish and are charged in full, and the books add up.
func TestChargebackStopsEveryReplica(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	if _, err := e.store.CreateAccount(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// 200 credits bought through a checkout, so that a dispute can take them back.
	if err := e.store.SaveCheckout(ctx, metering.Checkout{SessionID: "cs_1", Account: "acme", Pack: "p", Credits: 200_000, PriceMinor: 2000, Currency: "usd"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.FulfilCheckout(ctx, metering.Fulfilment{Account: "acme", SessionID: "cs_1", PaymentID: "pi_1", AmountMinor: 2000, Currency: "usd"}); err != nil {
		t.Fatal(err)
	}
	_, key, err := e.store.CreateKey(ctx, "acme", "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	second, secondLease := e.replica("second")
	urls := []string{e.url, second}
	// Calls without max_tokens hold the most they may cost (16K output
	// tokens): each replica's lease then covers a third of the account, far
	// more than the small calls cost — what a stale lease could go on
	// spending after the chargeback.
	call := func(url, content string, stream bool) *http.Response {
		body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%v,"messages":%s}`, stream, msg(content))
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// Both replicas serve (and so lease), then start two slow streams each.
	for _, u := range urls {
		resp := call(u, "warm up [mock:tokens=5]", false)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("warm-up call: %d", resp.StatusCode)
		}
	}
	type done struct {
		status  int
		id      string
		charged string
		events  int
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		streams []done
	)
	started := make(chan struct{}, 4)
	for _, u := range urls {
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp := call(u, "stream [mock:tokens=80,rate=40]", true)
				defer resp.Body.Close()
				started <- struct{}{}
				sc := bufio.NewScanner(resp.Body)
				n := 0
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "data: {") {
						n++
					}
				}
				mu.Lock()
				streams = append(streams, done{resp.StatusCode, resp.Header.Get("X-Request-Id"), resp.Trailer.Get("X-Credits-Charged"), n})
				mu.Unlock()
			}()
		}
	}
	for i := 0; i < 4; i++ {
		<-started
	}
	// The warm-up calls' charges are in (the streams' are not: they run).
	for _, l := range []interface{ Flush(context.Context) error }{e.lease, secondLease} {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The whole purchase is disputed while the streams run.
	rv, err := e.store.ReversePurchase(ctx, metering.Reversal{Account: "acme", PaymentID: "pi_1", Kind: metering.Dispute, Reference: "dispute:dp_1", Minor: 2000})
	if err != nil || !rv.Applied || rv.BalanceAfter >= 0 {
		t.Fatalf("dispute: %+v, %v; want the balance below zero", rv, err)
	}
	// A second later (the streams still run: no batch of theirs has told
	// the replicas), the first new call on each replica is refused.
	time.Sleep(time.Second)
	for i, u := range urls {
		resp := call(u, "after the dispute [mock:tokens=5]", false)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPaymentRequired {
			t.Fatalf("replica %d answered %d a second after the dispute, want 402", i, resp.StatusCode)
		}
	}
	mu.Lock()
	if len(streams) != 0 {
		t.Fatalf("%d streams ended before the check; they must be in flight", len(streams))
	}
	mu.Unlock()
	wg.Wait()
	// A leased call's charge and cost record reach Redis with its lease's
	// next batch: flush both before reading the records.
	for _, l := range []interface{ Flush(context.Context) error }{e.lease, secondLease} {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range streams {
		// The whole answer (80 tokens), charged in full: its usage at the
		// core rates (1 mc per input token, 2 per output token).
		if s.status != 200 || s.events < 80 || s.charged == "" {
			t.Fatalf("stream in flight during the dispute: %+v; want it finished and charged", s)
		}
		g := e.do(http.MethodGet, "/v1/generation?id="+s.id, key, "").json(t)
		tok := g["tokens"].(map[string]any)
		in, out := int64(tok["input"].(float64)), int64(tok["output"].(float64))
		if want := in*1 + out*2; out != 80 || credits(t, s.charged) != want || credits(t, g["credits_charged"].(string)) != want {
			t.Fatalf("stream %s: charged %s (record %v) for %d in, %d out; want %d mc", s.id, s.charged, g["credits_charged"], in, out, want)
		}
	}
	if err := secondLease.Return(ctx); err != nil {
		t.Fatal(err)
	}
	e.assertLedger("acme")
	if a := e.balance("acme"); a.Balance >= 0 {
		t.Fatalf("balance %d after the dispute of everything bought", a.Balance)
	}
}
