package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/webhooks"
)

const (
	adminToken    = "e2e-admin-token-0123456789abcdef-0123456789"
	jwtSecret     = "e2e-jwt-secret-0123456789abcdef-0123456789"
	webhookSecret = "whsec_e2e_0123456789abcdef"
	hookSecret    = "e2e-outgoing-0123456789abcdef"
	chromium      = "/usr/bin/chromium"
)

// need fails under CI=true and skips otherwise when a tool is missing.
func need(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI", what)
	}
	t.Skipf("%s is missing; skipping (CI=true makes this fatal)", what)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestConsole(t *testing.T) {
	if os.Getenv("TOLLGATE_E2E") != "1" {
		t.Skip("browser tests run with `make e2e` (TOLLGATE_E2E=1)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	_, nodeErr := exec.LookPath("node")
	need(t, "node", nodeErr == nil)
	need(t, chromium+" (apt-get install chromium)", exists(chromium))
	need(t, "e2e/node_modules (npm ci in e2e/)", exists(filepath.Join(root, "e2e", "node_modules", "playwright-core")))

	out := os.Getenv("E2E_OUT")
	if out == "" {
		out = filepath.Join(root, "e2e", "out")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	// TOLLGATE_BIN names a built tollgate; otherwise build one.
	bin := os.Getenv("TOLLGATE_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "tollgate")
		build := exec.Command("go", "build", "-o", bin, "./cmd/tollgate")
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building tollgate: %v\n%s", err, b)
		}
	}

	rs := testredis.Start(t)
	mock := teststripe.Start(t)
	// Two receivers of outgoing events: one takes them (delivered), one
	// answers 500 (pending, retried), so the operator's panel shows both.
	hooks := &receiver{}
	hookOK := httptest.NewServer(hooks)
	t.Cleanup(hookOK.Close)
	hookDown := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "receiver is down", http.StatusInternalServerError)
	}))
	t.Cleanup(hookDown.Close)
	cfg := withWebhooks(t, filepath.Join(root, "configs", "tollgate.yaml"), hookOK.URL+"/hooks/ok",
		hookDown.URL+"/hooks/down?note=<b>hostile</b>") // the console shows the URL as text
	billingURL := "http://127.0.0.1:" + fmt.Sprint(testredis.FreePort(t))
	startBilling(t, bin, cfg, billingURL, rs, mock)

	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	helper := httptest.NewServer(helperHandler(metering.New(rdb, metering.Options{}), billingURL))
	t.Cleanup(helper.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", "console.test.mjs")
	node.Dir = filepath.Join(root, "e2e")
	node.Env = append(os.Environ(), "BILLING_URL="+billingURL, "HELPER_URL="+helper.URL,
		"ADMIN_TOKEN="+adminToken, "OUT_DIR="+out, "CHROMIUM="+chromium)
	logs, err := node.CombinedOutput()
	t.Logf("browser test output:\n%s", logs)
	if err != nil {
		t.Fatalf("browser tests failed: %v", err)
	}
	t.Logf("screenshots in %s", out)
	if hooks.count() == 0 {
		t.Error("the receiver got no signed event")
	}
}

