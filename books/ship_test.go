package books

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestShipExactlyOnce: calls and credits on many accounts from many
// goroutines while two shippers (two billing processes) ship concurrently;
// afterwards every entry is in the journal exactly once, in order, each
// account's journal sums to its balance, and usage_daily counts every call
// once.
func TestShipExactlyOnce(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const accounts, workers, calls = 12, 16, 60
	for i := range accounts {
		e.Account(t, fmt.Sprintf("acct-%d", i), 10_000_000)
	}
	var wg sync.WaitGroup
	for i := range 2 {
		sh := e.b.NewShipper(e.St, ShipperOptions{Batch: 5, PerAccount: 7, Interval: 5 * time.Millisecond, SweepEvery: 50 * time.Millisecond})
		wg.Add(1)
		go func() { defer wg.Done(); _ = sh.Run(ctx) }()
		_ = i
	}
	var load sync.WaitGroup
	for w := range workers {
		load.Add(1)
		go func() {
			defer load.Done()
			for c := range calls {
				a := fmt.Sprintf("acct-%d", (w+c)%accounts)
				e.call(t, e.St, a, []string{"m-a", "m-b"}[c%2], int64(100+c))
			}
		}()
	}
	load.Wait()
	// Everything reaches the books within a second or so of the last write.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for i := range accounts {
			ids, _ := e.journal(t, fmt.Sprintf("acct-%d", i))
			n += len(ids)
		}
		if n == workers*calls+accounts { // the calls and one purchase each
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal has %d entries after 10s, want %d", n, workers*calls+accounts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	var want int64
	for i := range accounts {
		e.assertShipped(t, fmt.Sprintf("acct-%d", i))
	}
	for c := range calls {
		want += int64(100+c) * workers
	}
	var n, credits, in int64
	if err := e.b.pool.QueryRow(context.Background(), `SELECT sum(calls), sum(credits), sum(input_tokens) FROM usage_daily`).Scan(&n, &credits, &in); err != nil {
		t.Fatal(err)
	}
	if n != workers*calls || credits != want || in != 10*workers*calls {
		t.Fatalf("usage_daily: %d calls, %d mc, %d input tokens; want %d, %d, %d", n, credits, in, workers*calls, want, 10*workers*calls)
	}
}

// TestShipIdempotent: shipping again (a cursor lost, a batch resent) inserts
// nothing twice.
func TestShipIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.Account(t, "a", 1_000_000)
	for i := range 5 {
		e.call(t, e.St, "a", "m", int64(10+i))
	}
	sh := e.b.NewShipper(e.St, ShipperOptions{PerAccount: 2})
	if n, err := sh.Ship(ctx, []string{"a", "a"}); err != nil || n != 6 {
		t.Fatalf("Ship = %d, %v; want 6", n, err)
	}
	// Forget the cursor: the same entries are read again and not inserted.
	if _, err := e.b.pool.Exec(ctx, `DELETE FROM ship_cursor`); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Ship(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	e.assertShipped(t, "a")
	var calls int64
	if err := e.b.pool.QueryRow(ctx, `SELECT sum(calls) FROM usage_daily`).Scan(&calls); err != nil || calls != 5 {
		t.Fatalf("usage_daily counts %d calls (%v), want 5", calls, err)
	}
}

// shipTally is a ShipObserver that adds up what it is told.
type shipTally struct {
	mu            sync.Mutex
	entries, errs int
}

func (s *shipTally) Shipped(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries += n
	if err != nil {
		s.errs++
	}
}

func (s *shipTally) get() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries, s.errs
}

// The shipper tells its observer (the metrics) every entry it shipped, once,
// and each failed round: what an alert on shipping reads.
func TestShipperObserver(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.Account(t, "obs", 10_000_000) // its funding entry
	const calls = 25
	for range calls {
		e.call(t, e.St, "obs", "m", 100)
	}
	tally := &shipTally{}
	sh := e.b.NewShipper(e.St, ShipperOptions{Interval: 5 * time.Millisecond, SweepEvery: time.Hour, Observer: tally})
	done := make(chan struct{})
	go func() { _ = sh.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := tally.get(); n >= calls+1 {
			break
		}
		if time.Now().After(deadline) {
			n, errs := tally.get()
			t.Fatalf("observer told of %d entries (%d failed rounds), want %d", n, errs, calls+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.pg.Stop() // the next rounds fail
	deadline = time.Now().Add(10 * time.Second)
	for {
		e.call(t, e.St, "obs", "m", 100) // marked: the shipper tries
		if _, errs := tally.get(); errs > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no failed round told while PostgreSQL was down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if n, _ := tally.get(); n != calls+1 {
		t.Fatalf("observer told of %d entries, want exactly %d", n, calls+1)
	}
}
