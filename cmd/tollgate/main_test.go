package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/pricing"
)

// syncBuffer is a goroutine-safe output sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func freeAddr(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testredis.FreePort(t)))
}

// start runs the program in the background until the test ends.
func start(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	if sub := args[0]; (sub == "proxy" || sub == "billing" || sub == "dev") && !slices.Contains(args, "--metrics-addr") {
		// Tests run side by side: each process its own metrics port.
		args = append(slices.Clone(args), "--metrics-addr", "127.0.0.1:0")
	}
	go func() { done <- run(ctx, args, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v exited with %v\n%s", args, err, out)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("%v did not stop", args)
		}
	})
	return out
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered", url)
}

func call(t *testing.T, method, url, auth, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: not JSON: %s", method, url, b)
		}
	}
	return resp.StatusCode, resp.Header, m
}

// TestContract drives the two processes exactly as the contract
// states: tollgate proxy and tollgate billing with REDIS_URL and
// TOLLGATE_ADMIN_TOKEN, the admin API, then a metered call.
func TestContract(t *testing.T) {
	rs := testredis.Start(t)
	_, mockURL, err := mockllm.Start(mockllm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.Repeat("a", 40)
	t.Setenv("REDIS_URL", rs.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", admin)
	t.Setenv("OPENAI_BASE_URL", mockURL)
	t.Setenv("OPENAI_API_KEY", "sk-test")
	paddr, baddr := freeAddr(t), freeAddr(t)
	start(t, "proxy", "--config", "../../configs/tollgate.yaml", "--addr", paddr)
	start(t, "billing", "--config", "../../configs/tollgate.yaml", "--addr", baddr)
	P, B := "http://"+paddr, "http://"+baddr
	waitHTTP(t, P+"/healthz")
	waitHTTP(t, B+"/healthz")

	if st, _, m := call(t, "POST", B+"/admin/v1/accounts", admin, `{"id":"acme"}`); st != 201 || m["id"] != "acme" {
		t.Fatalf("create account: %d %v", st, m)
	}
	if st, _, _ := call(t, "POST", B+"/admin/v1/accounts", admin, `{"id":"acme"}`); st != 409 {
		t.Fatalf("duplicate account: %d", st)
	}
	if st, _, _ := call(t, "POST", B+"/admin/v1/accounts", "wrong-token-wrong-token-wrong-token", `{"id":"x"}`); st != 401 {
		t.Fatalf("wrong admin token: %d", st)
	}
	st, _, k := call(t, "POST", B+"/admin/v1/accounts/acme/keys", admin, `{"name":"ci"}`)
	key, _ := k["key"].(string)
	if st != 201 || key == "" || k["id"] == "" {
		t.Fatalf("create key: %d %v", st, k)
	}
	for i := 0; i < 2; i++ {
		st, _, m := call(t, "POST", B+"/admin/v1/accounts/acme/credits", admin, `{"credits":1000,"reference":"grant-1"}`)
		if st != 200 || m["balance"] != 1000.0 {
			t.Fatalf("credit #%d: %d %v", i+1, st, m)
		}
	}
	st, h, m := call(t, "POST", P+"/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi there"}]}`)
	if st != 200 {
		t.Fatalf("chat: %d %v", st, m)
	}
	u := m["usage"].(map[string]any)
	want := u["prompt_tokens"].(float64)*1 + u["completion_tokens"].(float64)*2 // core: 1/2 mc per token
	if h.Get("X-Credits-Charged") != pricing.FormatCredits(int64(want)) || h.Get("X-Credits-Tier") != "core" || h.Get("X-Request-Id") == "" {
		t.Fatalf("headers %v, want charged %s", h, pricing.FormatCredits(int64(want)))
	}
	// The proxy applies the charge just after answering (credit leases):
	// the account shows it within moments.
	settled(t, func() (map[string]any, bool) {
		_, _, acct := call(t, "GET", B+"/admin/v1/accounts/acme", admin, "")
		for _, f := range []string{"id", "balance", "reserved", "total_purchased", "total_consumed"} {
			if _, ok := acct[f]; !ok {
				t.Fatalf("account lacks %q: %v", f, acct)
			}
		}
		return acct, acct["total_consumed"].(float64)*1000 == want && acct["balance"].(float64) == 1000-want/1000
	})
	// Revoke: 204, then the proxy refuses the key within a second.
	if st, _, _ := call(t, "DELETE", B+"/admin/v1/accounts/acme/keys/"+k["id"].(string), admin, ""); st != 204 {
		t.Fatalf("revoke: %d", st)
	}
	deadline := time.Now().Add(time.Second)
	for {
		st, _, _ := call(t, "POST", P+"/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":[]}`)
		if st == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key still works: %d", st)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestDevQuickStart is `make run` as a new user meets it: no REDIS_URL, no
