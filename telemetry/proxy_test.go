package telemetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

func testCatalog(t testing.TB) *pricing.Catalog {
	t.Helper()
	dep := func(p, m string) []pricing.DeploymentSpec { return []pricing.DeploymentSpec{{Provider: p, Model: m}} }
	c, err := pricing.New(pricing.Spec{
		CreditsPerUSD: 100000, FeeBps: 500,
		Tiers: map[string]pricing.TierSpec{"core": {Input: pricing.Per1K(1), Output: pricing.Per1K(2)}, "pro": {Input: pricing.Per1K(3), Output: pricing.Per1K(6)}},
		Models: []pricing.ModelSpec{
			{ID: "gpt-4o-mini", Tier: "core", ContextWindow: 128000, MaxOutputTokens: 16384, Deployments: dep("openai", "gpt-4o-mini")},
			{ID: "claude-sonnet", Tier: "pro", ContextWindow: 200000, MaxOutputTokens: 64000, Deployments: dep("anthropic", "claude-sonnet-4-5")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exposition renders reg in the Prometheus text format.
func exposition(t testing.TB, reg *Registry) string {
	t.Helper()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestProxyFamilies(t *testing.T) {
	reg := New()
	cat := testCatalog(t)
	p := reg.NewProxy(cat, []string{"anthropic", "openai"})
	reg.LeaseCredits(func() int64 { return 12345 })
	mini, _ := cat.Lookup("gpt-4o-mini")

	start := exposition(t, reg)
	for _, want := range []string{
		"tollgate_store_errors_total 0\n",
		"tollgate_calls_over_hold_total 0\n",
		"tollgate_lease_credits 12.345\n",
		// resolved at start: every model on every endpoint at 200, at 0
		`tollgate_requests_total{code="200",endpoint="chat.completions",model="gpt-4o-mini",provider="openai",tier="core"} 0`,
		`tollgate_credits_charged_total{model="claude-sonnet",tier="pro"} 0`,
		"go_goroutines ", "process_cpu_seconds_total ",
	} {
		if !strings.Contains(start, want) {
			t.Errorf("exposition at start lacks %q", want)
		}
	}

	p.CallEnded(proxy.CallEvent{Endpoint: "chat.completions", Model: mini, Provider: "openai", Status: 200,
		Latency: 120 * time.Millisecond, TTFB: 40 * time.Millisecond, Input: 100, CachedInput: 20, CacheWrite: 5, Output: 58,
		Charged: 216, OverHold: true})
	p.CallEnded(proxy.CallEvent{Endpoint: "chat.completions", Stream: true, Model: mini, Provider: "openai", Status: 200,
		Latency: 2 * time.Second, TTFB: 300 * time.Millisecond, Input: 10, Output: 1, Charged: 1001})
	p.CallEnded(proxy.CallEvent{Endpoint: "chat.completions", Status: 404, Latency: time.Millisecond}) // unknown model
	p.CallEnded(proxy.CallEvent{Endpoint: "messages", Status: 401, Latency: time.Millisecond})
	p.UpstreamFailed("openai", proxy.ReasonStreamCut)
	p.BreakerChanged("openai", "gpt-4o", proxy.BreakerClosed, proxy.BreakerOpen)
	p.BreakerChanged("openai", "gpt-4o", proxy.BreakerOpen, proxy.BreakerHalfOpen)
	out := exposition(t, reg)
	for _, want := range []string{
		`tollgate_requests_total{code="200",endpoint="chat.completions",model="gpt-4o-mini",provider="openai",tier="core"} 2`,
		`tollgate_requests_total{code="404",endpoint="chat.completions",model="unknown",provider="none",tier="none"} 1`,
		`tollgate_requests_total{code="401",endpoint="messages",model="unknown",provider="none",tier="none"} 1`,
		`tollgate_tokens_total{kind="input",model="gpt-4o-mini"} 110`,
		`tollgate_tokens_total{kind="cached_input",model="gpt-4o-mini"} 20`,
		`tollgate_tokens_total{kind="cache_write",model="gpt-4o-mini"} 5`,
		`tollgate_tokens_total{kind="output",model="gpt-4o-mini"} 59`,
		`tollgate_credits_charged_total{model="gpt-4o-mini",tier="core"} 1.217`,
		"tollgate_calls_over_hold_total 1\n",
		`tollgate_upstream_errors_total{provider="openai",reason="stream_cut"} 1`,
		`tollgate_deployment_breaker_state{model="gpt-4o",provider="openai"} 2`,
		`tollgate_deployment_breaker_changes_total{model="gpt-4o",provider="openai",to="open"} 1`,
		`tollgate_request_duration_seconds_bucket{endpoint="chat.completions",stream="false",le="0.25"} 2`,
		`tollgate_request_duration_seconds_bucket{endpoint="chat.completions",stream="true",le="2.5"} 1`,
		`tollgate_request_duration_seconds_count{endpoint="chat.completions",stream="true"} 1`,
		`tollgate_time_to_first_byte_seconds_bucket{endpoint="chat.completions",stream="false",le="0.05"} 1`,
		`tollgate_time_to_first_byte_seconds_count{endpoint="chat.completions",stream="true"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	for _, banned := range []string{"account", "key_id"} {
		if strings.Contains(out, banned+"=") {
			t.Errorf("exposition has a %s label", banned)
		}
	}
	promtoolCheck(t, out)
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus package)
// on an exposition: skipped when promtool is missing, failed under CI=true.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found (apt-get install -y prometheus)")
		}
		t.Skip("promtool not found (apt-get install -y prometheus)")
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestProxyCardinality: whatever the calls, the label values stay within
// the fixed sets (an unknown model is "unknown", whatever it was called).
func TestProxyCardinality(t *testing.T) {
	reg := New()
	p := reg.NewProxy(testCatalog(t), []string{"openai"})
	for i := range 1000 {
		p.CallEnded(proxy.CallEvent{Endpoint: "chat.completions", Status: 404, Latency: time.Millisecond})
		p.CallEnded(proxy.CallEvent{Endpoint: "chat.completions", Status: 400 + i%3, Latency: time.Millisecond})
	}
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tollgate_requests_total" {
			// 2 models × 5 endpoints at 200, then 400, 401, 402, 404 of "unknown".
			if n := len(mf.GetMetric()); n != 2*len(Endpoints)+4 {
				t.Fatalf("tollgate_requests_total has %d series, want %d", n, 2*len(Endpoints)+4)
			}
		}
	}
}

// TestProxyConcurrent: many goroutines end calls at once, some on series
// not resolved yet; no count is lost (run with -race).
func TestProxyConcurrent(t *testing.T) {
	reg := New()
	cat := testCatalog(t)
	p := reg.NewProxy(cat, []string{"openai", "anthropic"})
	mini, _ := cat.Lookup("gpt-4o-mini")
	const workers, calls = 16, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				p.CallEnded(proxy.CallEvent{Endpoint: Endpoints[i%len(Endpoints)], Model: mini, Provider: "openai",
					Status: 200 + w%4, Latency: time.Millisecond, Output: 1, Charged: 3})
				p.UpstreamFailed("openai", proxy.ReasonTimeout)
			}
		}()
	}
	wg.Wait()
	out := exposition(t, reg)
	want := fmt.Sprintf(`tollgate_credits_charged_total{model="gpt-4o-mini",tier="core"} %g`, float64(workers*calls*3)/1000)
	if !strings.Contains(out, want) {
		t.Errorf("exposition lacks %q", want)
	}
	if want := fmt.Sprintf(`tollgate_upstream_errors_total{provider="openai",reason="timeout"} %d`, workers*calls); !strings.Contains(out, want) {
		t.Errorf("exposition lacks %q", want)
	}
	if want := fmt.Sprintf(`tollgate_tokens_total{kind="output",model="gpt-4o-mini"} %d`, workers*calls); !strings.Contains(out, want) {
		t.Errorf("exposition lacks %q", want)
	}
	var total float64
	mfs, _ := reg.Gatherer().Gather()
	for _, mf := range mfs {
		if mf.GetName() == "tollgate_requests_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	if total != workers*calls {
		t.Errorf("requests counted %v, want %d", total, workers*calls)
	}
}

func TestBillingWebhooks(t *testing.T) {
	reg := New()
	b := reg.NewBilling()
	b.Webhook("checkout.session.completed", "processed")
	b.Webhook("unknown", "bad_signature")
	out := exposition(t, reg)
	for _, want := range []string{
		`tollgate_webhooks_total{result="processed",type="checkout.session.completed"} 1`,
		`tollgate_webhooks_total{result="bad_signature",type="unknown"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	promtoolCheck(t, out)
}

func TestStoreFailure(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{redis.Nil, false},
		{context.Canceled, false},
		{replyErr("NOSCRIPT No matching script. Please use EVAL."), false},
		{replyErr("BUSYGROUP Consumer Group name already exists"), false},
		{replyErr("ERR credit: entry type x is not an operator credit"), false},
		{replyErr("READONLY You can't write against a read only replica."), true},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), true},
		{context.DeadlineExceeded, true},
		{replyErr("OOM command not allowed when used memory > 'maxmemory'."), true},
	} {
		if got := storeFailure(c.err); got != c.want {
			t.Errorf("storeFailure(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// replyErr is an error reply of the server, as go-redis returns it.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func TestListenTaken(t *testing.T) {
	reg := New()
	srv, err := reg.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = New().Listen(srv.Addr().String(), nil)
	if err == nil || !strings.Contains(err.Error(), "metrics listen on "+srv.Addr().String()) {
		t.Fatalf("a taken metrics address: %v, want a clear error", err)
	}
}

var _ prometheus.Collector = (*creditsVec)(nil)
