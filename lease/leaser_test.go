package lease_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
)

func newLeaser(t testing.TB, st lease.Store, opts lease.Options) *lease.Leaser {
	t.Helper()
	l := lease.New(st, opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Close(ctx)
	})
	return l
}

// returnAll applies everything queued and gives every lease back.
func returnAll(t testing.TB, l *lease.Leaser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Return(ctx); err != nil {
		t.Fatalf("Return: %v", err)
	}
}

func settlement(account, id string, cost int64) metering.Settlement {
	return metering.Settlement{Account: account, HoldID: id, Cost: cost,
		Record: metering.Record{RequestID: id, Model: "m", Endpoint: "chat.completions", Input: 10, Output: 5, Status: 200}}
}

func TestLeaseChargesExactly(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 1_000_000)
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour})
	ctx := context.Background()

	h, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "r1", Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if h.Amount != 2100 || h.OutputTokens != 1000 {
		t.Fatalf("hold %+v, want 2100 mc for 1000 tokens", h)
	}
	// The lease is a hold in Redis: the credits are reserved there.
	if a := e.Acct(t, "acme"); a.Reserved < h.Amount || a.Balance != 1_000_000 {
		t.Fatalf("after the first hold: %+v, want ≥ %d reserved", a, h.Amount)
	}
	// A second call needs no round trip: it comes from the lease.
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "r2", Fixed: 100}); err != nil {
		t.Fatal(err)
	}
	ch, err := l.Settle(ctx, settlement("acme", "r1", 345))
	if err != nil || ch.Charged != 345 || ch.BalanceAfter != 1_000_000-345 || ch.Capped {
		t.Fatalf("settle r1 = %+v, %v; want 345 charged, balance %d", ch, err, 1_000_000-345)
	}
	// Past its hold: charged in full, and the excess said (the cost record
	// and the ledger entry say it as a per-call settle does).
	ch, err = l.Settle(ctx, settlement("acme", "r2", 5000))
	if err != nil || ch.Charged != 5000 || ch.OverHold != 4900 || ch.Capped || ch.BalanceAfter != 1_000_000-5345 {
		t.Fatalf("settle r2 = %+v, %v; want 5000 charged, 4900 over the hold", ch, err)
	}
	// A failed call: released, its record kept, nothing charged.
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "r3", Fixed: 50}); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, "acme", "", "r3", &metering.Record{RequestID: "r3", Failed: true, Reason: "upstream_error", Status: 502}); err != nil {
		t.Fatal(err)
	}

	g, err := l.Generation(ctx, "acme", "r1") // waits for the batch
	if err != nil || g.Charged != 345 || g.BalanceAfter != 1_000_000-345 || g.Record.Input != 10 {
		t.Fatalf("generation r1 = %+v, %v", g, err)
	}
	if g, err := l.Generation(ctx, "acme", "r3"); err != nil || g.Charged != 0 || !g.Record.Failed {
		t.Fatalf("generation r3 = %+v, %v", g, err)
	}
	if g, err := l.Generation(ctx, "acme", "r2"); err != nil || g.Charged != 5000 || g.OverHold != 4900 || g.Capped {
		t.Fatalf("generation r2 = %+v, %v; want 5000 charged, 4900 over the hold", g, err)
	}
	returnAll(t, l)
	a := e.Acct(t, "acme")
	if a.Balance != 1_000_000-5345 || a.Consumed != 5345 || a.Reserved != 0 {
		t.Fatalf("account after return: %+v, want balance %d, consumed 5345, nothing reserved", a, 1_000_000-5345)
	}
	testledger.Assert(t, e.St, "acme")
	entries := e.Entries(t, "acme")
	if n := len(entries); n != 3 { // the purchase and two usage entries
		t.Fatalf("%d ledger entries, want 3: %+v", n, entries)
	}
	_, u, err := e.St.PlanUsage(ctx, "acme")
	if err != nil || u.Requests != 2 || u.Credits != 5345 || u.InputTokens != 20 || u.OutputTokens != 10 {
		t.Fatalf("period usage %+v, %v; want 2 requests, 5345 mc, 20 in, 10 out", u, err)
	}
}

