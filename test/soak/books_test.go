package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testpg"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// tollgateCmd runs `tollgate args…` to its end with env and returns its
// standard output's lines and its error.
func tollgateCmd(t testing.TB, env []string, args ...string) ([]string, error) {
	t.Helper()
	cmd := exec.Command(tollgateBinary(t), args...)
	cmd.Env = append(append(os.Environ(), env...), "TOLLGATE_LOG_LEVEL=warn")
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if err != nil {
		t.Logf("tollgate %v: %v\n%s%s", args, err, out, errb.String())
	}
	return lines, err
}

// journalCaughtUp waits until `tollgate admin journal status` says nothing
// is left to ship.
func journalCaughtUp(t testing.TB, env []string, cfg string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		lines, err := tollgateCmd(t, env, "admin", "--config", cfg, "journal", "status")
		if err == nil && strings.Contains(lines[0], " unshipped=0 ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the journal did not catch up within %s: %q", within, lines)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reconcileClean runs `tollgate admin reconcile` and requires its contract:
// last line accounts=N mismatches=0, exit 0, N at least accounts.
func reconcileClean(t testing.TB, env []string, cfg string, accounts int) {
	t.Helper()
	lines, err := tollgateCmd(t, env, "admin", "--config", cfg, "reconcile")
	var n, m int
	if _, serr := fmt.Sscanf(lines[len(lines)-1], "accounts=%d mismatches=%d", &n, &m); err != nil || serr != nil || m != 0 || n < accounts {
		t.Fatalf("reconcile: %v, want accounts>=%d mismatches=0:\n%s", err, accounts, strings.Join(lines, "\n"))
	}
	t.Logf("reconcile: %s", lines[len(lines)-1])
}

// startBooks starts a PostgreSQL for the test and applies the schema with
// `tollgate migrate`; it returns the server and the DATABASE_URL setting.
func startBooks(t testing.TB, cfg string) (*testpg.Server, string) {
	t.Helper()
	pg := testpg.Start(t)
	db := "DATABASE_URL=" + pg.URL()
	if _, err := tollgateCmd(t, []string{db}, "migrate", "--config", cfg); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pg, db
}

// TestSoakJournal: the load suite (3 replicas; 50,000 calls on 2,000
// accounts under TOLLGATE_SOAK=full) with the durable books on — a billing
// process shipping the journal and the proxies armed by DATABASE_URL — and
// PostgreSQL stopped under the load (2 s; 10 s at full size). Every
// account's ledger is audited call by call as in TestSoakLoad (the calls are
// unaffected: the proxies never wait for PostgreSQL); then the backlog
// ships and `tollgate admin reconcile` finds Redis, the journal and the
// payments in agreement: 0 mismatches.
func TestSoakJournal(t *testing.T) {
	rs := testredis.Start(t)
	cfg := writeConfig(t, nil)
	pg, db := startBooks(t, cfg)
	redisURL := "REDIS_URL=" + rs.URL()
	bill := startBilling(t, "billing", rs, db)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	size := soakSize() // full: 3 replicas, 2,000 accounts, 50,000 calls
	if !fullSoak() {
		size = loadSize{replicas: 3, accounts: 20, calls: 1000, workers: 12} // TestSoakLoad covers the load itself
	}
	start := time.Now()
	down := soakDuration(2*time.Second, 10*time.Second)
	outage := make(chan struct{})
	go func() {
		defer close(outage)
		time.Sleep(300 * time.Millisecond)
		pg.Stop()
		time.Sleep(down)
		pg.Restart(t)
	}()
	runLoad(t, st, cfg, []string{redisURL, db}, size)
	<-outage
	if t.Failed() {
		return
	}
	t.Logf("PostgreSQL was down %s from 300 ms into the load", down)
	env := []string{redisURL, db}
	journalCaughtUp(t, env, cfg, 60*time.Second)
	t.Logf("load and shipping: %s", time.Since(start).Round(time.Millisecond))
	reconcileClean(t, env, cfg, size.accounts)
	bill.assertAlive(t)
}

// TestFaultShipperSIGKILL: billing processes (the journal's shippers) are
// SIGKILLed at random moments — mid-batch: calls keep every shipper busy —
// and started again, over and over, while calls go on; two run at once at
// times. Afterwards every ledger entry is in the journal exactly once (no
// duplicate, none missing: reconcile checks each account's chain, its sum
// against the balance and every reference once) and the entries shipped
// equal the entries written.
func TestFaultShipperSIGKILL(t *testing.T) {
	rs := testredis.Start(t)
	cfg := writeConfig(t, nil)
	_, db := startBooks(t, cfg)
	env := []string{"REDIS_URL=" + rs.URL(), db}
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	const accounts = 20
	accts := createAccounts(t, st, "kill", accounts, func(int) int64 { return 1_000_000_000 })

	// Calls straight on the store (as the proxies make them): the ledger
	// grows while shippers die.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := accts[(w*7+i)%len(accts)].id
				hold := fmt.Sprintf("kill-%d-%d", w, i)
				if _, err := st.Reserve(ctx, metering.HoldRequest{Account: a, HoldID: hold, Model: "gpt-4.1", Fixed: 500}); err != nil {
					t.Errorf("reserve: %v", err)
					return
				}
				if _, err := st.Settle(ctx, metering.Settlement{Account: a, HoldID: hold, Cost: int64(400 + i%100),
					Record: metering.Record{Model: "gpt-4.1", Input: 10, Output: 5}}); err != nil {
					t.Errorf("settle: %v", err)
					return
				}
				calls.Add(1)
			}
		}()
	}
	rng := rand.New(rand.NewPCG(seed(t), 11))
	end := time.Now().Add(soakDuration(4*time.Second, 60*time.Second))
	kills := 0
	for time.Now().Before(end) {
		n := 1 + rng.IntN(2) // one or two shippers at once
		var bills []*proc
		for i := range n {
			bills = append(bills, startBilling(t, fmt.Sprintf("billing-%d-%d", kills, i), rs, db))
		}
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		for _, b := range bills {
			b.signal(syscall.SIGKILL) // wherever its transaction was
			if _, ok := b.waitExit(10 * time.Second); !ok {
				t.Fatalf("%s survived SIGKILL", b.name)
			}
			kills++
		}
	}
	close(stop)
	wg.Wait()
	// One last shipper catches up.
	last := startBilling(t, "billing-last", rs, db)
	journalCaughtUp(t, env, cfg, 60*time.Second)
	reconcileClean(t, env, cfg, accounts)
	// The journal holds as many entries as the ledgers: none twice.
	var entries int
	for _, a := range accts {
		es, err := st.AllEntries(context.Background(), a.id)
		if err != nil {
			t.Fatal(err)
		}
		entries += len(es)
	}
	lines, err := tollgateCmd(t, env, "admin", "--config", cfg, "journal", "status")
	if err != nil || !strings.Contains(lines[0], fmt.Sprintf(" journal_entries=%d ", entries)) {
		t.Fatalf("journal status %q: want journal_entries=%d (the ledgers' entries)", lines, entries)
	}
	last.assertAlive(t)
	t.Logf("%d calls, %d shippers SIGKILLed", calls.Load(), kills)
}

