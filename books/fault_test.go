package books

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tollgate/tollgate/metering"
)

// soak is the fault tests' size: short by default, full with TOLLGATE_SOAK=full.
func soak(short, full time.Duration) time.Duration {
	if os.Getenv("TOLLGATE_SOAK") == "full" {
		return full
	}
	return short
}

// load makes calls on accounts from several goroutines until stop is
// closed, and counts the calls Redis accepted and refused.
func (e *env) load(t *testing.T, accounts, workers int, stop chan struct{}) (wait func() (ok, failed int64)) {
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for w := range workers {
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
				a := fmt.Sprintf("acct-%d", (w+i)%accounts)
				id := fmt.Sprintf("load-%d-%d-%d", w, i, callSeq.Add(1))
				if _, err := e.St.Reserve(ctx, metering.HoldRequest{Account: a, HoldID: id, Fixed: 50}); err != nil {
					failed.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if _, err := e.St.Settle(ctx, metering.Settlement{Account: a, HoldID: id, Cost: int64(40 + i%20),
					Record: metering.Record{Model: "m", Input: 3, Output: 4}}); err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	return func() (int64, int64) { wg.Wait(); return ok.Load(), failed.Load() }
}

// waitShipped waits until Redis holds no entry the journal lacks.
func (e *env) waitShipped(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := e.b.Status(context.Background(), e.St)
		if err == nil && st.Unshipped == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog not shipped: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) reconcileClean(t *testing.T, within time.Duration) ReconcileResult {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		res, err := e.b.Reconcile(context.Background(), e.St, "")
		if err == nil && len(res.Mismatches) == 0 {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("reconcile: %v %+v", err, res.Mismatches)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFaultPostgresDown: PostgreSQL stops under load; calls go on
// unaffected (Redis alone serves them); when it is back the backlog ships,
// every entry once, and reconcile finds no mismatch.
func TestFaultPostgresDown(t *testing.T) {
	e := newEnv(t)
	const accounts = 8
	for i := range accounts {
		e.account(t, fmt.Sprintf("acct-%d", i), 100_000_000)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	sh := e.b.NewShipper(e.St, ShipperOptions{Interval: 10 * time.Millisecond, SweepEvery: time.Second})
	go func() { _ = sh.Run(ctx); close(done) }()
	stop := make(chan struct{})
	wait := e.load(t, accounts, 6, stop)
	time.Sleep(300 * time.Millisecond)
	e.pg.Stop()
	down := soak(3*time.Second, 10*time.Second)
	time.Sleep(down)
	e.pg.Restart(t)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	ok, failed := wait()
	if failed != 0 || ok == 0 {
		t.Fatalf("calls while PostgreSQL was down: %d ok, %d failed", ok, failed)
	}
	res := e.reconcileClean(t, 20*time.Second)
	e.waitShipped(t, 20*time.Second)
	cancel()
	<-done
	for i := range accounts {
		e.assertShipped(t, fmt.Sprintf("acct-%d", i))
	}
	t.Logf("%d calls, %d accounts reconciled", ok, res.Accounts)
}

// TestFaultShipperKilled: shippers are killed at random points of their
// batches (their context cancelled: the transaction dies wherever it was,
// COPY, insert or commit) over and over while calls go on; the journal ends
// with every entry exactly once.
func TestFaultShipperKilled(t *testing.T) {
	e := newEnv(t)
	const accounts = 6
	for i := range accounts {
		e.account(t, fmt.Sprintf("acct-%d", i), 100_000_000)
	}
	stop := make(chan struct{})
	wait := e.load(t, accounts, 4, stop)
	end := time.Now().Add(soak(2*time.Second, 20*time.Second))
	kills := 0
	for time.Now().Before(end) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(8000))*time.Microsecond)
		sh := e.b.NewShipper(e.St, ShipperOptions{Batch: 3, PerAccount: 50, Interval: time.Millisecond, SweepEvery: 20 * time.Millisecond})
		_ = sh.Run(ctx)
		cancel()
		kills++
	}
	close(stop)
	if ok, _ := wait(); ok == 0 {
		t.Fatal("no calls made")
	}
	// A killed shipper's session may hold an account's lock until PostgreSQL
	// notices its connection is gone; a shipper skips a locked account and
	// takes it at a later sweep, as the billing process's does.
	sh := e.b.NewShipper(e.St, ShipperOptions{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := sh.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		st, err := e.b.Status(context.Background(), e.St)
		if err == nil && st.Unshipped == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range accounts {
		e.assertShipped(t, fmt.Sprintf("acct-%d", i))
	}
	e.reconcileClean(t, 5*time.Second)
	t.Logf("%d shippers killed", kills)
}

// TestFaultFlushRestore: Redis is flushed under load; the store notices
// (ErrStoreLost, not "no such key"), nothing is written into the empty
// Redis, and restore rebuilds every account: balances equal the books,
// reconcile is clean, keys (revoked ones refused) authenticate again.
func TestFaultFlushRestore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const accounts = 6
	for i := range accounts {
		a := fmt.Sprintf("acct-%d", i)
		e.account(t, a, 100_000_000)
	}
	bs := e.b.NewStore(e.St)
	_, secret, err := bs.CreateKey(ctx, "acct-0", "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	k2, revoked, err := bs.CreateKey(ctx, "acct-0", "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.RevokeKey(ctx, "acct-0", k2.ID); err != nil {
		t.Fatal(err)
	}
	// A key whose rules were set by PATCH (SetKeySettings through the books):
	// only model "only-this", two calls at once.
	k3, governed, err := bs.CreateKey(ctx, "acct-0", "g", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bs.SetKeySettings(ctx, "acct-0", k3.ID, nil, metering.KeySettings{Models: []string{"only-this"}, ModelIDs: []string{"only-this"}, MaxParallel: 2}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	sh := e.b.NewShipper(e.St, ShipperOptions{Interval: 10 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	go func() { _ = sh.Run(sctx); close(done) }()
	stop := make(chan struct{})
	wait := e.load(t, accounts, 4, stop)
	time.Sleep(soak(time.Second, 5*time.Second))
	e.Srv.Flush(t)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	_, _ = wait()
	cancel()
	<-done
	if _, err := e.St.Authenticate(ctx, []byte(secret)); !errorsIsLost(err) {
		t.Fatalf("Authenticate after the loss: %v, want ErrStoreLost", err)
	}
	if n, _ := e.RDB.DBSize(ctx).Result(); n > 1 { // only the dirty marks may be there
		keys, _ := e.RDB.Keys(ctx, "*").Result()
		t.Fatalf("written into the empty Redis: %v", keys)
	}
	res, err := e.b.Restore(ctx, e.St, os.Stdout)
	if err != nil || res.Restored != accounts {
		t.Fatalf("Restore = %+v, %v", res, err)
	}
	e.reconcileClean(t, 5*time.Second)
	for i := range accounts {
		a := fmt.Sprintf("acct-%d", i)
		_, sum := e.journal(t, a)
		if got := e.Acct(t, a); got.Purchased != 100_000_000 || got.Balance != sum || got.Purchased+got.Granted+got.Adjusted-got.Consumed != got.Balance {
			t.Fatalf("%s after restore: %+v, books %d", a, got, sum)
		}
	}
	if id, err := e.St.Authenticate(ctx, []byte(secret)); err != nil || id.Account != "acct-0" {
		t.Fatalf("key after restore: %+v %v", id, err)
	}
	if _, err := e.St.Authenticate(ctx, []byte(revoked)); err == nil {
		t.Fatal("a revoked key works after restore")
	}
	// The governed key comes back governed: held call by call, its rules
	// checked where its holds are placed.
	if id, err := e.St.Authenticate(ctx, []byte(governed)); err != nil || !id.Limited || id.KeyID != k3.ID {
		t.Fatalf("governed key after restore: %+v %v", id, err)
	}
	_, err = e.St.Reserve(ctx, metering.HoldRequest{Account: "acct-0", KeyID: k3.ID, HoldID: "gov-1", Model: "m", Fixed: 10})
	var kre *metering.KeyRuleError
	if !errors.As(err, &kre) {
		t.Fatalf("a call to a model the key may not use after restore: %v, want a KeyRuleError", err)
	}
	// New entries follow the restored ones, and ship.
	e.call(t, e.St, "acct-1", "m", 7)
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.reconcileClean(t, 5*time.Second)
}
