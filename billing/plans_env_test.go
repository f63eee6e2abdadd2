package billing

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/limits"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// gateway is a real metering proxy (proxy.Server) in front of the mock
// provider, over the env's Redis, wired as cmd/tollgate wires it: the plan
// Limiter and the auto-recharge settle hook.
type gateway struct {
	t      *testing.T
	url    string
	client *http.Client
	queue  *metering.RechargeQueue
}

type gatewayOptions struct {
	plans []config.Plan
	// store is the replica's own Store (default: a new one over the env's Redis).
	store *metering.Store
}

var (
	mockOnce sync.Once
	mockURL  string
	mockErr  error
)

// sharedMock starts one mock provider for the package's tests.
func sharedMock(t *testing.T) string {
	t.Helper()
	mockOnce.Do(func() { _, mockURL, mockErr = mockllm.Start(mockllm.Config{}) })
	if mockErr != nil {
		t.Fatalf("starting the mock provider: %v", mockErr)
	}
	return mockURL
}

func (e *env) gateway(o gatewayOptions) *gateway {
	t := e.t
	t.Helper()
	st := o.store
	if st == nil {
		st = metering.New(e.redis.Client(t), metering.Options{KeyCacheTTL: -1})
	}
	base := sharedMock(t)
	var providers []proxy.Provider
	for _, name := range []string{"openai", "anthropic", "gemini", "deepseek"} {
		kind := "openai"
		if name == "anthropic" {
			kind = "anthropic"
		}
		providers = append(providers, proxy.Provider{Name: name, Kind: kind, BaseURL: base, NativeBaseURL: base, APIKey: "sk-mock"})
	}
	g := &gateway{t: t, queue: metering.NewRechargeQueue(st, metering.RechargeQueueOptions{CacheTTL: -1})}
	opts := proxy.Options{
		Catalog: e.catalog, Providers: providers, Meter: st, OnSettle: g.queue.OnSettle,
		Timeouts: proxy.Timeouts{Request: 10 * time.Second, FirstByte: 10 * time.Second, StreamIdle: 10 * time.Second},
	}
	if len(o.plans) > 0 {
		opts.Limiter = limits.New(st, limits.Options{Plans: o.plans, CacheTTL: -1})
	}
	srv, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		g.queue.Wait()
	})
	g.url = "http://" + ln.Addr().String()
	g.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	return g
}