// soakDuration is short in `make test`, full under TOLLGATE_SOAK=full.
func soakDuration(short, full time.Duration) time.Duration {
	if fullSoak() {
		return full
	}
	return short
}

// adminJSON sends an admin API request to the billing process and decodes
// its JSON answer.
func adminJSON(t testing.TB, base, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

// TestFaultRedisFlushRestore: Redis loses its data (FLUSHALL) while two
// proxy replicas serve calls, with the durable books on. Calls answer 503
// store_unavailable (never 401: the keys are not "unknown") until `tollgate
// admin restore` has run; then the same keys work on both replicas, the
// charges the proxies held are applied, and `tollgate admin reconcile` finds
// every balance equal to the books: 0 mismatches. No request is charged twice
// (no reference in two usage entries of the journal), and each account's
// balance at the end is its balance at the flush (read in the same MULTI as
// the FLUSHALL) less only the entries it lost unshipped (in its ledger then,
// not in the journal) and the calls charged after it.
func TestFaultRedisFlushRestore(t *testing.T) {
	rs := testredis.Start(t)
	cfg := writeConfig(t, nil)
	pg, db := startBooks(t, cfg)
	admin := strings.Repeat("a", 40)
	redisURL := "REDIS_URL=" + rs.URL()
	bill := startBilling(t, "billing", rs, db, "TOLLGATE_ADMIN_TOKEN="+admin)
	// Accounts and keys through the billing process: in the books before
	// they are acknowledged.
	const n = 12
	accts := make([]*account, n)
	for i := range accts {
		id := fmt.Sprintf("flush-%02d", i)
		if st, m := adminJSON(t, bill.URL, admin, "POST", "/admin/v1/accounts", `{"id":"`+id+`"}`); st >= 300 {
			t.Fatalf("creating %s: %d %v", id, st, m)
		}
		if st, m := adminJSON(t, bill.URL, admin, "POST", "/admin/v1/accounts/"+id+"/credits", `{"credits":"500","reference":"fund"}`); st >= 300 {
			t.Fatalf("funding %s: %d %v", id, st, m)
		}
		st, m := adminJSON(t, bill.URL, admin, "POST", "/admin/v1/accounts/"+id+"/keys", `{"name":"soak"}`)
		key, _ := m["key"].(string)
		if st >= 300 || key == "" {
			t.Fatalf("key of %s: %d %v", id, st, m)
		}
		accts[i] = &account{id: id, key: key, funded: 500_000}
	}
	mock := startMock(t, mockllm.Config{})
	penv := procEnv(mock.URL, redisURL, db)
	proxies := []*proc{startProxy(t, "proxy-0", cfg, penv), startProxy(t, "proxy-1", cfg, penv)}
	gen := func(rng *rand.Rand, tag int64) *callSpec {
		return &callSpec{tag: tag, account: accts[rng.IntN(len(accts))], base: proxies[tag%2].URL,
			ep: epChat, model: "gpt-4o-mini", maxTokens: 16, directives: "tokens=8,delay=20ms"}
	}
	client := newClient(16)
	d := drive(client, 8, gen, seed(t), 0)
	time.Sleep(soakDuration(time.Second, 10*time.Second))
	// The flush, and in the same transaction each account's balance and its
	// ledger's newest entries (what was there at the flush, exactly).
	ctx := context.Background()
	rdb := rs.Client(t)
	atFlush := make([]*redis.StringCmd, n)
	tails := make([]*redis.XMessageSliceCmd, n)
	if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, a := range accts {
			atFlush[i] = p.HGet(ctx, "{a:"+a.id+"}:acct", "balance")
			tails[i] = p.XRevRangeN(ctx, "{a:"+a.id+"}:ledger", "+", "-", 500)
		}
		return p.FlushAll(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	flushed := time.Now()
	time.Sleep(1500 * time.Millisecond)
	env := []string{redisURL, db}
	lines, err := tollgateCmd(t, env, "admin", "--config", cfg, "restore")
	if err != nil || lines[len(lines)-1] != "unshipped=0" {
		t.Fatalf("restore: %v\n%s", err, strings.Join(lines, "\n"))
	}
	restored := time.Now()
	time.Sleep(soakDuration(1500*time.Millisecond, 10*time.Second))
	results := d.halt()

	var ok, unavailable, during int
	for _, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("call-%d: transport error %v", r.spec.tag, r.err)
		case r.status == http.StatusOK:
			ok++
		case r.status == http.StatusServiceUnavailable && r.code == "store_unavailable":
			unavailable++
			if r.start.After(restored.Add(5 * time.Second)) {
				t.Errorf("call-%d refused with 503 %s after the restore", r.spec.tag, r.start.Sub(restored))
			}
		default:
			t.Errorf("call-%d: %d %s %s (%s after the flush)", r.spec.tag, r.status, r.code, r.message, r.start.Sub(flushed).Round(time.Millisecond))
		}
		if r.start.After(flushed.Add(1100*time.Millisecond)) && r.start.Before(restored) {
			during++
		}
	}
	if unavailable == 0 || ok == 0 || during == 0 {
		t.Errorf("the loss was not exercised: %d ok, %d refused with 503, %d made while Redis was lost", ok, unavailable, during)
	}
	// The same keys work again, on both replicas.
	for i, a := range accts {
		c := &callSpec{tag: 1_000_000 + int64(i), account: a, base: proxies[i%2].URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8}
		if r := c.do(client); r.status != http.StatusOK {
			t.Errorf("%s's key after the restore: %d %s %v", a.id, r.status, r.code, r.err)
		}
	}
	journalCaughtUp(t, env, cfg, 30*time.Second)
	reconcileClean(t, env, cfg, n)
	lost := assertNoDoubleCharge(t, pg.URL(), rdb, accts, atFlush, tails)
	t.Logf("flush and restore: calls=%d ok=%d refused_503=%d lost_unshipped=%d restore: %s", len(results), ok, unavailable, lost,
		strings.Join(lines[len(lines)-2:], " "))
	bill.assertAlive(t)
}

