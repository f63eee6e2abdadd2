package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testjwt"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/webhooks"
)

// TestWebhookAcrossBillingRestart: a metered call crosses the account's
// low-balance threshold while the billing process is down; the event waits
// in Redis and the next billing process delivers it, signed, once.
func TestWebhookAcrossBillingRestart(t *testing.T) {
	rs := testredis.Start(t)
	_, mockURL, err := mockllm.Start(mockllm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const hookSecret = "hook-secret-0123456789"
	var mu sync.Mutex
	got := map[string]int{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhooks.Verify(r.Header.Get(webhooks.SignatureHeader), body, hookSecret, time.Minute); err != nil {
			t.Errorf("bad signature: %v", err)
		}
		var ev struct{ ID, Type, Account string }
		_ = json.Unmarshal(body, &ev)
		if ev.Type != "balance.low" || ev.Account != "acme" {
			t.Errorf("event %s", body)
		}
		mu.Lock()
		got[ev.ID]++
		mu.Unlock()
	}))
	defer rcv.Close()
	base, err := os.ReadFile("../../configs/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(base), "\nbilling:\n", "\nbilling:\n  webhooks:\n    - {url: \""+rcv.URL+
		"/hook\", secret: \""+hookSecret+"\", events: [balance.low]}\n", 1)
	cfgPath := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	jwtSecret, admin := strings.Repeat("j", 40), strings.Repeat("a", 40)
	t.Setenv("REDIS_URL", rs.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", admin)
	t.Setenv("TOLLGATE_JWT_SECRET", jwtSecret)
	t.Setenv("OPENAI_BASE_URL", mockURL)
	t.Setenv("OPENAI_API_KEY", "sk-test")
	paddr, baddr := freeAddr(t), freeAddr(t)
	start(t, "proxy", "--config", cfgPath, "--addr", paddr)
	P, B := "http://"+paddr, "http://"+baddr

	// The first billing process: account, key, credits, the alert.
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	out1 := &syncBuffer{}
	go func() {
		done1 <- run(ctx1, []string{"billing", "--config", cfgPath, "--addr", baddr, "--metrics-addr", "127.0.0.1:0"}, out1, out1)
	}()
	waitHTTP(t, B+"/healthz")
	waitHTTP(t, P+"/healthz")
	if st, _, m := call(t, "POST", B+"/admin/v1/accounts", admin, `{"id":"acme"}`); st != 201 {
		t.Fatalf("create account: %d %v", st, m)
	}
	_, _, k := call(t, "POST", B+"/admin/v1/accounts/acme/keys", admin, `{"name":"ci"}`)
	key, _ := k["key"].(string)
	if st, _, m := call(t, "POST", B+"/admin/v1/accounts/acme/credits", admin, `{"credits":1000,"reference":"seed"}`); st != 200 {
		t.Fatalf("credit: %d %v", st, m)
	}
	tok := testjwt.Sign(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "acme", "exp": time.Now().Add(time.Hour).Unix()}, []byte(jwtSecret))
	if st, _, m := call(t, "PUT", B+"/api/billing/credits/alerts", tok, `{"lowBalance":"999.999"}`); st != 200 || m["lowBalance"] != 999.999 {
		t.Fatalf("alerts: %d %v", st, m)
	}
	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("billing #1: %v\n%s", err, out1)
	}

	// Billing is down: a call crosses the threshold.
	if st, _, m := call(t, "POST", P+"/v1/chat/completions", key, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi there"}]}`); st != 200 {
		t.Fatalf("chat: %d %v", st, m)
	}
	rdb := rs.Client(t)
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := rdb.XLen(context.Background(), "{a:acme}:events").Result(); n != 1; n, _ = rdb.XLen(context.Background(), "{a:acme}:events").Result() {
		if time.Now().After(deadline) {
			t.Fatalf("no event queued: %d", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if len(got) != 0 {
		t.Fatalf("delivered while billing was down: %v", got)
	}
	mu.Unlock()

	// The next billing process delivers it, once.
	out2 := start(t, "billing", "--config", cfgPath, "--addr", baddr)
	waitHTTP(t, B+"/healthz")
	var d map[string]any
	for {
		_, _, d = call(t, "GET", B+"/admin/v1/webhooks/deliveries", admin, "")
		if l, _ := d["data"].([]any); len(l) == 1 && l[0].(map[string]any)["state"] == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			keys, _ := rdb.Keys(context.Background(), "*").Result()
			xl, _ := rdb.XLen(context.Background(), "{wh}:events").Result()
			t.Fatalf("not delivered: %v\nkeys %v, queue %d\nsecond billing:\n%s\nfirst billing:\n%s", d, keys, xl, out2, out1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("events received: %v", got)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}
