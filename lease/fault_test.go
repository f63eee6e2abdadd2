package lease_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
)

// A grant Redis ran but whose answer was lost leaves the lease in doubt:
// the account's state must stay until an answer says what is leased, and
// the idle give-back (or Close) returns it — not leave it reserved until
// the hold TTL with no replica knowing of it.
func TestLeaseLostGrantAnswerIsGivenBack(t *testing.T) {
	e := testledger.New(t, metering.Options{HoldTTL: time.Minute})
	e.Account(t, "acme", 100_000)
	cutter := startRelay(t, e.Srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: cutter.addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	l := lease.New(metering.New(rdb, metering.Options{HoldTTL: time.Minute}),
		lease.Options{IdleReturn: 20 * time.Millisecond})
	ctx := context.Background()
	if err := e.St.LoadScripts(ctx); err != nil { // EVALSHA runs the grant at once
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil { // the connection's handshake is done
		t.Fatal(err)
	}
	cutter.cut.Store(1)
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "x", Fixed: 10_000}); !errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("reserve with its answer cut: %v", err)
	}
	if a := e.Acct(t, "acme"); a.Reserved == 0 {
		t.Fatal("the grant did not run in Redis: the test proves nothing")
	}
	time.Sleep(200 * time.Millisecond) // ten janitor rounds: idle returns happen now
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if a := e.Acct(t, "acme"); a.Reserved != 0 {
		t.Fatalf("after Close %d mc are still reserved by a lease no replica knows of", a.Reserved)
	}
	testledger.Assert(t, e.St, "acme")
}

// countingBlackhole accepts connections and answers nothing (Redis
// partitioned away); it counts the connections made to it: go-redis drops
// a connection whose command timed out, so each attempt is a connection.
func countingBlackhole(t *testing.T) (addr string, attempts *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	attempts = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String(), attempts
}

// Calls of one account that need a grant while Redis does not answer must
// not each wait out a timeout in turn: once one grant failed, those waiting
// behind it are refused at once. (The Store sends each its own script, in
// parallel; a Leaser that queued them would try all 16, one after another.)
func TestLeaseGrantsFailFastWhileRedisIsSilent(t *testing.T) {
	addr, attempts := countingBlackhole(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	// No key cache: its key-change subscriber would dial the black hole too.
	l := lease.New(metering.New(rdb, metering.Options{KeyCacheTTL: -1}), lease.Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = l.Close(ctx)
	})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Reserve(context.Background(), metering.HoldRequest{Account: "acme", HoldID: fmt.Sprint("c", i), Fixed: 100})
			if !errors.Is(err, metering.ErrUnavailable) {
				t.Errorf("call %d: %v, want unavailable", i, err)
			}
		}()
	}
	wg.Wait()
	// A caller that arrived after the first failure may try once more; all
	// 16 start together, well within the first attempt's 1 s timeout.
	if n := attempts.Load(); n > 3 {
		t.Fatalf("%d attempts to reach Redis for 16 calls while it was silent: the calls queued behind each other's timeouts", n)
	}
	// A caller's context ends its wait for its turn too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "late", Fixed: 100}); !errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("cancelled caller: %v", err)
	}
}

// LeaseOptions.Offline bounds how long a lease serves once Redis stops
// answering — counted from the unanswered call, not from when go-redis
// gives up on it (timeouts × retries later).
func TestLeaseOfflineCountsFromTheUnansweredCall(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 1_000_000)
	rel := startRelay(t, e.Srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: rel.addr, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	l := lease.New(metering.New(rdb, metering.Options{}), lease.Options{IdleReturn: time.Hour, Offline: 100 * time.Millisecond})
	ctx := context.Background()
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "warm", Fixed: 100_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Settle(ctx, settlement("acme", "warm", 10)); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rel.silent.Store(true)
	// A settled call starts a flush that Redis never answers.
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "a", Fixed: 100}); err != nil {
		t.Fatalf("the lease serves at first: %v", err)
	}
	if _, err := l.Settle(ctx, settlement("acme", "a", 50)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // past Offline, well before the 3 s timeout
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "b", Fixed: 100}); !errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("a call %v into an unanswered flush (Offline 100ms): %v, want unavailable", 400*time.Millisecond, err)
	}
	rel.silent.Store(false)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if a := e.Acct(t, "acme"); a.Consumed != 60 || a.Reserved != 0 {
		t.Fatalf("after Redis answered again: %+v, want 60 consumed, nothing reserved", a)
	}
	testledger.Assert(t, e.St, "acme")
}

// A call held from a lease is recorded under its hold id: that record is
// what makes a second Settle of the hold a replay. Another request id is
// refused (the hold stays, to be settled right); the same settle twice
// charges once.
func TestLeaseSettleTwiceChargesOnce(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 1_000_000)
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour})
	ctx := context.Background()
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "h1", Fixed: 1000}); err != nil {
		t.Fatal(err)
	}
	st := metering.Settlement{Account: "acme", HoldID: "h1", Cost: 700, Record: metering.Record{RequestID: "req-1", Model: "m", Status: 200}}
	if _, err := l.Settle(ctx, st); err == nil {
		t.Fatal("a leased call settled under another request id")
	}
	st.Record.RequestID = "h1"
	for i := range 2 {
		if _, err := l.Settle(ctx, st); err != nil {
			t.Fatalf("settle %d: %v", i, err)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	returnAll(t, l)
	if a := e.Acct(t, "acme"); a.Consumed != 700 || a.Reserved != 0 {
		t.Fatalf("after one call of 700 mc settled twice: %+v", a)
	}
	testledger.Assert(t, e.St, "acme")
}
