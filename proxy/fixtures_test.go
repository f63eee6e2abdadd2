package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// Provider fidelity: testdata/fixtures holds responses in each provider's
// documented format (fixtures.json says where each shape comes from and what
// the call must cost). A replaying upstream answers with the fixture's
// bytes — SSE event by event, flushed — and the real proxy, metering against
// a real Redis, must charge exactly the expected amount, move the balance by
// it, write the expected ledger entry and cost record, and relay what the
// provider sent.

const fixtureDir = "testdata/fixtures"

type fixture struct {
	Name        string          `json:"name"`
	File        string          `json:"file"`
	Provider    string          `json:"provider"`
	Endpoint    string          `json:"endpoint"`
	Model       string          `json:"model"`
	Stream      bool            `json:"stream"`
	Source      string          `json:"source"`
	Request     json.RawMessage `json:"request"`
	Expect      fixtureExpect   `json:"expect"`
	ClientUsage bool            `json:"client_usage"` // the client asked for chat's usage chunk
	Drop        bool            `json:"drop"`         // the upstream connection is cut after the bytes
	Hangup      bool            `json:"hangup"`       // pings follow until the proxy hangs up (disconnect tests)
}

type fixtureExpect struct {
	Input        int64  `json:"input"`
	CachedInput  int64  `json:"cached_input"`
	CacheWrite   int64  `json:"cache_write"`
	CacheWrite1h int64  `json:"cache_write_1h"`
	Output       int64  `json:"output"`
	Reasoning    int64  `json:"reasoning"`
	WebSearch    int64  `json:"web_search"` // provider-side web searches
	MC           int64  `json:"mc"`
	Estimated    bool   `json:"estimated"`
	Failed       bool   `json:"failed"`
	Reason       string `json:"reason"`
}

// price is x's tokens and searches at rates r (fixtureRates), in mc: the
// exact sum in 10⁻⁹ mc, rounded up once.
func (x fixtureExpect) price(r fixtureRate) int64 {
	n := x.Input*r[0] + x.CachedInput*r[1] + x.Output*r[2] + x.CacheWrite*r[3] + x.CacheWrite1h*r[4] + x.WebSearch*r[5]
	return (n + nano - 1) / nano
}

func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, "fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx []fixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatalf("fixtures.json: %v", err)
	}
	return fx
}

