package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// testSpec is a small catalog: one model per tier on the "openai" provider
// (the mock), an embeddings model, an Anthropic model, and a model whose
// first deployment is down (fallback).
func testSpec() pricing.Spec {
	dep := func(p, m string) []pricing.DeploymentSpec { return []pricing.DeploymentSpec{{Provider: p, Model: m}} }
	return pricing.Spec{
		CreditsPerUSD: 100000, FeeBps: 500,
		Tiers: map[string]pricing.TierSpec{
			"core": {Input: pricing.Per1K(1), Output: pricing.Per1K(2)}, "pro": {Input: pricing.Per1K(3), Output: pricing.Per1K(6)}, "ultra": {Input: pricing.Per1K(8), Output: pricing.Per1K(16)},
		},
		Models: []pricing.ModelSpec{
			{ID: "gpt-4o-mini", Aliases: []string{"mini"}, Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4o-mini")},
			{ID: "gpt-4.1-mini", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 32768, Deployments: dep("openai", "gpt-4.1-mini-2025")},
			{ID: "gpt-4.1", Tier: "ultra", ContextWindow: 128000, MaxOutputTokens: 32768, Deployments: dep("openai", "gpt-4.1")},
			{ID: "text-embedding-3-small", Tier: "core", ContextWindow: 8191, MaxOutputTokens: 1, Deployments: dep("openai", "text-embedding-3-small")},
			{ID: "claude-sonnet", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep("anthropic", "claude-sonnet-4-5")},
			{ID: "o3-mini", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 100000, OutputLimitField: "max_completion_tokens", Deployments: dep("openai", "o3-mini")},
			{ID: "dead-model", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 8192, Deployments: dep("down", "x")},
			{ID: "fallback-model", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 8192,
				Deployments: []pricing.DeploymentSpec{{Provider: "down", Model: "x"}, {Provider: "openai", Model: "served-by-second"}}},
		},
	}
}

type env struct {
	t       *testing.T
	opts    proxy.Options // the first replica's
	limiter func(*metering.Store) proxy.Limiter
	keyTTL  time.Duration // every replica's key cache TTL
	redis   *testredis.Server
	store   *metering.Store
	lease   *lease.Leaser
	mock    *mockllm.Server
	mockURL string
	catalog *pricing.Catalog
	srv     *proxy.Server
	url     string
	client  *http.Client
}

type envOpts struct {
	mock    mockllm.Config
	proxy   func(*proxy.Options)
	holdTTL time.Duration
	// perCall holds every call in Redis one by one (lease.Options.PerCall)
	// instead of from credit leases, as the gateway does by default.
	perCall bool
	// leaseOffline is lease.Options.Offline (0: its default).
	leaseOffline time.Duration
	// redisArgs are extra redis-server arguments (e.g. persistence).
	redisArgs []string
	// limiter, when set, gives each replica a Limiter over its own Store.
	limiter func(*metering.Store) proxy.Limiter
	// keyCacheTTL is every replica's metering.Options.KeyCacheTTL (0: 200ms).
	keyCacheTTL time.Duration
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, redis: testredis.Start(t, o.redisArgs...), limiter: o.limiter, keyTTL: o.keyCacheTTL}
	if e.keyTTL == 0 {
		e.keyTTL = 200 * time.Millisecond
	}
	e.store = metering.New(e.redis.Client(t), metering.Options{HoldTTL: o.holdTTL, KeyCacheTTL: e.keyTTL})
	var err error
	if e.catalog, err = pricing.New(testSpec()); err != nil {
		t.Fatal(err)
	}
	if e.mock, e.mockURL, err = mockllm.Start(o.mock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.mock.Close() })
	e.lease = lease.New(e.store, lease.Options{IdleReturn: time.Hour, Offline: o.leaseOffline, PerCall: o.perCall,
		OnError: func(a string, err error) { t.Logf("lease of %s: %v", a, err) }})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.lease.Close(ctx)
	})
	opts := proxy.Options{
		Catalog: e.catalog, Meter: e.lease,
		Providers: []proxy.Provider{
			{Name: "openai", Kind: "openai", BaseURL: e.mockURL, APIKey: "sk-upstream-secret"},
			{Name: "anthropic", Kind: "anthropic", BaseURL: e.mockURL, APIKey: "sk-ant-secret"},
			{Name: "down", Kind: "openai", BaseURL: "http://" + deadAddr(t) + "/v1"},
		},
		Timeouts: proxy.Timeouts{Request: 5 * time.Second, FirstByte: 5 * time.Second, StreamIdle: 5 * time.Second},
	}
	if o.limiter != nil {
		opts.Limiter = o.limiter(e.store)
	}
	if o.proxy != nil {
		o.proxy(&opts)
	}
	e.serve(opts)
	return e
}

