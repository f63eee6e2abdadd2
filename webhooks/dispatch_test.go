package webhooks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/metering"
)

const secret = "endpoint-secret-0123456789"

// receiver is a real HTTP endpoint on 127.0.0.1 that verifies each
// delivery's signature and fails the first fail deliveries of each event.
type receiver struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	fail int
	got  map[string]int // event id → deliveries received (answered or not)
	ok   map[string]int // event id → deliveries answered 2xx
	last map[string]map[string]any
}

func newReceiver(t *testing.T, fail int) *receiver {
	r := &receiver{t: t, fail: fail, got: map[string]int{}, ok: map[string]int{}, last: map[string]map[string]any{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := Verify(req.Header.Get(SignatureHeader), body, secret, time.Minute); err != nil {
			t.Errorf("delivery with a bad signature: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("delivery body %s: %v", body, err)
		}
		id, _ := ev["id"].(string)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got[id]++
		r.last[id] = ev
		if r.got[id] <= r.fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.ok[id]++
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) counts() (map[string]int, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, o := map[string]int{}, map[string]int{}
	for k, v := range r.got {
		g[k] = v
	}
	for k, v := range r.ok {
		o[k] = v
	}
	return g, o
}

// start runs a Dispatcher (a billing process) until the returned stop is called.
func start(t *testing.T, q Queue, o Options) (stop func()) {
	o.Queue = q
	o.Logger = zaptest.NewLogger(t)
	if o.Poll == 0 {
		o.Poll = 10 * time.Millisecond
	}
	if o.FirstRetry == 0 {
		o.FirstRetry = 50 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = New(o).Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A balance crossing its threshold is delivered signed to the endpoints
// that ask for it, retried after the receiver's failures, and recorded.
func TestDeliverSignedAndRetried(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	ctx := context.Background()
	e.Account(t, "acme", 10_000)
	if err := e.St.SetLowBalance(ctx, "acme", 5000); err != nil {
		t.Fatal(err)
	}
	flaky := newReceiver(t, 2)
	other := newReceiver(t, 0) // asks only for purchases
	stop := start(t, e.St, Options{Endpoints: []config.Webhook{
		{URL: flaky.srv.URL + "/hook", Secret: secret, Events: []string{"balance.low"}},
		{URL: other.srv.URL, Secret: secret, Events: []string{"credits.purchased"}},
	}})
	defer stop()
	h, err := e.St.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "c1", Fixed: 6000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Settle(ctx, metering.Settlement{Account: "acme", HoldID: h.ID, Cost: 6000, Record: metering.Record{RequestID: "c1", Model: "m"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the balance.low delivery", func() bool { _, ok := flaky.counts(); return len(ok) == 1 })
	waitFor(t, "the purchase delivery", func() bool { _, ok := other.counts(); return len(ok) == 1 })
	got, ok := flaky.counts()
	for id, n := range got {
		if n != 3 || ok[id] != 1 {
			t.Errorf("event %s: %d deliveries (%d answered 2xx), want 3 and 1", id, n, ok[id])
		}
		ev := flaky.last[id]
		data, _ := ev["data"].(map[string]any)
		if ev["type"] != "balance.low" || ev["account"] != "acme" || data["balance"] != 4.0 || data["threshold"] != 5.0 {
			t.Errorf("body %v", ev)
		}
	}
	ds, err := e.St.Deliveries(ctx, 10)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Deliveries = %+v, %v", ds, err)
	}
	for _, d := range ds {
		want := 1
		if d.Type == "balance.low" {
			want = 3
		}
		if d.State != metering.DeliveryDelivered || d.Attempts != want || d.LastCode != 200 {
			t.Errorf("delivery %+v", d)
		}
	}
}

// An event read by a billing process that died before scheduling it, and
// one still in its account's outbox, are both delivered once by the next
// process.
func TestNoEventLostAcrossRestart(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	ctx := context.Background()
	rcv := newReceiver(t, 0)
	eps := []config.Webhook{{URL: rcv.srv.URL, Secret: secret}}

	// The first process moves and reads the purchase, then dies.
	e.Account(t, "a1", 1000)
	if err := e.St.EnsureEventGroup(ctx, Group); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.MoveEvents(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if evs, err := e.St.ReadEvents(ctx, Group, "dead-process", 10, 0); err != nil || len(evs) != 1 {
		t.Fatalf("ReadEvents = %v, %v", evs, err)
	}
	// A second purchase while no process runs: it waits in the outbox
	// (its mark is in Redis too).
	e.Account(t, "a2", 2000)
	time.Sleep(50 * time.Millisecond)

	stop := start(t, e.St, Options{Endpoints: eps, ClaimIdle: 200 * time.Millisecond})
	waitFor(t, "both deliveries", func() bool { _, ok := rcv.counts(); return len(ok) == 2 })
	// A restart (a third process) sends nothing again.
	stop()
	stop = start(t, e.St, Options{Endpoints: eps, ClaimIdle: 50 * time.Millisecond, Sweep: 10 * time.Millisecond})
	time.Sleep(500 * time.Millisecond)
	stop()
	got, _ := rcv.counts()
	if len(got) != 2 {
		t.Fatalf("events delivered: %v", got)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}

func TestDelay(t *testing.T) {
	d := New(Options{Queue: (*metering.Store)(nil)})
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second}
	for i, w := range want {
		if got := d.Delay(i + 1); got != w {
			t.Errorf("Delay(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := d.Delay(40); got != 2*time.Hour {
		t.Errorf("Delay(40) = %v, want the 2h cap", got)
	}
	var total time.Duration
	n := 0
	for total < 24*time.Hour {
		n++
		total += d.Delay(n)
	}
	if n < 15 || n > 25 {
		t.Errorf("%d attempts in 24h", n)
	}
}

// A process restarted under the same consumer name (the hostname) takes up
// at once what it had read and not acknowledged.
func TestRestartTakesUpOwnPending(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	ctx := context.Background()
	rcv := newReceiver(t, 0)
	e.Account(t, "a1", 1000)
	if err := e.St.EnsureEventGroup(ctx, Group); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.MoveEvents(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if evs, err := e.St.ReadEvents(ctx, Group, "host-a", 10, 0); err != nil || len(evs) != 1 {
		t.Fatalf("ReadEvents = %v, %v", evs, err)
	}
	stop := start(t, e.St, Options{Endpoints: []config.Webhook{{URL: rcv.srv.URL, Secret: secret}},
		Consumer: "host-a", ClaimIdle: time.Hour})
	defer stop()
	waitFor(t, "the pending event's delivery", func() bool { _, ok := rcv.counts(); return len(ok) == 1 })
}