// chat makes one metered chat call with key; outTokens sets the mock's
// completion length (and max_tokens, so that holds stay small).
func (g *gateway) chat(key, model string, outTokens int) (int, http.Header, string) {
	g.t.Helper()
	body := fmt.Sprintf(`{"model":%q,"max_tokens":%d,"messages":[{"role":"user","content":"hello there [mock:tokens=%d]"}]}`,
		model, outTokens, outTokens)
	req, err := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := g.client.Do(req)
	if err != nil {
		g.t.Errorf("calling the gateway: %v", err)
		return 0, nil, ""
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(raw)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// grant credits account with whole credits, as an operator would.
func (e *env) grant(account string, credits int64, ref string) {
	e.t.Helper()
	r := e.admin("POST", "/admin/v1/accounts/"+account+"/credits", map[string]any{"credits": credits, "reference": ref})
	e.expect(r, http.StatusOK, "")
}

// apiKey issues an API key to account through the self-service API.
func (e *env) apiKey(account string) string {
	e.t.Helper()
	r := e.do("POST", "/v1/keys", e.token(account, nil), map[string]any{"name": "test"})
	e.expect(r, http.StatusCreated, "")
	return r.str("key")
}

// subscriptionEvent renders a customer.subscription.* event in the newer API
// shape (the period on the item).
func subscriptionEvent(id, typ, sub, customer, account, price string, seats int64, status string, start, end time.Time, cancelAtEnd bool) []byte {
	obj := map[string]any{
		"id": sub, "object": "subscription", "customer": customer, "status": status,
		"metadata":             map[string]any{"account": account},
		"cancel_at_period_end": cancelAtEnd, "cancel_at": nil, "ended_at": nil,
		"items": map[string]any{"object": "list", "data": []any{map[string]any{
			"id": "si_" + sub, "object": "subscription_item", "quantity": seats,
			"price":                map[string]any{"id": price, "object": "price"},
			"current_period_start": start.Unix(), "current_period_end": end.Unix(),
		}}},
	}
	if cancelAtEnd {
		obj["cancel_at"] = end.Unix()
	}
	if status == "canceled" {
		obj["ended_at"] = time.Now().Unix()
	}
	return teststripe.Event(id, typ, obj)
}

func invoiceEvent(id, typ, invoice, sub, customer string, start, end time.Time) []byte {
	return teststripe.Event(id, typ, map[string]any{
		"id": invoice, "object": "invoice", "customer": customer, "subscription": sub, "attempt_count": 1,
		"lines": map[string]any{"object": "list", "data": []any{map[string]any{
			"id": "il_" + invoice, "period": map[string]any{"start": start.Unix(), "end": end.Unix()},
		}}},
	})
}

func paymentIntentEvent(id, typ, pi string, amount int64, currency string, metadata map[string]string) []byte {
	return teststripe.Event(id, typ, map[string]any{
		"id": pi, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": currency,
		"status": "succeeded", "metadata": metadata,
	})
}

// deliverOK delivers a signed event and requires a 200.
func (e *env) deliverOK(payload []byte) string {
	e.t.Helper()
	status, body := e.deliver(payload)
	if status != http.StatusOK {
		e.t.Fatalf("webhook: %d %s", status, body)
	}
	return body
}

// fakePayments plays the bank for what stripe-mock cannot: declines and
// 3-D Secure. Like Stripe, the same idempotency key is the same PaymentIntent.
type fakePayments struct {
	mu      sync.Mutex
	card    string
	outcome func(n int) PaymentStatus // by charge number, 1-based
	charges map[string]PaymentResult  // idempotency key → result
	calls   int
}

func newFakePayments(card string, outcome func(n int) PaymentStatus) *fakePayments {
	return &fakePayments{card: card, outcome: outcome, charges: map[string]PaymentResult{}}
}

func (f *fakePayments) DefaultCard(context.Context, string) (string, error) { return f.card, nil }

func (f *fakePayments) ChargeOffSession(_ context.Context, c OffSessionCharge) (PaymentResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.charges[c.IdempotencyKey]; ok {
		return r, nil
	}
	f.calls++
	st := f.outcome(f.calls)
	r := PaymentResult{ID: fmt.Sprintf("pi_fake_%d", f.calls), Status: st, AmountMinor: c.AmountMinor, Currency: c.Currency}
	switch st {
	case PaymentNeedsAction:
		r.Code, r.Message = "authentication_required", "This payment requires authentication."
	case PaymentDeclined:
		r.Code, r.Message = "insufficient_funds", "Your card has insufficient funds."
	}
	f.charges[c.IdempotencyKey] = r
	return r, nil
}

func (f *fakePayments) charged() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// miniCatalog is the shipped catalog plus a tiny pack (20 credits for 1.00
// USD) that a few metered calls drain.
func miniCatalog(t *testing.T) *pricing.Catalog {
	t.Helper()
	cfg := shippedConfig(t)
	twenty := int64(20)
	cfg.Pricing.Packs = append(cfg.Pricing.Packs, pricing.PackSpec{Key: "mini", Name: "Mini", Price: "1.00", Currency: "usd", Credits: &twenty})
	c, err := pricing.New(cfg.Pricing)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func shippedConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load("../configs/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ledgerCount counts account's ledger entries of a type.
func (e *env) ledgerCount(account, typ string) int {
	e.t.Helper()
	entries, err := e.store.AllEntries(context.Background(), account)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, en := range entries {
		if en.Type == typ {
			n++
		}
	}
	return n
}
