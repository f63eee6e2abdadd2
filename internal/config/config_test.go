package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pricing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestExpand(t *testing.T) {
	lookup := env(map[string]string{"A": "alpha", "EMPTY": ""})
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"${A}", "alpha"},
		{"x-${A}-y", "x-alpha-y"},
		{"${MISSING}", ""},
		{"${MISSING:-fallback}", "fallback"},
		{"${EMPTY:-fallback}", "fallback"},
		{"${A:-fallback}", "alpha"},
		{"${A}${A}", "alphaalpha"},
		{"${UNCLOSED", "${UNCLOSED"},
		{"${MISSING:-http://x:1/v1}", "http://x:1/v1"},
	}
	for _, tc := range cases {
		if got := Expand(tc.in, lookup); got != tc.want {
			t.Errorf("Expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestShippedConfigs: every shipped file loads, and the environment reaches
// providers the way the README says.
func TestShippedConfigs(t *testing.T) {
	data, err := os.ReadFile("../../configs/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data, env(map[string]string{
		"OPENAI_BASE_URL": "http://127.0.0.1:9999/v1", "OPENAI_API_KEY": "sk-test", "REDIS_URL": "redis://127.0.0.1:1/0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Providers["openai"]; p.BaseURL != "http://127.0.0.1:9999/v1" || p.APIKey != "sk-test" {
		t.Fatalf("openai provider %+v", p)
	}
	if p := cfg.Providers["gemini"]; p.BaseURL != "https://generativelanguage.googleapis.com/v1beta/openai" {
		t.Fatalf("gemini default base %q", p.BaseURL)
	}
	if len(cfg.Redis.Addrs) != 0 {
		t.Fatalf("redis.addrs without REDIS_ADDRS: %q", cfg.Redis.Addrs)
	}
	clustered, err := Parse(data, env(map[string]string{"REDIS_ADDRS": "127.0.0.1:7001, 127.0.0.1:7002,127.0.0.1:7003"}))
	if err != nil || len(clustered.Redis.Addrs) != 3 || clustered.Redis.Addrs[1] != "127.0.0.1:7002" {
		t.Fatalf("REDIS_ADDRS: %q %v", clustered.Redis.Addrs, err)
	}
	if cfg.Redis.URL != "redis://127.0.0.1:1/0" || cfg.Proxy.MaxBodyBytes != 8<<20 || cfg.Proxy.StreamTimeout.D() != 30*time.Minute {
		t.Fatalf("values: %+v %+v", cfg.Redis, cfg.Proxy)
	}
	cat, err := pricing.New(cfg.Pricing)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"gpt-4o-mini": "core", "deepseek-chat": "core", "gemini-flash": "core",
		"gemini-2.5-flash": "pro", "gpt-4.1-mini": "pro", "deepseek-r1": "pro",
		"claude-sonnet": "ultra", "gpt-4.1": "ultra", "claude-opus": "ultra",
	}
	for id, tier := range want {
		m, err := cat.Lookup(id)
		if err != nil || m.Tier != tier {
			t.Errorf("%s: %v tier %v, want %s", id, err, m, tier)
		}
	}
	for _, id := range []string{"gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1"} {
		if m, _ := cat.Lookup(id); m.Deployments[0].Provider != "openai" {
			t.Errorf("%s goes to %q, want openai", id, m.Deployments[0].Provider)
		}
	}
	p, err := cat.Pack("growth")
	if err != nil || p.Credits != 2_374_050_000 {
		t.Fatalf("growth pack %+v %v", p, err)
	}

	matches, _ := filepath.Glob("../../configs/examples/*.yaml")
	for _, f := range matches {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestBadFileReportsEveryProblem: a bad file is refused with each problem and
// its YAML path, all at once.
func TestBadFileReportsEveryProblem(t *testing.T) {
	bad := `
proxy:
  max_body_bytes: 10
  read_timeout: -5s
billing:
  admin_token: short
  webhooks:
    - {url: "ftp://hooks.example", secret: short, events: [balance.low, balance.high]}
    - {url: "http://127.0.0.1:9000/hook", secret: "0123456789abcdef"}
    - {url: "http://127.0.0.1:9000/hook", secret: "0123456789abcdef"}
providers:
  openai: {kind: grpc, base_url: "ftp://x"}
pricing:
  credits_per_usd: 0
  fee_bps: 500
  tiers: {core: {input: 1, output: 2}}
  models:
    - {id: m, tier: nope, context_window: 10, max_output_tokens: 5, deployments: [{provider: ghost, model: x}]}
log:
  level: loud
`
	_, err := Parse([]byte(bad), env(nil))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	if strings.Contains(err.Error(), "billing.webhooks[1].") || strings.Contains(err.Error(), "events[0]:") {
		t.Errorf("a good webhook (or event) is reported:\n%v", err)
	}
	for _, want := range []string{
		"proxy.max_body_bytes", "proxy.read_timeout", "billing.admin_token", "providers.openai.kind",
		"providers.openai.base_url", "pricing.credits_per_usd", "pricing.models[0].tier",
		"pricing.models[0].deployments[0].provider", "log.level",
		"billing.webhooks[0].url", "billing.webhooks[0].secret", "billing.webhooks[0].events[1]", "billing.webhooks[2].url",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestUnknownKeyAndBadDuration(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown key":  "proxy:\n  adress: x\n",
		"bad duration": "proxy:\n  read_timeout: soon\n",
		"not YAML":     "proxy: [\n",
	} {
		if _, err := Parse([]byte(doc), env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestChanged(t *testing.T) {
	lookup := func(string) (string, bool) { return "", false }
	base := `
providers: {p: {base_url: "http://x"}}
pricing:
  credits_per_usd: 100000
  tiers: {core: {input: 1, output: 2}}
  models: [{id: m, tier: core, context_window: 1000, max_output_tokens: 100, deployments: [{provider: p, model: m}]}]
`
	a, err := Parse([]byte(base), lookup)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(base+"log: {level: debug}\nproxy: {addr: \"127.0.0.1:9\", drain_timeout: 5s}\nredis: {url: \"redis://h:1/0\"}\n"), lookup)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Changed(a, b), " ")
	if want := "log.level proxy.addr proxy.drain_timeout redis.url"; got != want {
		t.Errorf("Changed = %q, want %q", got, want)
	}
	if c := Changed(a, a); len(c) != 0 {
		t.Errorf("Changed(a, a) = %v", c)
	}
	if !Under("log.level", "log") || Under("logx", "log") || !Under("log", "log") {
		t.Error("Under")
	}
}

// TestEveryProblemWithItsPath: a file with several mistakes is refused with
// each of them, named by YAML path, and no Go type names.
func TestEveryProblemWithItsPath(t *testing.T) {
	doc := `
proxy:
  drain_timout: 5s
  stream_timeout: soon
  max_body_bytes: lots
  credit_lease: maybe
providers:
  p: {base_url: "http://x", kindd: openai}
pricing:
  credits_per_usd: 100000
  tiers: {core: {input: 1, output: 2}}
  models: [{id: m, tier: core, context_window: 1000, max_output_tokens: 100, deployments: [{provider: p, model: m, weight: 2}]}]
plans:
  - {id: pro, stripe_price_id: price_1, limits: {requets: 5}}
log: {level: loud}
bogus: 1
`
	_, err := Parse([]byte(doc), env(nil))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`proxy.drain_timout (line 3): unknown key (did you mean "drain_timeout"?)`,
		`proxy.stream_timeout (line 4): "soon" is not a duration`,
		`proxy.max_body_bytes (line 5): "lots" is not a whole number`,
		`proxy.credit_lease (line 6): "maybe" is not true or false`,
		`providers.p.kindd (line 8): unknown key (did you mean "kind"?)`,
		`pricing.models[0].deployments[0].weight (line 12): unknown key`,
		`plans[0].limits.requets (line 14): unknown key (did you mean "requests"?)`,
		`bogus (line 16): unknown key`,
		`log.level: must be debug, info, warn or error`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	for _, goName := range []string{"config.", "pricing.Spec", "time.Duration", "int64"} {
		if strings.Contains(msg, goName) {
			t.Errorf("the report names a Go type (%s):\n%s", goName, msg)
		}
	}
}

// A rate reads its own text (pricing.Rate): a bad one is reported with its
// YAML path and line like any other value, every one of them.
func TestBadRatesWithTheirPaths(t *testing.T) {
	doc := "pricing:\n  credits_per_usd: 100000\n  tiers: {core: {input: 1, output: 2}, pro: {input: 1.5x, output: [3], cached_input: -1}}\n"
	_, err := Parse([]byte(doc), env(nil))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`pricing.tiers.pro.input (line 3): rate "1.5x": not a decimal number`,
		`pricing.tiers.pro.output (line 3): must be a single value`,
		`pricing.tiers.pro.cached_input (line 3): `,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%s", want, err)
		}
	}
}

// Breaker, retry and weighted keys: defaults filled in, every bad value
// reported with its YAML path.
func TestBreakerRetryAndKeys(t *testing.T) {
	base := `
pricing:
  credits_per_usd: 100000
  tiers: {core: {input: 1, output: 2}}
  models: [{id: m, tier: core, context_window: 1000, max_output_tokens: 100, deployments: [{provider: p, model: m}]}]
`
	cfg, err := Parse([]byte(base+`
providers:
  p: {base_url: "http://x", api_keys: [{key: a, weight: 3}, {key: b}]}
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.Proxy.Breaker; b.Failures != 5 || b.CoolDown.D() != 30*time.Second {
		t.Errorf("breaker defaults %+v", b)
	}
	if r := cfg.Proxy.Retry; r.Attempts != 0 || r.Backoff.D() != 100*time.Millisecond || r.MaxBackoff.D() != 2*time.Second {
		t.Errorf("retry defaults %+v", r)
	}
	if k := cfg.Providers["p"].APIKeys; len(k) != 2 || k[0].Weight != 3 || k[1].Weight != 1 {
		t.Errorf("keys %+v", k)
	}
	_, err = Parse([]byte(base+`
proxy:
  breaker: {failures: -1, cool_down: -1s}
  retry: {attempts: 11, backoff: 5s, max_backoff: 1s}
providers:
  p: {base_url: "http://x", api_key: k, api_keys: [{key: "", weight: -2}]}
`), env(nil))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"proxy.breaker.failures: must be at least 1, got -1",
		"proxy.breaker.cool_down: must not be negative",
		"proxy.retry.attempts: must be 0 to 10, got 11",
		"proxy.retry.backoff: must not exceed max_backoff",
		"providers.p.api_keys: set api_key or api_keys, not both",
		"providers.p.api_keys[0].key: is required",
		"providers.p.api_keys[0].weight: must be 1 to 1000000, got -2",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%s", want, err)
		}
	}
}

// TestHoldTTLOutlivesEveryCall: a hold must outlive the longest call by
// HoldMargin (its settle follows its timeout), or a running call's credits
// could be spent elsewhere and its settle capped.
func TestHoldTTLOutlivesEveryCall(t *testing.T) {
	base := `
pricing:
  credits_per_usd: 100000
  tiers: {core: {input: 1, output: 2}}
  models: [{id: m, tier: core, context_window: 1000, max_output_tokens: 100, deployments: [{provider: p, model: m}]}]
providers:
  p: {base_url: "http://x", api_key: k}
`
	for _, tc := range []struct {
		name, proxy string
		ok          bool
		ttl         time.Duration
	}{
		{"defaults", "", true, 31 * time.Minute},
		{"default follows the longer request timeout", "{request_timeout: 40m}", true, 41 * time.Minute},
		{"equal to the stream timeout", "{stream_timeout: 10m, hold_ttl: 10m}", false, 0},
		{"within the margin of the request timeout", "{stream_timeout: 1m, request_timeout: 10m, hold_ttl: 603s}", false, 0},
		{"past the margin", "{stream_timeout: 10m, hold_ttl: 605s}", true, 605 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := base
			if tc.proxy != "" {
				doc += "proxy: " + tc.proxy + "\n"
			}
			cfg, err := Parse([]byte(doc), env(nil))
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "proxy.hold_ttl: must outlive the longest call") {
					t.Fatalf("accepted or wrong error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Proxy.HoldTTL.D(); got != tc.ttl {
				t.Fatalf("hold_ttl %s, want %s", got, tc.ttl)
			}
		})
	}
}