// withWebhooks writes a copy of the shipped config whose billing section
// names the given endpoints for outgoing events, and returns its path.
func withWebhooks(t *testing.T, shipped string, urls ...string) string {
	t.Helper()
	b, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	var list strings.Builder
	list.WriteString("billing:\n  webhooks:\n")
	for _, u := range urls {
		fmt.Fprintf(&list, "    - {url: %q, secret: %q}\n", u, hookSecret)
	}
	text := string(b)
	if !strings.Contains(text, "\nbilling:\n") {
		t.Fatalf("%s has no billing section", shipped)
	}
	text = strings.Replace(text, "\nbilling:\n", "\n"+list.String(), 1)
	p := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// receiver takes outgoing events, checking each signature.
type receiver struct {
	mu sync.Mutex
	n  int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := webhooks.Verify(r.Header.Get(webhooks.SignatureHeader), body, hookSecret, 5*time.Minute); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	rc.mu.Lock()
	rc.n++
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n
}

// startBilling starts `tollgate billing` with the config at cfg and waits
// until it listens.
func startBilling(t *testing.T, bin, cfg, url string, rs *testredis.Server, mock *teststripe.Server) {
	t.Helper()
	addr := strings.TrimPrefix(url, "http://")
	cmd := exec.Command(bin, "billing", "--config", cfg, "--addr", addr, "--metrics-addr", "off")
	cmd.Env = append(os.Environ(),
		"REDIS_URL="+rs.URL(), "REDIS_ADDRS=", "REDIS_MASTER_NAME=", "REDIS_PASSWORD=",
		"TOLLGATE_ADMIN_TOKEN="+adminToken, "TOLLGATE_JWT_SECRET="+jwtSecret,
		"TOLLGATE_JWT_ISSUER=", "TOLLGATE_JWT_AUDIENCE=", "TOLLGATE_JWT_PUBLIC_KEY_FILE=",
		"TOLLGATE_PUBLIC_URL="+url, "TOLLGATE_SUCCESS_URL="+url+"/console/?billing=success",
		"TOLLGATE_CANCEL_URL="+url+"/console/?billing=cancel",
		"STRIPE_SECRET_KEY="+teststripe.SecretKey, "STRIPE_WEBHOOK_SECRET="+webhookSecret, "STRIPE_API_BASE="+mock.URL,
		"TOLLGATE_LOG_LEVEL=warn", "TOLLGATE_CONFIG=")
	logPath := filepath.Join(t.TempDir(), "billing.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting billing: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logFile.Close()
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "panic") {
			t.Errorf("billing log has a panic:\n%s", b)
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on http://") {
				close(ready)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		b, _ := os.ReadFile(logPath)
		t.Fatalf("billing did not start within 20s:\n%s", b)
	}
}

// helperHandler serves what the browser test needs from outside the console:
//
//	GET  /token?sub=ID[&account=TEAM]      → a JWT for the account (or a member acting for TEAM), as the app would issue
//	POST /paid {account,session,pack,amount,currency} → Stripe's signed checkout.session.completed
//	POST /usage {account}                  → calls settled for the account, as a proxy would
func helperHandler(store *metering.Store, billingURL string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		claims := jwt.MapClaims{"sub": r.URL.Query().Get("sub"), "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
		if team := r.URL.Query().Get("account"); team != "" {
			claims["account"] = team
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(s))
	})
	mux.HandleFunc("POST /paid", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Account, Session, Pack, Currency string
			Amount                           int64
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		payload := teststripe.Event("evt_e2e_"+req.Session, "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
			ID: req.Session, Account: req.Account, Pack: req.Pack, AmountTotal: req.Amount, Currency: req.Currency,
			PaymentIntent: "pi_e2e_1",
		}))
		status, body, err := teststripe.Deliver(billingURL+"/v1/billing/webhook", webhookSecret, payload)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})
	mux.HandleFunc("POST /usage", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Account string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		calls := []struct {
			model   string
			in, out int64
			cost    int64
		}{
			{"gpt-4o", 1200, 350, 3_950}, {"gpt-4o", 800, 120, 1_760}, {"claude-sonnet", 2_000, 900, 16_800},
			{"gpt-4o-mini", 15_000, 2_000, 19_000}, {"claude-sonnet", 400, 100, 2_800},
		}
		ctx := r.Context()
		for i, c := range calls {
			id := fmt.Sprintf("req_e2e_%d_%d", time.Now().UnixNano(), i)
			if _, err := store.Reserve(ctx, metering.HoldRequest{Account: req.Account, HoldID: id, Fixed: c.cost}); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, err := store.Settle(ctx, metering.Settlement{Account: req.Account, HoldID: id, Cost: c.cost,
				Record: metering.Record{RequestID: id, Model: c.model, Provider: "mock", Endpoint: "chat.completions",
					Input: c.in, Output: c.out, Status: 200}})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