func TestLeaseInsufficient(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "poor", 1000)
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour})
	ctx := context.Background()
	// The largest affordable output, as a per-call hold would grant.
	h, err := l.Reserve(ctx, metering.HoldRequest{Account: "poor", HoldID: "a", Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 4096})
	if err != nil || h.Amount != 1000 || h.OutputTokens != 450 {
		t.Fatalf("hold = %+v, %v; want all 1000 mc for 450 tokens", h, err)
	}
	_, err = l.Reserve(ctx, metering.HoldRequest{Account: "poor", HoldID: "b", Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 4096})
	testledger.WantInsufficient(t, err, 132, 0, false)
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "nobody", HoldID: "c", Fixed: 1}); !errors.Is(err, metering.ErrNoAccount) {
		t.Fatalf("unknown account: %v, want ErrNoAccount", err)
	}
	if _, err := l.Settle(ctx, settlement("poor", "a", 300)); err != nil {
		t.Fatal(err)
	}
	// What the settle gave back serves the next call without Redis.
	if h, err := l.Reserve(ctx, metering.HoldRequest{Account: "poor", HoldID: "d", Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 4096}); err != nil || h.Amount != 700 {
		t.Fatalf("hold after settle = %+v, %v; want 700 mc", h, err)
	}
	if _, err := l.Settle(ctx, settlement("poor", "d", 700)); err != nil {
		t.Fatal(err)
	}
	returnAll(t, l)
	if a := e.Acct(t, "poor"); a.Balance != 0 || a.Reserved != 0 {
		t.Fatalf("account %+v, want balance 0, nothing reserved", a)
	}
	testledger.Assert(t, e.St, "poor")
}

// Keys with a credit limit are held per call in Redis, where the limit is.
func TestLeaseLimitedKeyHeldPerCall(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 1_000_000)
	ctx := context.Background()
	k, secret, err := e.St.CreateKey(ctx, "acme", "capped", 500)
	if err != nil {
		t.Fatal(err)
	}
	_, free, err := e.St.CreateKey(ctx, "acme", "free", 0)
	if err != nil {
		t.Fatal(err)
	}
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour})
	id, err := l.Authenticate(ctx, []byte(secret))
	if err != nil || !id.Limited || id.KeyID != k.ID {
		t.Fatalf("limited key identity %+v, %v", id, err)
	}
	if id, err := l.Authenticate(ctx, []byte(free)); err != nil || id.Limited {
		t.Fatalf("unlimited key identity %+v, %v", id, err)
	}
	h, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: k.ID, KeyLimited: true, HoldID: "k1", Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 4096})
	if err != nil || h.Amount != 500 {
		t.Fatalf("limited key hold %+v, %v; want the key's 500 mc", h, err)
	}
	hs, err := e.RDB.HGetAll(ctx, "{a:acme}:hval").Result()
	if err != nil || hs["k1"] == "" {
		t.Fatalf("the limited key's call has no hold of its own in Redis: %v %v", hs, err)
	}
	_, err = l.Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: k.ID, KeyLimited: true, HoldID: "k2", Fixed: 100})
	testledger.WantInsufficient(t, err, 100, 0, true)
	ch, err := l.Settle(ctx, settlement("acme", "k1", 200))
	if err != nil || ch.Charged != 200 || ch.BalanceAfter != 1_000_000-200 {
		t.Fatalf("settle %+v, %v", ch, err)
	}
	testledger.Assert(t, e.St, "acme")
}

// Many goroutines on two replicas against an account funded for a fraction
// of their holds: never below zero, every settled charge in the ledger once,
// and the money invariant once the leases are given back.
func TestLeaseConcurrentReplicas(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	const fund = 300_000
	e.Account(t, "acme", fund)
	replicas := []*lease.Leaser{
		newLeaser(t, e.St, lease.Options{ID: "r0", IdleReturn: 50 * time.Millisecond}),
		newLeaser(t, e.Replica(t, metering.Options{}), lease.Options{ID: "r1", IdleReturn: 50 * time.Millisecond}),
	}
	ctx := context.Background()
	var (
		wg               sync.WaitGroup
		charged, refused atomic.Int64
		served           atomic.Int64
	)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := replicas[g%2]
			for i := 0; i < 40; i++ {
				id := fmt.Sprintf("c%d-%d", g, i)
				h, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: id, Fixed: 500, PerOutput: 2, MinOutput: 16, MaxOutput: 2000})
				if errors.Is(err, metering.ErrInsufficient) {
					refused.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i%7 == 3 {
					if err := l.Release(ctx, "acme", "", id, &metering.Record{RequestID: id, Failed: true}); err != nil {
						t.Error(err)
					}
					continue
				}
				ch, err := l.Settle(ctx, settlement("acme", id, 400+int64(i)))
				if err != nil {
					t.Error(err)
					return
				}
				if ch.Charged > h.Amount {
					t.Errorf("%s charged %d over its hold %d", id, ch.Charged, h.Amount)
				}
				charged.Add(ch.Charged)
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, l := range replicas {
		returnAll(t, l)
	}
	a := e.Acct(t, "acme")
	if a.Balance < 0 || a.Reserved != 0 {
		hv, _ := e.RDB.HGetAll(ctx, "{a:acme}:hval").Result()
		t.Fatalf("account %+v: below zero or still reserved (holds %v)", a, hv)
	}
	if a.Consumed != charged.Load() || a.Balance != fund-charged.Load() {
		t.Fatalf("consumed %d, balance %d; the callers were told %d charged in all", a.Consumed, a.Balance, charged.Load())
	}
	if served.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("served %d, refused %d: the test must reach the 402 boundary", served.Load(), refused.Load())
	}
	usage := 0
	for _, en := range e.Entries(t, "acme") {
		if en.Type == "usage" {
			usage++
		}
	}
	if int64(usage) != served.Load() {
		t.Fatalf("%d usage entries for %d settled calls", usage, served.Load())
	}
	testledger.Assert(t, e.St, "acme")
	t.Logf("served %d, refused %d, charged %d mc", served.Load(), refused.Load(), charged.Load())
}