// serve starts a proxy with opts on a loopback port for the rest of the test.
func (e *env) serve(opts proxy.Options) {
	e.t.Helper()
	e.opts = opts
	var err error
	if e.srv, err = proxy.New(opts); err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = e.srv.Serve(ln) }()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.srv.Shutdown(ctx)
	})
	e.url = "http://" + ln.Addr().String()
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
}

// replica starts another proxy replica over the same Redis (its own Store,
// and its own credit Leaser) and returns its base URL and its Leaser.
func (e *env) replica(id string) (string, *lease.Leaser) {
	e.t.Helper()
	st := metering.New(e.redis.Client(e.t), metering.Options{KeyCacheTTL: e.keyTTL})
	lr := lease.New(st, lease.Options{ID: id, IdleReturn: time.Hour, OnError: func(a string, err error) { e.t.Logf("lease of %s: %v", a, err) }})
	opts := e.opts
	opts.Meter = lr
	if e.limiter != nil {
		opts.Limiter = e.limiter(st)
	}
	srv, err := proxy.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = lr.Close(ctx)
	})
	return "http://" + ln.Addr().String(), lr
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// account creates an account funded with credits (whole credits) and returns a key.
func (e *env) account(id string, credits int64) string {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.store.CreateAccount(ctx, id); err != nil {
		e.t.Fatal(err)
	}
	if credits != 0 {
		if _, err := e.store.Credit(ctx, metering.Credit{Account: id, Amount: credits * 1000, Reference: "seed-" + id, Type: "grant"}); err != nil {
			e.t.Fatal(err)
		}
	}
	_, key, err := e.store.CreateKey(ctx, id, "test", 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

// sync applies every settled call and gives the leases back (calls in
// flight keep their holds), so that Redis shows what per-call holds would.
func (e *env) sync() {
	e.t.Helper()
	if e.lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.lease.Return(ctx); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) balance(id string) metering.Account {
	e.t.Helper()
	e.sync()
	a, err := e.store.Account(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

type result struct {
	status  int
	header  http.Header
	trailer http.Header
	body    []byte
}

func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	return m
}

func (r result) errorCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", r.body)
	}
	for _, k := range []string{"message", "type", "code"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("error object lacks %q: %s", k, r.body)
		}
	}
	code, _ := e["code"].(string)
	return code
}

func (e *env) do(method, path, key, body string, hdr ...string) result {
	e.t.Helper()
	return e.doAt(e.url, method, path, key, body, hdr...)
}

// doAt is do against the replica at base.
func (e *env) doAt(base, method, path, key, body string, hdr ...string) result {
	e.t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("reading %s: %v", path, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, trailer: resp.Trailer, body: b}
}

func (e *env) post(path, key, body string, hdr ...string) result {
	e.t.Helper()
	return e.do(http.MethodPost, path, key, body, hdr...)
}

// assertLedger checks the money invariant of an account: Σ ledger amounts =
// balance = credits of every kind − consumed, nothing reserved, never negative.
func (e *env) assertLedger(id string) {
	e.t.Helper()
	a := e.balance(id) // syncs first
	entries, err := e.store.AllEntries(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var sum, debits int64
	for _, en := range entries {
		sum += en.Amount
		if en.Type == "usage" {
			debits -= en.Amount
		}
	}
	if sum != a.Balance || a.Credits()-a.Consumed != a.Balance || debits != a.Consumed {
		for _, en := range entries {
			e.t.Logf("entry %s %s %d after %d %v", en.ID, en.Type, en.Amount, en.BalanceAfter, en.Fields)
		}
		e.t.Fatalf("ledger mismatch for %s: Σ entries %d, balance %d, credits %d − consumed %d, Σ debits %d",
			id, sum, a.Balance, a.Credits(), a.Consumed, debits)
	}
	if a.Reserved != 0 {
		e.t.Fatalf("account %s still has %d mc reserved", id, a.Reserved)
	}
}

// credits parses a decimal credit header into mc.
func credits(t *testing.T, s string) int64 {
	t.Helper()
	v, err := pricing.ParseCredits(s)
	if err != nil {
		t.Fatalf("credit amount %q: %v", s, err)
	}
	return v
}

func msg(content string) string {
	return fmt.Sprintf(`[{"role":"user","content":%q}]`, content)
}

func creditOf(account string, mc int64) metering.Credit {
	return metering.Credit{Account: account, Amount: mc, Reference: fmt.Sprintf("fund-%s-%d", account, mc), Type: "grant"}
}

func asError[T error](err error, target *T) bool { return errors.As(err, target) }