// assertNoDoubleCharge checks the journal after a flush and restore: no
// reference in two usage entries, and each account's balance now equal to
// its balance at the flush (atFlush) less the entries of its ledger then
// (tails: newest first) that the journal lacks (lost unshipped) plus the
// entries after them (calls charged after the flush). It returns how many
// entries were lost.
func assertNoDoubleCharge(t *testing.T, url string, rdb *redis.Client, accts []*account, atFlush []*redis.StringCmd, tails []*redis.XMessageSliceCmd) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var twice []string
	rows, err := conn.Query(ctx, `SELECT ref || ' x' || count(*) FROM journal WHERE type = 'usage' AND ref <> ''
		GROUP BY ref HAVING count(*) > 1 LIMIT 20`)
	if err == nil {
		twice, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(twice) > 0 {
		t.Fatalf("requests charged twice: %v %v", twice, err)
	}
	lostAll := 0
	for i, a := range accts {
		b0, err := atFlush[i].Int64()
		if err != nil {
			t.Fatalf("%s: balance at the flush: %v", a.id, err)
		}
		tail := tails[i].Val()
		if len(tail) == 0 {
			t.Fatalf("%s: no ledger at the flush", a.id)
		}
		journal := make(map[string]int64)
		var after int64 // Σ entries after the newest at the flush
		newest, _ := metering.ParseEntryID(tail[0].ID)
		rows, err := conn.Query(ctx, `SELECT (extract(epoch from at) * 1000)::int8, seq, amount FROM journal WHERE account = $1`, a.id)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id metering.EntryID
			var amount int64
			if err := rows.Scan(&id.Ms, &id.Seq, &amount); err != nil {
				t.Fatal(err)
			}
			journal[id.String()] = amount
			if newest.Less(id) {
				after += amount
			}
		}
		rows.Close()
		var lost int64
		lostN := 0
		for _, m := range tail {
			if amount, ok := journal[m.ID]; ok {
				if fmt.Sprint(amount) != fmt.Sprint(m.Values["amount"]) {
					t.Errorf("%s: entry %s is %v in Redis, %d in the journal", a.id, m.ID, m.Values["amount"], amount)
				}
				continue
			}
			var amount int64
			_, _ = fmt.Sscan(fmt.Sprint(m.Values["amount"]), &amount)
			lost += amount
			lostN++
		}
		if _, ok := journal[tail[len(tail)-1].ID]; !ok {
			t.Fatalf("%s: the %d newest entries at the flush are all missing from the journal", a.id, len(tail))
		}
		lostAll += lostN
		now, err := rdb.HGet(ctx, "{a:"+a.id+"}:acct", "balance").Int64()
		if err != nil {
			t.Fatal(err)
		}
		if want := b0 - lost + after; now != want {
			t.Errorf("%s: balance %d; at the flush %d, lost unshipped %d (%d entries), charged after %d: want %d (diff %d)",
				a.id, now, b0, lost, lostN, after, want, now-want)
		}
	}
	return lostAll
}