// body is the client's request: the fixture's request with model, stream and
// the marker that tells the replaying upstream which fixture to answer with.
func (f fixture) body(t testing.TB, model string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(f.Request, &m); err != nil {
		t.Fatalf("%s: request: %v", f.Name, err)
	}
	m["model"] = model
	if f.Stream {
		m["stream"] = true
	}
	if f.Endpoint == "/v1/messages" {
		m["metadata"] = map[string]any{"user_id": "fx-" + f.Name}
	} else {
		m["user"] = "fx-" + f.Name
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replay is the fixture-replaying upstream. The first path segment names the
// provider ("/openai/v1/chat/completions"); the providers fail500, fail429
// and fail503 answer with that status before any byte of a body.
type replay struct {
	t   testing.TB
	fx  map[string]fixture
	url string

	mu     sync.Mutex
	hits   map[string]int
	header map[string]http.Header // last request's headers per provider
	path   map[string]string
	gone   chan string // hang-up fixtures: the proxy closed the upstream
}

var fixtureMarker = regexp.MustCompile(`fx-([a-z0-9_]+)`)

func startReplay(t testing.TB, fixtures []fixture) *replay {
	t.Helper()
	rp := &replay{t: t, fx: map[string]fixture{}, hits: map[string]int{}, header: map[string]http.Header{},
		path: map[string]string{}, gone: make(chan string, 16)}
	for _, f := range fixtures {
		rp.fx[f.Name] = f
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	return rp
}

func (rp *replay) hitCount(provider string) int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.hits[provider]
}

func (rp *replay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	provider, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	body, _ := io.ReadAll(r.Body)
	rp.mu.Lock()
	rp.hits[provider]++
	rp.header[provider] = r.Header.Clone()
	rp.path[provider] = r.URL.Path
	rp.mu.Unlock()
	switch provider {
	case "fail500":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`)
		return
	case "fail429":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
		return
	case "fail503":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
		return
	}
	m := fixtureMarker.FindSubmatch(body)
	if m == nil {
		http.Error(w, "no fixture marker in request", http.StatusBadRequest)
		return
	}
	f, ok := rp.fx[string(m[1])]
	if !ok {
		http.Error(w, "unknown fixture "+string(m[1]), http.StatusBadRequest)
		return
	}
	data, err := os.ReadFile(filepath.Join(fixtureDir, f.File))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if strings.HasSuffix(f.File, ".json") {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl := w.(http.Flusher)
	for _, ev := range splitEvents(data) {
		if _, err := w.Write(ev); err != nil {
			return
		}
		fl.Flush()
	}
	if f.Hangup {
		ping := []byte(": keep-alive\n\n")
		if f.Endpoint == "/v1/messages" {
			ping = []byte("event: ping\ndata: {\"type\": \"ping\"}\n\n")
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case <-r.Context().Done():
				rp.gone <- f.Name
				return
			case <-deadline:
				return
			case <-tick.C:
				if _, err := w.Write(ping); err != nil {
					rp.gone <- f.Name
					return
				}
				fl.Flush()
			}
		}
	}
	if f.Drop {
		panic(http.ErrAbortHandler) // cut the connection: no end of the chunked body
	}
}

// splitEvents splits an SSE file into its events, each with its blank line.
func splitEvents(b []byte) [][]byte {
	var evs [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\n\n"))
		if i < 0 {
			evs = append(evs, b)
			break
		}
		evs = append(evs, b[:i+2])
		b = b[i+2:]
	}
	return evs
}

// fixtureSpec is the catalog of the fixture tests: tiers with cached-input
// rates below the input rate (pro, ultra) and one without (core: cached
// input at the input rate), stated cache-write rates (pro, ultra) and the
// defaults (core), every provider kind, and models whose first deployments
// fail.
func fixtureSpec() pricing.Spec {
	rp := func(v int64) *pricing.Rate { return pricing.Per1K(v).Ptr() }
	rate := func(s string) *pricing.Rate { return pricing.MustRate(s).Ptr() }
	dep := func(p, m string) []pricing.DeploymentSpec { return []pricing.DeploymentSpec{{Provider: p, Model: m}} }
	return pricing.Spec{
		CreditsPerUSD: 100000, FeeBps: 500,
		Tiers: map[string]pricing.TierSpec{
			"core":  {Input: pricing.Per1K(1), Output: pricing.Per1K(2)},
			"pro":   {Input: pricing.Per1K(3), CachedInput: rp(1), Output: pricing.Per1K(6), CacheWrite: rp(4), CacheWrite1h: rp(6)},
			"ultra": {Input: pricing.Per1K(8), CachedInput: rp(2), Output: pricing.Per1K(16), CacheWrite: rp(10), CacheWrite1h: rp(16)},
		},
		Models: []pricing.ModelSpec{
			{ID: "gpt-4o", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4o-2024-08-06")},
			{ID: "gpt-4o-mini", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4o-mini-2024-07-18")},
			{ID: "o3-mini", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 100000, Deployments: dep("openai", "o3-mini-2025-01-31")},
			{ID: "claude-sonnet-4-5", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep("anthropic", "claude-sonnet-4-5-20250929")},
			// Cache reads at a tenth and a quarter of input, web searches
			// at 10 and 25 USD per 1K (100,000 credits per USD).
			{ID: "claude-search", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep("anthropic", "claude-sonnet-4-5-20250929"),
				CachedInput: rate("0.8"), WebSearch: pricing.Per1K(1_000_000).Ptr()},
			{ID: "gpt-4.1-search", Tier: "pro", ContextWindow: 1047576, MaxOutputTokens: 32768, Deployments: dep("openai", "gpt-4.1-2025-04-14"),
				CachedInput: rate("0.75"), WebSearch: pricing.Per1K(2_500_000).Ptr()},
			{ID: "gemini-2.5-flash", Tier: "pro", ContextWindow: 1048576, MaxOutputTokens: 65536, Deployments: dep("gemini", "gemini-2.5-flash")},
			{ID: "deepseek-chat", Tier: "pro", ContextWindow: 65536, MaxOutputTokens: 8192, Deployments: dep("deepseek", "deepseek-chat")},
			{ID: "deepseek-reasoner", Tier: "pro", ContextWindow: 65536, MaxOutputTokens: 65536, Deployments: dep("deepseek", "deepseek-reasoner")},
			{ID: "llama-3.1-8b", Tier: "core", ContextWindow: 131072, MaxOutputTokens: 8192, Deployments: dep("vllm", "meta-llama/Llama-3.1-8B-Instruct")},
			// Fallbacks, priced at a tier other than the served fixtures' so
			// that the charge shows whose rate applies.
			{ID: "fallback-after-500", Tier: "ultra", ContextWindow: 128000, MaxOutputTokens: 16384,
				Deployments: []pricing.DeploymentSpec{{Provider: "fail500", Model: "gpt-4o"}, {Provider: "openai", Model: "gpt-4o-2024-08-06"}}},
			{ID: "fallback-after-429", Tier: "ultra", ContextWindow: 128000, MaxOutputTokens: 16384,
				Deployments: []pricing.DeploymentSpec{{Provider: "fail429", Model: "gpt-4o"}, {Provider: "openai", Model: "gpt-4o-2024-08-06"}}},
			{ID: "claude-fallback", Tier: "pro", ContextWindow: 200000, MaxOutputTokens: 64000,
				Deployments: []pricing.DeploymentSpec{{Provider: "fail503", Model: "claude-sonnet-4-5"}, {Provider: "anthropic", Model: "claude-sonnet-4-5-20250929"}}},
			{ID: "all-fail", Tier: "pro", ContextWindow: 128000, MaxOutputTokens: 16384,
				Deployments: []pricing.DeploymentSpec{{Provider: "fail429", Model: "a"}, {Provider: "fail500", Model: "b"}}},
		},
	}
}

// fixtureRate is input, cached input, output, cache write, 1-hour cache
// write (10⁻⁹ mc per token) and web search (10⁻⁹ mc per search).
type fixtureRate [6]int64

const nano = 1_000_000_000

// fixtureRates mirrors fixtureSpec's tiers (core's cache writes are the
// defaults, ⌈1.25 × 1⌉ and 2 × 1) and the models with rates of their own:
// a cache read at a tenth of input (0.8 mc a token) and a quarter (0.75),
// web searches at 10 and 25 USD per 1K (1,000 and 2,500 credits each).
var fixtureRates = map[string]fixtureRate{
	"core": {1 * nano, 1 * nano, 2 * nano, 2 * nano, 2 * nano, 0}, "pro": {3 * nano, 1 * nano, 6 * nano, 4 * nano, 6 * nano, 0},
	"ultra":          {8 * nano, 2 * nano, 16 * nano, 10 * nano, 16 * nano, 0},
	"claude-search":  {8 * nano, nano * 8 / 10, 16 * nano, 10 * nano, 16 * nano, 1_000_000 * nano},
	"gpt-4.1-search": {3 * nano, nano * 3 / 4, 6 * nano, 4 * nano, 6 * nano, 2_500_000 * nano},
}

// ratesOf is a fixture model's rates: its own, else its tier's.
func ratesOf(m *pricing.Model) fixtureRate {
	if r, ok := fixtureRates[m.ID]; ok {
		return r
	}
	return fixtureRates[m.Tier]
}

func replayProviders(base string) []proxy.Provider {
	p := func(name, kind, path string) proxy.Provider {
		return proxy.Provider{Name: name, Kind: kind, BaseURL: base + path, APIKey: "sk-" + name + "-upstream"}
	}
	return []proxy.Provider{
		p("openai", "openai", "/openai/v1"),
		p("anthropic", "anthropic", "/anthropic/v1"),
		p("gemini", "openai", "/gemini/v1beta/openai"),
		p("deepseek", "openai", "/deepseek"),
		p("vllm", "openai", "/vllm/v1"),
		p("fail500", "openai", "/fail500/v1"),
		p("fail429", "openai", "/fail429/v1"),
		p("fail503", "anthropic", "/fail503/v1"),
	}
}

// newEnvWith starts Redis and a proxy with spec and providers (no mock
// unless the caller starts one).
func newEnvWith(t *testing.T, spec pricing.Spec, providers []proxy.Provider) *env {
	t.Helper()
	e := &env{t: t, redis: testredis.Start(t)}
	e.store = metering.New(e.redis.Client(t), metering.Options{KeyCacheTTL: 200 * time.Millisecond})
	var err error
	if e.catalog, err = pricing.New(spec); err != nil {
		t.Fatal(err)
	}
	opts := proxy.Options{
		Catalog: e.catalog, Meter: e.store, Providers: providers,
		Timeouts: proxy.Timeouts{Request: 5 * time.Second, FirstByte: 5 * time.Second, StreamIdle: 5 * time.Second},
	}
	e.serve(opts)
	return e
}

func TestFixtures(t *testing.T) {
	fixtures := loadFixtures(t)
	rp := startReplay(t, fixtures)
	e := newEnvWith(t, fixtureSpec(), replayProviders(rp.url))
	key := e.account("acme", 100_000) // a web-search call holds ten searches
	for _, f := range fixtures {
		if f.Hangup {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			checkFixtureCall(t, e, rp, f, key, f.Model, f.Provider, f.Expect.MC)
		})
	}
	e.assertLedger("acme")
}

// checkFixtureCall makes f's call as model and checks everything the
// gateway owes for it: the charge wantMC, the balance, the ledger entry, the
// cost record, and the relayed body.
func checkFixtureCall(t *testing.T, e *env, rp *replay, f fixture, key, model, provider string, wantMC int64) result {
	t.Helper()
	ctx := context.Background()
	x := f.Expect
	before := e.balance("acme")
	e.sync()
	entriesBefore, err := e.store.AllEntries(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var hdr []string
	if f.Endpoint == "/v1/messages" {
		hdr = []string{"anthropic-version", "2023-06-01"}
	}
	r := e.post(f.Endpoint, key, f.body(t, model), hdr...)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := r.header.Get("X-Tollgate-Provider"); got != provider {
		t.Fatalf("X-Tollgate-Provider = %q, want %q", got, provider)
	}
	id := r.header.Get("X-Request-Id")

	// The charge, as the caller is told and as the store moved.
	charged := r.header.Get("X-Credits-Charged")
	if f.Stream {
		charged = r.trailer.Get("X-Credits-Charged")
	}
	if got := credits(t, charged); got != wantMC {
		t.Fatalf("charged %d mc, want %d (trailers %v)", got, wantMC, r.trailer)
	}
	after := e.balance("acme")
	if before.Balance-after.Balance != wantMC || after.Reserved != 0 {
		t.Fatalf("balance moved by %d mc (reserved %d), want %d", before.Balance-after.Balance, after.Reserved, wantMC)
	}
	if !f.Stream {
		if got := credits(t, r.header.Get("X-Credits-Balance")); got != after.Balance {
			t.Fatalf("X-Credits-Balance %d, store %d", got, after.Balance)
		}
	} else if !x.Failed {
		if got := credits(t, r.trailer.Get("X-Credits-Balance-After")); got != after.Balance {
			t.Fatalf("trailer balance %d, store %d", got, after.Balance)
		}
	}

	// The ledger: one usage entry for a charged call, none for a failed one.
	e.sync()
	entries, err := e.store.AllEntries(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if x.Failed {
		if len(entries) != len(entriesBefore) {
			t.Fatalf("a failed call wrote %d ledger entries", len(entries)-len(entriesBefore))
		}
	} else {
		if len(entries) != len(entriesBefore)+1 {
			t.Fatalf("%d new ledger entries, want 1", len(entries)-len(entriesBefore))
		}
		checkUsageEntry(t, entries[len(entries)-1], id, model, provider, f.Stream, false, x, wantMC)
	}

	// The cost record.
	g := e.do(http.MethodGet, "/v1/generation?id="+id, key, "")
	if g.status != 200 {
		t.Fatalf("generation: %d %s", g.status, g.body)
	}
	rec := g.json(t)
	tok := rec["tokens"].(map[string]any)
	gotTok := [6]int64{int64(tok["input"].(float64)), int64(tok["cached_input"].(float64)), int64(tok["output"].(float64)),
		int64(tok["reasoning"].(float64)), int64(tok["cache_write"].(float64)), int64(tok["cache_write_1h"].(float64))}
	if want := [6]int64{x.Input, x.CachedInput, x.Output, x.Reasoning, x.CacheWrite, x.CacheWrite1h}; gotTok != want {
		t.Fatalf("record tokens (input, cached, output, reasoning, cache write, 1h) = %v, want %v", gotTok, want)
	}
	if rec["estimated"] != x.Estimated || rec["failed"] != x.Failed || rec["streamed"] != f.Stream || rec["cancelled"] != false ||
		rec["model"] != model || rec["provider"] != provider || credits(t, rec["credits_charged"].(string)) != wantMC {
		t.Fatalf("cost record %s", g.body)
	}
	if reason, _ := rec["reason"].(string); reason != x.Reason {
		t.Fatalf("record reason %q, want %q", reason, x.Reason)
	}

	// What the client got: the provider's bytes, plus the charge where the
	// gateway adds it.
	want, err := os.ReadFile(filepath.Join(fixtureDir, f.File))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Stream {
		if !bytes.Equal(r.body, want) {
			t.Fatalf("body not relayed as sent:\n%s", r.body)
		}
		return r
	}
	checkRelayedStream(t, f, want, r.body, wantMC)
	return r
}

// checkUsageEntry checks a usage ledger entry field by field.
func checkUsageEntry(t *testing.T, en metering.Entry, id, model, provider string, streamed, cancelled bool, x fixtureExpect, mc int64) {
	t.Helper()
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	if en.Type != "usage" || en.Amount != -mc || en.Reference != id {
		t.Fatalf("ledger entry %+v: want usage, amount %d, ref %s", en, -mc, id)
	}
	want := map[string]string{
		"request_id": id, "model": model, "provider": provider,
		"input_tokens": strconv.FormatInt(x.Input, 10), "cached_input_tokens": strconv.FormatInt(x.CachedInput, 10),
		"output_tokens": strconv.FormatInt(x.Output, 10), "reasoning_tokens": strconv.FormatInt(x.Reasoning, 10),
		"cache_write_tokens": strconv.FormatInt(x.CacheWrite, 10), "cache_write_1h_tokens": strconv.FormatInt(x.CacheWrite1h, 10),
		"web_search_requests": strconv.FormatInt(x.WebSearch, 10),
		"estimated":           b(x.Estimated), "streamed": b(streamed), "cancelled": b(cancelled), "failed": "0", "capped": "0",
	}
	for k, v := range want {
		if en.Fields[k] != v {
			t.Fatalf("ledger entry field %s = %q, want %q (entry %+v)", k, en.Fields[k], v, en)
		}
	}
	if x.Reason != "" && en.Fields["reason"] != x.Reason {
		t.Fatalf("ledger entry reason %q, want %q", en.Fields["reason"], x.Reason)
	}
}

// checkRelayedStream compares the relayed events with the fixture's: the
// same events in the same order, except that chat's usage-only chunk reaches
// only clients that asked for it, the charge is added to the final usage
// (chat usage chunk, response.completed, message_delta), and a failed stream
// ends with the gateway's error event.
func checkRelayedStream(t *testing.T, f fixture, fixtureBody, relayed []byte, mc int64) {
	t.Helper()
	want := sseEvents(t, fixtureBody)
	got := sseEvents(t, relayed)
	if f.Endpoint == "/v1/chat/completions" && !f.ClientUsage {
		kept := want[:0]
		for _, ev := range want {
			if !isUsageOnlyChunk(ev[1]) {
				kept = append(kept, ev)
			}
		}
		want = kept
	}
	if f.Expect.Failed {
		if len(got) == 0 || !strings.Contains(got[len(got)-1][1], `"upstream_stream_cut"`) {
			t.Fatalf("a failed stream does not end with the gateway's error event:\n%s", relayed)
		}
		got = got[:len(got)-1]
	}
	if len(got) != len(want) {
		t.Fatalf("relayed %d events, the provider sent %d (expected to pass on):\n%s", len(got), len(want), relayed)
	}
	sawCredits := false
	for i := range want {
		if got[i][0] != want[i][0] {
			t.Fatalf("event %d: name %q, want %q", i, got[i][0], want[i][0])
		}
		if want[i][1] == "[DONE]" || got[i][1] == "[DONE]" {
			if got[i][1] != want[i][1] {
				t.Fatalf("event %d: %q, want %q", i, got[i][1], want[i][1])
			}
			continue
		}
		var g, w any
		if err := json.Unmarshal([]byte(got[i][1]), &g); err != nil {
			t.Fatalf("event %d is not JSON: %v: %s", i, err, got[i][1])
		}
		_ = json.Unmarshal([]byte(want[i][1]), &w)
		if c, ok := stripCredits(g); ok {
			sawCredits = true
			if credits(t, c) != mc {
				t.Fatalf("event %d carries credits %s, want %d mc", i, c, mc)
			}
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("event %d changed in relay:\n got %s\nwant %s", i, got[i][1], want[i][1])
		}
	}
	wantCredits := !f.Expect.Failed && (f.ClientUsage || f.Endpoint != "/v1/chat/completions")
	if sawCredits != wantCredits {
		t.Fatalf("stream carries the charge: %v, want %v", sawCredits, wantCredits)
	}
}

func isUsageOnlyChunk(data string) bool {
	var c struct {
		Choices []any `json:"choices"`
		Usage   any   `json:"usage"`
	}
	return json.Unmarshal([]byte(data), &c) == nil && c.Choices != nil && len(c.Choices) == 0 && c.Usage != nil
}

// stripCredits removes credits and credits_balance from a usage object
// (top level or response.usage) and returns the credits.
func stripCredits(v any) (string, bool) {
	m, _ := v.(map[string]any)
	for _, u := range []any{m["usage"], func() any { r, _ := m["response"].(map[string]any); return r["usage"] }()} {
		um, ok := u.(map[string]any)
		if !ok {
			continue
		}
		c, ok := um["credits"].(string)
		if !ok {
			continue
		}
		if _, ok := um["credits_balance"].(string); !ok {
			return "", false
		}
		delete(um, "credits")
		delete(um, "credits_balance")
		return c, true
	}
	return "", false
}

// TestFallbackOnStatusBeforeFirstByte: a deployment that answers 5xx or 429
// before any byte is skipped for the next; the client sees one answer, one
// charge at the rate of the model it asked for, and the provider that served.
func TestFallbackOnStatusBeforeFirstByte(t *testing.T) {
	fixtures := loadFixtures(t)
	byName := map[string]fixture{}
	for _, f := range fixtures {
		byName[f.Name] = f
	}
	rp := startReplay(t, fixtures)
	e := newEnvWith(t, fixtureSpec(), replayProviders(rp.url))
	key := e.account("acme", 10_000)
	cases := []struct {
		name, model, fixture, failing, served, tier string
	}{
		{"500 then served", "fallback-after-500", "openai_chat", "fail500", "openai", "ultra"},
		{"500 then served, stream", "fallback-after-500", "openai_chat_stream_usage", "fail500", "openai", "ultra"},
		{"429 then served", "fallback-after-429", "openai_chat", "fail429", "openai", "ultra"},
		{"429 then served, stream", "fallback-after-429", "openai_chat_stream_usage", "fail429", "openai", "ultra"},
		{"anthropic 503 then served, stream", "claude-fallback", "anthropic_messages_stream", "fail503", "anthropic", "pro"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := byName[tc.fixture]
			r := fixtureRates[tc.tier]
			x := f.Expect
			want := x.price(r)
			if want == x.MC {
				t.Fatal("the fallback model's rate must differ from the fixture's own to show whose rate applies")
			}
			hits, served := rp.hitCount(tc.failing), rp.hitCount(tc.served)
			checkFixtureCall(t, e, rp, f, key, tc.model, tc.served, want)
			if rp.hitCount(tc.failing) != hits+1 || rp.hitCount(tc.served) != served+1 {
				t.Fatalf("upstream calls: failing deployment %d, serving %d; want one each",
					rp.hitCount(tc.failing)-hits, rp.hitCount(tc.served)-served)
			}
		})
	}
	t.Run("every deployment fails", func(t *testing.T) {
		before := e.balance("acme")
		r := e.post("/v1/chat/completions", key, `{"model":"all-fail","messages":[{"role":"user","content":"hi"}]}`)
		if r.status != 502 || r.errorCode(t) != "upstream_error" {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if after := e.balance("acme"); after.Balance != before.Balance || after.Reserved != 0 {
			t.Fatalf("balance %d → %d reserved %d", before.Balance, after.Balance, after.Reserved)
		}
	})
	e.assertLedger("acme")
}

// TestClientDisconnectExactCharge: the upstream streams a known answer and
// then only keep-alives; the client reads the answer and hangs up. The
// gateway must close the upstream (the provider stops generating) and charge
// exactly what was generated: the input the provider reported (Anthropic
// reports it first) or the request's estimate, and the relayed text's
// estimate for output — then the ledger entry says cancelled and estimated.
func TestClientDisconnectExactCharge(t *testing.T) {
	fixtures := loadFixtures(t)
	rp := startReplay(t, fixtures)
	e := newEnvWith(t, fixtureSpec(), replayProviders(rp.url))
	key := e.account("acme", 10_000)
	for _, f := range fixtures {
		if !f.Hangup {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			ctx := context.Background()
			x := f.Expect
			tier := fixtureRates[map[string]string{"/v1/messages": "ultra", "/v1/chat/completions": "pro"}[f.Endpoint]]
			wantMC := x.price(tier)
			if wantMC != x.MC {
				t.Fatalf("fixtures.json: mc %d is not the price of its tokens (%d)", x.MC, wantMC)
			}
			before := e.balance("acme").Balance
			req, _ := http.NewRequest(http.MethodPost, e.url+f.Endpoint, strings.NewReader(f.body(t, f.Model)))
			req.Header.Set("x-api-key", key)
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("X-Request-Id")
			// Read until the whole answer arrived: then only pings follow.
			want := bytes.Count(mustRead(t, filepath.Join(fixtureDir, f.File)), []byte("\n\n"))
			got := 0
			buf := make([]byte, 0, 4096)
			tmp := make([]byte, 4096)
			for got < want {
				n, err := resp.Body.Read(tmp)
				buf = append(buf, tmp[:n]...)
				got = bytes.Count(buf, []byte("\n\n"))
				if err != nil {
					t.Fatalf("stream ended after %d of %d events: %v", got, want, err)
				}
			}
			resp.Body.Close() // hang up
			select {
			case name := <-rp.gone:
				if name != f.Name {
					t.Fatalf("upstream closed for %s", name)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream was not closed after the client left: the provider keeps generating")
			}
			var g map[string]any
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := e.do(http.MethodGet, "/v1/generation?id="+id, key, "")
				if r.status == 200 {
					g = r.json(t)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the cancelled call was never settled: %d %s", r.status, r.body)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if g["cancelled"] != true || g["failed"] != false || g["estimated"] != true || g["reason"] != "client_disconnected" {
				t.Fatalf("record %v", g)
			}
			if got := before - e.balance("acme").Balance; got != wantMC {
				t.Fatalf("balance moved by %d mc, want %d", got, wantMC)
			}
			e.sync()
			entries, err := e.store.Ledger(ctx, "acme", metering.LedgerQuery{Limit: 1})
			if err != nil || len(entries) != 1 {
				t.Fatalf("ledger: %v %v", entries, err)
			}
			checkUsageEntry(t, entries[0], id, f.Model, f.Provider, true, true, x, wantMC)
			if entries[0].Fields["reason"] != "client_disconnected" {
				t.Fatalf("ledger reason %q", entries[0].Fields["reason"])
			}
		})
	}
	e.assertLedger("acme")
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixtureManifest keeps fixtures.json honest: every charged fixture's
// mc is the price of its tokens at its model's tier.
func TestFixtureManifest(t *testing.T) {
	c, err := pricing.New(fixtureSpec())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range loadFixtures(t) {
		m, err := c.Lookup(f.Model)
		if err != nil {
			t.Fatalf("%s: model %q: %v", f.Name, f.Model, err)
		}
		x := f.Expect
		want := m.Cost(pricing.Usage{Input: x.Input, CachedInput: x.CachedInput, Output: x.Output,
			CacheWrite: x.CacheWrite, CacheWrite1h: x.CacheWrite1h, WebSearch: x.WebSearch}, time.Now())
		if byHand := x.price(ratesOf(m)); want != byHand {
			t.Errorf("%s: the catalog prices its tokens at %d, fixtureRates at %d", f.Name, want, byHand)
		}
		if x.Failed {
			want = 0
		}
		if x.MC != want || x.Reasoning > x.Output {
			t.Errorf("%s: mc %d, tokens %+v cost %d", f.Name, x.MC, x, want)
		}
		if _, err := os.Stat(filepath.Join(fixtureDir, f.File)); err != nil {
			t.Error(err)
		}
		if f.Source == "" {
			t.Errorf("%s: say which documented format the fixture follows", f.Name)
		}
	}
}

// TestModelsListCachedRates: /v1/models states each model's rates per 1K
// tokens — input, cached input (the tier's own rate, or the input rate when
// the tier sets none) and output.
func TestModelsListCachedRates(t *testing.T) {
	e := newEnvWith(t, fixtureSpec(), replayProviders("http://127.0.0.1:9"))
	r := e.do(http.MethodGet, "/v1/models", "", "")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var list struct {
		Data []struct {
			ID      string                     `json:"id"`
			Tier    string                     `json:"tier"`
			Pricing map[string]json.RawMessage `json:"pricing"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	// Exact decimals, credits per 1K tokens (web search: per 1K searches).
	want := map[string]string{
		"gpt-4o":            "3 1 6 4 6 0",
		"gpt-4o-mini":       "1 1 2 2 2 0",
		"claude-sonnet-4-5": "8 2 16 10 16 0",
		"claude-search":     "8 0.8 16 10 16 1000000",
		"gpt-4.1-search":    "3 0.75 6 4 6 2500000",
	}
	seen := 0
	for _, m := range list.Data {
		var got []string
		for _, k := range []string{"input", "cached_input", "output", "cache_write", "cache_write_1h", "web_search"} {
			v, ok := m.Pricing[k]
			if !ok {
				t.Errorf("%s: no %s in its pricing: %s", m.ID, k, r.body)
			}
			got = append(got, string(v))
		}
		w, ok := want[m.ID]
		if !ok {
			continue
		}
		seen++
		if g := strings.Join(got, " "); g != w {
			t.Errorf("%s (%s): rates %s, want %s", m.ID, m.Tier, g, w)
		}
	}
	if seen != len(want) {
		t.Fatalf("models listed: %s", r.body)
	}
}