// provider keys; the printed curl line works as pasted.
func TestDevQuickStart(t *testing.T) {
	for _, k := range []string{"REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY", "TOLLGATE_ADMIN_TOKEN", "TOLLGATE_JWT_SECRET"} {
		t.Setenv(k, "")
	}
	paddr, baddr := freeAddr(t), freeAddr(t)
	out := start(t, "dev", "--config", "../../configs/tollgate.yaml", "--addr", paddr, "--billing-addr", baddr)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl+C") {
		if time.Now().After(deadline) {
			t.Fatalf("no banner:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	banner := out.String()
	if !strings.Contains(banner, "EMBEDDED IN-MEMORY Redis") || !strings.Contains(banner, "LOST when this process stops") {
		t.Fatalf("no loud warning about the embedded store:\n%s", banner)
	}
	curl := regexp.MustCompile(`curl -i (\S+) -H "Authorization: Bearer (\S+)" -H "Content-Type: application/json" -d '([^']+)'`).FindStringSubmatch(banner)
	if curl == nil {
		t.Fatalf("no curl line in banner:\n%s", banner)
	}
	st, h, m := call(t, "POST", curl[1], curl[2], curl[3])
	if st != 200 || h.Get("X-Credits-Charged") == "" || h.Get("X-Credits-Balance") == "" {
		t.Fatalf("pasted curl: %d %v %v", st, h, m)
	}
	if bal := h.Get("X-Credits-Balance"); !strings.HasPrefix(bal, "999.") {
		t.Fatalf("demo balance after one call %q, want just under 1000", bal)
	}
	jwt := regexp.MustCompile(`user JWT (\S+)`).FindStringSubmatch(banner)
	if jwt == nil {
		t.Fatal("no user JWT in banner")
	}
	settled(t, func() (map[string]any, bool) {
		st, _, m := call(t, "GET", "http://"+baddr+"/v1/api-credits", jwt[1], "")
		if st != 200 {
			t.Fatalf("api-credits with the printed JWT: %d %v", st, m)
		}
		return m, m["total_consumed"].(float64) > 0
	})
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, &out, &out); err == nil {
		t.Fatal("unknown command accepted")
	}
	if err := run(context.Background(), []string{"proxy", "--config", "/nonexistent.yaml"}, &out, &out); err == nil {
		t.Fatal("missing config accepted")
	}
}

// TestHelp: every command's -h and --help works without Redis or a
// configuration file and lists the environment variables — every ${VAR} of
// the shipped configuration among them.
func TestHelp(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://127.0.0.1:1/0") // nothing listens: help must not need it
	t.Setenv("TOLLGATE_CONFIG", "/nonexistent/tollgate.yaml")
	shipped, err := os.ReadFile("../../configs/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`\$\{([A-Z0-9_]+)`).FindAllStringSubmatch(string(shipped), -1)
	if len(vars) < 10 {
		t.Fatalf("found only %d ${VAR} in the shipped config", len(vars))
	}
	for _, cmd := range []string{"proxy", "billing", "dev", "admin"} {
		for _, flagName := range []string{"-h", "--help"} {
			var out bytes.Buffer
			err := run(context.Background(), []string{cmd, flagName}, &out, &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("%s %s: %v, want flag.ErrHelp\n%s", cmd, flagName, err, out.String())
			}
			text := out.String()
			for _, v := range append(vars, []string{"", "TOLLGATE_CONFIG"}) {
				if !strings.Contains(text, v[1]) {
					t.Errorf("%s %s does not list %s", cmd, flagName, v[1])
				}
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, &out, &out); err != nil || !strings.HasPrefix(out.String(), "tollgate ") ||
		!strings.Contains(out.String(), "commit") || !strings.Contains(out.String(), "built") {
		t.Errorf("--version: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"version"}, &out, &out); err != nil || !strings.HasPrefix(out.String(), "tollgate dev\n") {
		t.Errorf("version (unstamped): %v\n%s", err, out.String())
	}
}
