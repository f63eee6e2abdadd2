package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/books"
	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testpg"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/metering"
)

// admin runs `tollgate admin …` (or another command) and returns its
// standard output's lines and its error.
func runCmd(t *testing.T, args ...string) ([]string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if err != nil {
		t.Logf("%v: %v\n%s%s", args, err, out.String(), errb.String())
	}
	return lines, err
}

func last(lines []string) string { return lines[len(lines)-1] }

// TestDurableBooksContract drives issue 11's contract through the real
// processes: migrate (twice), billing ships the journal, a purchase, keys (one
// revoked), metered calls; reconcile agrees; then Redis FLUSHALL: calls get
// 503 store_unavailable (not 401) at once and /readyz fails; `admin restore`
// rebuilds Redis (shipped=0, then unshipped=0 last: the journal had caught up); the same key
// works, the revoked one does not, balances and totals are those of before,
// the replayed webhook credits nothing twice, and reconcile says 0
// mismatches.
func TestDurableBooksContract(t *testing.T) {
	rs := testredis.Start(t)
	pg := testpg.Start(t)
	sm := teststripe.Start(t)
	_, mockURL, err := mockllm.Start(mockllm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const whsec = "whsec_books_contract"
	jwtSecret, admin := strings.Repeat("j", 40), strings.Repeat("a", 40)
	for k, v := range map[string]string{
		"REDIS_URL": rs.URL(), "DATABASE_URL": pg.URL(), "OPENAI_BASE_URL": mockURL, "OPENAI_API_KEY": "sk-test",
		"STRIPE_SECRET_KEY": teststripe.SecretKey, "STRIPE_WEBHOOK_SECRET": whsec, "STRIPE_API_BASE": sm.URL,
		"TOLLGATE_JWT_SECRET": jwtSecret, "TOLLGATE_ADMIN_TOKEN": admin, "TOLLGATE_PUBLIC_URL": "https://app.example.com",
	} {
		t.Setenv(k, v)
	}
	const cfg = "../../configs/tollgate.yaml"
	for range 2 {
		if _, err := runCmd(t, "migrate", "--config", cfg); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	paddr, baddr := freeAddr(t), freeAddr(t)
	bout := start(t, "billing", "--config", cfg, "--addr", baddr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("billing:\n%s", bout)
		}
	})
	B := "http://" + baddr
	waitHTTP(t, B+"/healthz")
	start(t, "proxy", "--config", cfg, "--addr", paddr)
	P := "http://" + paddr
	waitHTTP(t, P+"/healthz")

	// A purchase through the webhook, an operator grant, two keys (one revoked).
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	st, _, co := call(t, "POST", B+"/v1/billing/checkout", tok, `{"pack":"growth"}`)
	session, _ := co["id"].(string)
	if st != 200 || session == "" {
		t.Fatalf("checkout: %d %v", st, co)
	}
	ev := teststripe.Event("evt_books", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: session, Account: "bob", Pack: "growth", AmountTotal: 2499, PaymentIntent: "pi_books",
	}))
	if status, body, err := teststripe.Deliver(B+"/v1/billing/webhook", whsec, ev); err != nil || status != 200 {
		t.Fatalf("webhook: %d %s %v", status, body, err)
	}
	if st, _, m := call(t, "POST", B+"/admin/v1/accounts/bob/credits", admin, `{"credits":1000,"reference":"welcome"}`); st != 200 {
		t.Fatalf("grant: %d %v", st, m)
	}
	_, _, k1 := call(t, "POST", B+"/admin/v1/accounts/bob/keys", admin, `{"name":"one"}`)
	_, _, k2 := call(t, "POST", B+"/admin/v1/accounts/bob/keys", admin, `{"name":"two"}`)
	key, revoked := k1["key"].(string), k2["key"].(string)
	if key == "" || revoked == "" {
		t.Fatalf("keys: %v %v", k1, k2)
	}
	if st, _, m := call(t, "DELETE", B+"/admin/v1/accounts/bob/keys/"+k2["id"].(string), admin, ""); st >= 300 {
		t.Fatalf("revoke: %d %v", st, m)
	}
	const body = `{"model":"gpt-4.1","messages":[{"role":"user","content":"hello books"}]}`
	for i := range 20 {
		if st, _, m := call(t, "POST", P+"/v1/chat/completions", key, body); st != 200 {
			t.Fatalf("call %d: %d %v", i, st, m)
		}
	}
	// The journal catches up within a second or so; reconcile agrees.
	var before map[string]any
	waitFor(t, 10*time.Second, "the journal to catch up", func() bool {
		lines, err := runCmd(t, "admin", "--config", cfg, "journal", "status")
		_, _, before = call(t, "GET", B+"/admin/v1/accounts/bob", admin, "")
		return err == nil && strings.Contains(lines[0], " unshipped=0 ") && before["total_consumed"] != 0.0
	})
	lines, err := runCmd(t, "admin", "--config", cfg, "reconcile")
	if err != nil || last(lines) != "accounts=1 mismatches=0" {
		t.Fatalf("reconcile before the loss: %v %q", err, lines)
	}

	// Operators see the books' status (the console's Books card reads it).
	if st, _, m := call(t, "GET", B+"/admin/v1/books", admin, ""); st != 200 || m["accounts"] != 1.0 || m["entries"].(float64) < 2 {
		t.Fatalf("books status: %d %v", st, m)
	}
	// A reload (SIGHUP, systemctl reload) rebuilds the billing API from the
	// file; its control-plane writes must still reach the books first.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "billing to reload", func() bool {
		return strings.Count(bout.String(), "configuration reloaded") >= 1
	})
	if st, _, m := call(t, "POST", B+"/admin/v1/accounts/bob/keys", admin, `{"name":"after-reload"}`); st != 201 {
		t.Fatalf("key after the reload: %d %v", st, m)
	}
	conn, err := pgx.Connect(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	var keysInBooks int
	err = conn.QueryRow(context.Background(), `SELECT count(*) FROM api_keys WHERE account = 'bob' AND name = 'after-reload'`).Scan(&keysInBooks)
	conn.Close(context.Background())
	if err != nil || keysInBooks != 1 {
		t.Fatalf("a key created after a reload is not in the books: %d %v", keysInBooks, err)
	}

	// Redis loses everything.
	if err := rs.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// Noticed within a second of the next call: a call may still be served
	// from the proxy's lease meanwhile (its charge waits for the restore).
	var servedAfter int64
	first := time.Now()
	for {
		st, hdr, m := call(t, "POST", P+"/v1/chat/completions", key, body)
		if st == 503 && m["error"].(map[string]any)["code"] == "store_unavailable" {
			break
		}
		if st != 200 || time.Since(first) > time.Second {
			t.Fatalf("a call %s after the loss: %d %v (want 503 store_unavailable within a second)", time.Since(first), st, m)
		}
		c, _ := strconv.ParseFloat(hdr.Get("X-Credits-Charged"), 64)
		servedAfter += int64(c*1000 + 0.5)
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := http.Get(P + "/readyz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz after the loss: %v %v", resp, err)
	}
	if st, _, m := call(t, "POST", P+"/v1/chat/completions", "tg-unknown-key", body); st != 503 {
		t.Fatalf("an unknown key after the loss: %d %v (want 503)", st, m)
	}
	lines, err = runCmd(t, "admin", "--config", cfg, "reconcile")
	if err == nil || !strings.HasPrefix(last(lines), "accounts=1 mismatches=") || last(lines) == "accounts=1 mismatches=0" {
		t.Fatalf("reconcile after the loss: %v %q", err, lines)
	}

	lines, err = runCmd(t, "admin", "--config", cfg, "restore")
	if err != nil || last(lines) != "unshipped=0" || !slices.Contains(lines, "shipped=0") {
		t.Fatalf("restore: %v %q", err, lines)
	}
	// Working again: the same key, the same balances and totals.
	waitFor(t, 3*time.Second, "the proxy to serve again", func() bool {
		st, _, _ := call(t, "POST", P+"/v1/chat/completions", revoked, body)
		return st == 401
	})
	// The balances of before, less the calls served after the loss, whose
	// charges the proxy applies once Redis is back.
	mc := func(v any) int64 { f, _ := v.(float64); return int64(f*1000 + 0.5*sign(f)) }
	waitFor(t, 5*time.Second, "the balances of before", func() bool {
		_, _, after := call(t, "GET", B+"/admin/v1/accounts/bob", admin, "")
		return mc(after["balance"]) == mc(before["balance"])-servedAfter &&
			mc(after["total_consumed"]) == mc(before["total_consumed"])+servedAfter &&
			after["total_purchased"] == before["total_purchased"] && after["total_granted"] == before["total_granted"]
	})
	if status, _, _ := teststripe.Deliver(B+"/v1/billing/webhook", whsec, ev); status != 200 {
		t.Fatalf("webhook replay: %d", status)
	}
	if st, hdr, m := call(t, "POST", P+"/v1/chat/completions", key, body); st != 200 {
		t.Fatalf("the key after restore: %d %v", st, m)
	} else if hdr.Get("X-Credits-Charged") == "" {
		t.Fatal("no charge header")
	}
	_, _, hist := call(t, "GET", B+"/v1/billing/history", tok, "")
	if n := len(hist["data"].([]any)); n != 1 {
		t.Fatalf("purchase history after restore has %d entries, want 1: %v", n, hist)
	}
	waitFor(t, 10*time.Second, "reconcile to agree after restore", func() bool {
		lines, err := runCmd(t, "admin", "--config", cfg, "reconcile")
		return err == nil && last(lines) == "accounts=1 mismatches=0"
	})
	_, _, final := call(t, "GET", B+"/admin/v1/accounts/bob", admin, "")
	if final["total_purchased"] != before["total_purchased"] {
		t.Fatalf("the replayed webhook credited again: %v → %v", before, final)
	}
}