// A replica that dies with a lease frees it at the hold TTL, like a hold.
func TestLeaseExpires(t *testing.T) {
	e := testledger.New(t, metering.Options{HoldTTL: 300 * time.Millisecond})
	e.Account(t, "acme", 100_000)
	// A replica whose Redis connection is gone for good: it cannot renew.
	rdb := redis.NewClient(&redis.Options{Addr: e.Srv.Addr, MaxRetries: -1})
	l := lease.New(metering.New(rdb, metering.Options{HoldTTL: 300 * time.Millisecond}), lease.Options{IdleReturn: time.Hour})
	ctx := context.Background()
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "x", Fixed: 1000}); err != nil {
		t.Fatal(err)
	}
	_ = rdb.Close()
	if a := e.Acct(t, "acme"); a.Reserved == 0 {
		t.Fatal("no lease in Redis")
	}
	other := newLeaser(t, e.Replica(t, metering.Options{HoldTTL: 300 * time.Millisecond}), lease.Options{ID: "other", IdleReturn: time.Hour})
	time.Sleep(400 * time.Millisecond)
	// The other replica's next grant sweeps the dead lease, like a reserve.
	h, err := other.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "y", Fixed: 100_000})
	if err != nil || h.Amount != 100_000 {
		t.Fatalf("after the TTL the whole balance is available again: %+v, %v", h, err)
	}
}

// While Redis is down, a live lease keeps serving and settles wait; when it
// is back, they are applied exactly once.
func TestLeaseRedisOutage(t *testing.T) {
	srv := testredis.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb0 := srv.Client(t)
	e := &testledger.Env{Srv: srv, RDB: rdb0, St: metering.New(rdb0, metering.Options{})}
	e.Account(t, "acme", 1_000_000)
	rdb := redis.NewClient(&redis.Options{
		Addr: e.Srv.Addr, DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond,
		WriteTimeout: 100 * time.Millisecond, MaxRetries: -1,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	var errs atomic.Int64
	l := newLeaser(t, metering.New(rdb, metering.Options{}), lease.Options{
		IdleReturn: time.Hour, Offline: time.Hour, OnError: func(string, error) { errs.Add(1) }})
	ctx := context.Background()
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "before", Fixed: 1000}); err != nil {
		t.Fatal(err)
	}
	e.Srv.Stop()
	if _, err := l.Settle(ctx, settlement("acme", "before", 700)); err != nil {
		t.Fatalf("settle while Redis is down: %v (it should queue)", err)
	}
	var total int64 = 700
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("down-%d", i)
		if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: id, Fixed: 50}); err != nil {
			t.Fatalf("reserve %d from the lease while Redis is down: %v", i, err)
		}
		if _, err := l.Settle(ctx, settlement("acme", id, 40)); err != nil {
			t.Fatal(err)
		}
		total += 40
	}
	// More than the lease holds needs Redis: refused as unavailable.
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "big", Fixed: 900_000}); !errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("a call beyond the lease while Redis is down: %v, want ErrUnavailable", err)
	}
	for deadline := time.Now().Add(10 * time.Second); errs.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no flush failure reported while Redis was down")
		}
	}
	e.Srv.Restart(t)
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	returnAll(t, l)
	a := e.Acct(t, "acme")
	if a.Consumed != total || a.Balance != 1_000_000-total || a.Reserved != 0 {
		t.Fatalf("after the outage: %+v, want %d consumed once, nothing reserved", a, total)
	}
	testledger.Assert(t, e.St, "acme")
}

