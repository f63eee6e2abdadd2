package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
)

// prometheusBinary returns the path of name (prometheus, promtool: Debian's
// prometheus package), skipping the test when it is missing — failing it
// under CI=true, where .ci/run installs it.
func prometheusBinary(t *testing.T, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: apt-get install -y prometheus", name)
		}
		t.Skipf("%s not found: apt-get install -y prometheus", name)
	}
	return bin
}

// TestPrometheus starts tollgate proxy and tollgate billing with metrics on
// their own ports, a real Prometheus scraping both, makes calls, and reads
// the series back through Prometheus's HTTP API; promtool check metrics
// passes on both expositions. A taken metrics address fails the start.
func TestPrometheus(t *testing.T) {
	promBin := prometheusBinary(t, "prometheus")
	promtool := prometheusBinary(t, "promtool")
	rs := testredis.Start(t)
	_, mockURL, err := mockllm.Start(mockllm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.Repeat("m", 40)
	t.Setenv("REDIS_URL", rs.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", admin)
	t.Setenv("OPENAI_BASE_URL", mockURL)
	t.Setenv("OPENAI_API_KEY", "sk-test")
	t.Setenv("STRIPE_WEBHOOK_SECRET", "whsec_test_prometheus")
	paddr, baddr, pm, bm := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, "proxy", "--config", "../../configs/tollgate.yaml", "--addr", paddr, "--metrics-addr", pm)
	start(t, "billing", "--config", "../../configs/tollgate.yaml", "--addr", baddr, "--metrics-addr", bm)
	P, B := "http://"+paddr, "http://"+baddr
	waitHTTP(t, P+"/healthz")
	waitHTTP(t, B+"/healthz")
	waitHTTP(t, "http://"+pm+"/metrics")
	waitHTTP(t, "http://"+bm+"/metrics")

	// A second proxy on the same metrics address does not start.
	err = run(context.Background(), []string{"proxy", "--config", "../../configs/tollgate.yaml", "--addr", freeAddr(t), "--metrics-addr", pm}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "metrics listen on "+pm) {
		t.Fatalf("proxy on a taken metrics address: %v, want a clear error", err)
	}

	// Calls: served (plain and streamed), refused (unknown model), and a
	// webhook with a bad signature.
	if st, _, m := call(t, "POST", B+"/admin/v1/accounts", admin, `{"id":"prom"}`); st != 201 {
		t.Fatalf("create account: %d %v", st, m)
	}
	_, _, k := call(t, "POST", B+"/admin/v1/accounts/prom/keys", admin, `{"name":"ci"}`)
	key, _ := k["key"].(string)
	if st, _, m := call(t, "POST", B+"/admin/v1/accounts/prom/credits", admin, `{"credits":1000,"reference":"grant-1"}`); st != 200 {
		t.Fatalf("credit: %d %v", st, m)
	}
	for range 3 {
		if st, _, m := call(t, "POST", P+"/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}`); st != 200 {
			t.Fatalf("chat: %d %v", st, m)
		}
	}
	req, _ := http.NewRequest("POST", P+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16,"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+key)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if st, _, _ := call(t, "POST", P+"/v1/chat/completions", key, `{"model":"no-such-model","messages":[]}`); st != 404 {
		t.Fatalf("unknown model: %d", st)
	}
	if st, _, _ := call(t, "POST", B+"/v1/billing/webhook", "", `{"id":"evt_1","type":"checkout.session.completed"}`); st != 400 {
		t.Fatalf("unsigned webhook: %d", st)
	}

	// promtool on both expositions.
	for _, addr := range []string{pm, bm} {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool check metrics on %s: %v\n%s", addr, err, out)
		}
	}

	// A real Prometheus scraping both.
	dir := t.TempDir()
	promAddr := freeAddr(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tollgate-proxy
    static_configs: [{targets: [%q]}]
  - job_name: tollgate-billing
    static_configs: [{targets: [%q]}]
`, pm, bm)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	prom := exec.CommandContext(ctx, promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr, "--log.level=warn")
	var promOut syncBuffer
	prom.Stdout, prom.Stderr = &promOut, &promOut
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = prom.Wait() })

	query := func(q string) []promSample {
		u := "http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q)
		resp, err := http.Get(u)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []promSample `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" {
			return nil
		}
		return r.Data.Result
	}
	// Each query and the value it must reach once Prometheus has scraped.
	checks := []struct {
		q    string
		want float64
	}{
		{`tollgate_requests_total{job="tollgate-proxy",endpoint="chat.completions",model="gpt-4o-mini",tier="core",provider="openai",code="200"}`, 4},
		{`tollgate_requests_total{job="tollgate-proxy",model="unknown",tier="none",provider="none",code="404"}`, 1},
		{`sum(tollgate_tokens_total{job="tollgate-proxy",model="gpt-4o-mini",kind="output"}) > 0`, -1},
		{`tollgate_credits_charged_total{job="tollgate-proxy",model="gpt-4o-mini",tier="core"} > 0`, -1},
		{`tollgate_request_duration_seconds_count{job="tollgate-proxy",endpoint="chat.completions",stream="false"}`, 4},
		{`tollgate_request_duration_seconds_count{job="tollgate-proxy",endpoint="chat.completions",stream="true"}`, 1},
		{`sum(tollgate_time_to_first_byte_seconds_bucket{job="tollgate-proxy",le="+Inf"})`, 4},
		{`tollgate_store_errors_total{job="tollgate-proxy"} >= 0`, -1},
		{`tollgate_calls_over_hold_total{job="tollgate-proxy"}`, 0},
		{`tollgate_lease_credits{job="tollgate-proxy"} >= 0`, -1},
		{`tollgate_webhooks_total{job="tollgate-billing",type="unknown",result="bad_signature"}`, 1},
		{`tollgate_store_errors_total{job="tollgate-billing"} >= 0`, -1},
		{`go_goroutines{job="tollgate-billing"} > 0`, -1},
		{`process_resident_memory_bytes{job="tollgate-proxy"} > 0`, -1},
		{`up{job=~"tollgate-.*"} == 1`, -2},
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, c := range checks {
		for {
			res := query(c.q)
			ok := false
			switch {
			case c.want == -2:
				ok = len(res) == 2
			case c.want == -1:
				ok = len(res) == 1
			case len(res) == 1:
				ok = res[0].value() == c.want
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus query %s: %v, want %v\nprometheus: %s", c.q, res, c.want, promOut.String())
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	// No account or key id is a label of any series.
	for _, bad := range []string{"account", "key", "key_id"} {
		if res := query(fmt.Sprintf(`{job=~"tollgate-.*",%s!=""}`, bad)); len(res) != 0 {
			t.Fatalf("series with a %s label: %v", bad, res)
		}
	}
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

var numRE = regexp.MustCompile(`^[-+0-9.eE]+$`)

func (s promSample) value() float64 {
	v, _ := s.Value[1].(string)
	if !numRE.MatchString(v) {
		return -1
	}
	var f float64
	fmt.Sscanf(v, "%g", &f)
	return f
}