func sign(f float64) float64 {
	if f < 0 {
		return -1
	}
	return 1
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdminLedgerReadsTheBooks: with DATABASE_URL set, `tollgate admin
// account create` and `key create` reach the books before they answer, and
// `tollgate admin ledger` lists what retention trimmed from Redis (the shipped entries
// before the cursor) (it reads the journal and
// Redis together, as billing does) and what is not shipped yet.
func TestAdminLedgerReadsTheBooks(t *testing.T) {
	rs := testredis.Start(t)
	pg := testpg.Start(t)
	t.Setenv("REDIS_URL", rs.URL())
	t.Setenv("DATABASE_URL", pg.URL())
	t.Setenv("OPENAI_API_KEY", "sk-test")
	const cfg = "../../configs/tollgate.yaml"
	if _, err := runCmd(t, "migrate", "--config", cfg); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"account", "create", "led-1"}, {"credit", "led-1", "5", "old-grant"},
		{"credit", "led-1", "1", "kept-grant"}} {
		if _, err := runCmd(t, append([]string{"admin", "--config", cfg}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	b, err := books.Open(ctx, pg.URL(), books.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The account and a key created by the CLI are in the books before
	// anything ships (a restore brings them back).
	if _, err := runCmd(t, "admin", "--config", cfg, "key", "create", "led-1", "cli"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var accts, keys int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts WHERE id = 'led-1'),
		(SELECT count(*) FROM account_records WHERE account = 'led-1' AND name LIKE 'key:%')`).Scan(&accts, &keys); err != nil || accts != 1 || keys != 1 {
		t.Fatalf("the books after admin account create and key create: %d accounts, %d keys (%v); want 1 and 1", accts, keys, err)
	}
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	sh := b.NewShipper(st, books.ShipperOptions{Retention: time.Hour})
	if _, err := sh.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := sh.Trim(ctx, time.Now().Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("trim: %d %v", n, err)
	}
	if _, err := runCmd(t, "admin", "--config", cfg, "credit", "led-1", "2", "new-grant"); err != nil {
		t.Fatal(err)
	}
	lines, err := runCmd(t, "admin", "--config", cfg, "ledger", "led-1")
	if err != nil || len(lines) != 3 || !strings.HasSuffix(lines[0], "new-grant") || !strings.HasSuffix(lines[1], "kept-grant") ||
		!strings.HasSuffix(lines[2], "old-grant") {
		t.Fatalf("admin ledger: %v %q, want the new grant (not shipped), the kept one and the old one (trimmed from Redis)", err, lines)
	}
}