// redisRelay is a TCP relay to Redis that fakes two faults. Armed with cut,
// it drops the next reply and closes the connection: Redis ran the command,
// the client never hears of it — and resends it (go-redis retries; then the
// Leaser does). With silent set, requests and replies vanish while the
// connections stay open: Redis looks hung.
type redisRelay struct {
	addr   string
	cut    atomic.Int32
	silent atomic.Bool
}

func startRelay(t *testing.T, target string) *redisRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	r := &redisRelay{addr: ln.Addr().String()}
	pipe := func(dst, src net.Conn, replies bool) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			if r.silent.Load() {
				continue
			}
			if replies && r.cut.Load() > 0 && r.cut.Add(-1) >= 0 {
				return // the reply is lost
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			go pipe(server, client, false)
			go pipe(client, server, true)
		}
	}()
	return r
}

// A batch whose answer was lost is resent (by go-redis, configured to retry
// as the gateway's client is, then by the Leaser): no call is applied twice,
// and a give-back is not given back twice.
func TestLeaseFlushReplayIsIdempotent(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 1_000_000)
	cutter := startRelay(t, e.Srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: cutter.addr, MaxRetries: 2, MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	l := newLeaser(t, metering.New(rdb, metering.Options{}), lease.Options{IdleReturn: time.Hour, Offline: time.Hour})
	ctx := context.Background()
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	// A call in flight all along: its hold must stay reserved in Redis.
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "inflight", Fixed: 400_000}); err != nil {
		t.Fatal(err)
	}
	var total int64
	for round := 0; round < 3; round++ {
		for i := 0; i < 10; i++ {
			id := fmt.Sprintf("p%d-%d", round, i)
			if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: id, Fixed: 100}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Settle(ctx, settlement("acme", id, 50+int64(i))); err != nil {
				t.Fatal(err)
			}
			total += 50 + int64(i)
		}
		cutter.cut.Store(1) // the batch's answer (or the give-back's) is lost
		if round == 2 {
			if err := l.Return(fctx); err != nil {
				t.Fatal(err)
			}
		} else if err := l.Flush(fctx); err != nil {
			t.Fatal(err)
		}
	}
	if cutter.cut.Load() > 0 {
		t.Fatal("no reply was cut: the test proves nothing")
	}
	a := e.Acct(t, "acme")
	if a.Consumed != total {
		t.Fatalf("consumed %d, want %d: a resent batch was applied twice", a.Consumed, total)
	}
	if a.Reserved != 400_000 {
		t.Fatalf("reserved %d after giving the lease back, want the 400000 mc of the call in flight", a.Reserved)
	}
	if _, err := l.Settle(ctx, settlement("acme", "inflight", 1000)); err != nil {
		t.Fatal(err)
	}
	returnAll(t, l)
	if a := e.Acct(t, "acme"); a.Consumed != total+1000 || a.Reserved != 0 {
		t.Fatalf("account %+v, want %d consumed, nothing reserved", a, total+1000)
	}
	testledger.Assert(t, e.St, "acme")
}

// When calls come faster than Redis applies them, new calls wait for room
// in the queue instead of running ahead of the ledger.
func TestLeaseBackpressure(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 1_000_000)
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour, MaxQueued: 4, Linger: 100 * time.Millisecond})
	ctx := context.Background()
	var total int64
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("b%d", i)
		if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: id, Fixed: 100}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if i == 4 {
			// Four calls were waiting in the queue, lingering 100 ms: this
			// one could only start once they were applied.
			if a := e.Acct(t, "acme"); a.Consumed != total {
				t.Fatalf("the fifth call started with %d mc of %d applied: it ran ahead of the ledger", a.Consumed, total)
			}
		}
		if _, err := l.Settle(ctx, settlement("acme", id, 10)); err != nil {
			t.Fatal(err)
		}
		total += 10
	}
	returnAll(t, l)
	if a := e.Acct(t, "acme"); a.Consumed != total || a.Reserved != 0 {
		t.Fatalf("account %+v, want %d consumed", a, total)
	}
	testledger.Assert(t, e.St, "acme")
}

// Callers arriving together on a cold account share grants: each grant
// leaves room for one more call, and a caller that waited for its turn
// takes that room instead of growing the lease again.
func TestLeaseConcurrentGrantsShareRoom(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 10_000_000)
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour})
	ctx := context.Background()
	const callers, amount = 32, 1000
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: fmt.Sprintf("c%d", i), Fixed: amount}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Every grant asks for two calls' worth: 32 calls need 16 grants, 32,000 mc.
	if a := e.Acct(t, "acme"); a.Reserved < callers*amount || a.Reserved > (callers+2)*amount {
		t.Fatalf("%d mc leased for %d calls of %d mc: grants did not share their room", a.Reserved, callers, amount)
	}
}
