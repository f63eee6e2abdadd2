package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

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
