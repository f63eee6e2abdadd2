package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
)

// fakeStore is the Redis side of one account, in memory, with faults on
// demand: the Leaser's state machine against it, without Redis. (The same
// behaviours against real Redis are in leaser_test.go and fault_test.go.)
type fakeStore struct {
	mu       sync.Mutex
	balance  int64
	reserved int64            // Σ leases and per-call holds
	leases   map[string]int64 // lease id → mc
	holds    map[string]int64 // per-call holds
	settled  map[string]int64 // request id → charge (applied once)
	gbSeen   map[string]uint64

	grants, applies, settles int
	failGrant, loseGrant     int           // the next n grants fail (lose: applied, answer lost)
	failSettle               int           // the next n per-call settles fail
	refuseApply              int           // the next n batches are refused (a script error)
	grantGate                chan struct{} // holds back grants' answers (they are applied first)

	revoked func(string)
	watched chan struct{}
}

var errDown = fmt.Errorf("fake: %w", metering.ErrUnavailable)

func newFake(balance int64) *fakeStore {
	return &fakeStore{balance: balance, leases: map[string]int64{}, holds: map[string]int64{},
		settled: map[string]int64{}, gbSeen: map[string]uint64{}, watched: make(chan struct{})}
}

func (f *fakeStore) Authenticate(context.Context, []byte) (metering.Identity, error) {
	return metering.Identity{}, nil
}
func (f *fakeStore) Ping(context.Context) error { return nil }
func (f *fakeStore) HoldTTL() time.Duration     { return time.Minute }
func (f *fakeStore) Generation(context.Context, string, string) (metering.Generation, error) {
	return metering.Generation{}, metering.ErrNotFound
}

func (f *fakeStore) RecordResponse(context.Context, string, string, string, int64) error { return nil }
func (f *fakeStore) StoredResponse(context.Context, string, string) (metering.StoredResponse, error) {
	return metering.StoredResponse{}, metering.ErrNotFound
}

func (f *fakeStore) Reserve(_ context.Context, r metering.HoldRequest) (metering.Hold, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	amt := r.Fixed + r.PerOutput*r.MaxOutput
	if f.balance-f.reserved < amt {
		return metering.Hold{}, &metering.InsufficientError{Needed: amt, Available: f.balance - f.reserved}
	}
	f.holds[r.HoldID] = amt
	f.reserved += amt
	return metering.Hold{ID: r.HoldID, Amount: amt, OutputTokens: r.MaxOutput, Available: f.balance - f.reserved}, nil
}

func (f *fakeStore) Settle(_ context.Context, s metering.Settlement) (metering.Charge, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settles++
	if f.failSettle > 0 {
		f.failSettle--
		return metering.Charge{}, errDown
	}
	if c, ok := f.settled[s.HoldID]; ok {
		return metering.Charge{Charged: c, BalanceAfter: f.balance, Replay: true}, nil
	}
	f.reserved -= f.holds[s.HoldID]
	delete(f.holds, s.HoldID)
	f.balance -= s.Cost
	f.settled[s.HoldID] = s.Cost
	return metering.Charge{Charged: s.Cost, BalanceAfter: f.balance}, nil
}

func (f *fakeStore) Release(_ context.Context, _, _, holdID string, _ *metering.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reserved -= f.holds[holdID]
	delete(f.holds, holdID)
	return nil
}

func (f *fakeStore) GrantLease(_ context.Context, g metering.LeaseGrant) (metering.LeaseGranted, error) {
	f.mu.Lock()
	gate := f.grantGate
	if gate != nil {
		defer func() { <-gate }() // after f.mu is given up (deferred calls run last in, first out)
	}
	defer f.mu.Unlock()
	f.grants++
	if f.failGrant > 0 {
		f.failGrant--
		return metering.LeaseGranted{}, errDown
	}
	avail := f.balance - f.reserved
	if avail < g.Least {
		return metering.LeaseGranted{Available: avail, Balance: f.balance}, nil
	}
	grant := min(g.Most, avail)
	f.leases[g.LeaseID] += grant
	f.reserved += grant
	if f.loseGrant > 0 {
		f.loseGrant--
		return metering.LeaseGranted{}, errDown
	}
	return metering.LeaseGranted{OK: true, Granted: grant, Lease: f.leases[g.LeaseID], Balance: f.balance, Available: f.balance - f.reserved}, nil
}

func (f *fakeStore) ApplyLease(_ context.Context, b metering.LeaseBatch) (metering.LeaseApplied, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.refuseApply > 0 {
		f.refuseApply--
		return metering.LeaseApplied{}, errors.New("fake: ERR script error")
	}
	lease := f.leases[b.LeaseID]
	var total int64
	for _, c := range b.Calls {
		if _, done := f.settled[c.Record.RequestID]; done || c.Release {
			continue
		}
		f.settled[c.Record.RequestID] = c.Cost
		fromLease := min(c.Cost, lease)
		lease -= fromLease
		f.reserved -= fromLease
		f.balance -= c.Cost
		total += c.Cost
	}
	if b.GiveBack > 0 && f.gbSeen[b.LeaseID] != b.GiveBackSeq {
		f.gbSeen[b.LeaseID] = b.GiveBackSeq
		gb := min(b.GiveBack, lease)
		lease -= gb
		f.reserved -= gb
	}
	f.leases[b.LeaseID] = lease
	f.shrink()
	return metering.LeaseApplied{Balance: f.balance, Lease: f.leases[b.LeaseID], Available: f.balance - f.reserved, Charged: total}, nil
}

// shrink is holds.lua's tg_shrink_leases. Called with f.mu held.
func (f *fakeStore) shrink() bool {
	short := f.reserved - f.balance
	shrunk := false
	for id, l := range f.leases {
		if short <= 0 {
			break
		}
		cut := min(l, short)
		f.leases[id] -= cut
		f.reserved -= cut
		short -= cut
		shrunk = shrunk || cut > 0
	}
	return shrunk
}

// debit is a refund or dispute: it shrinks the leases and tells (publish).
func (f *fakeStore) debit(mc int64, tell bool) {
	f.mu.Lock()
	f.balance -= mc
	shrunk := f.shrink()
	revoked := f.revoked
	f.mu.Unlock()
	if shrunk && tell {
		revoked("acme")
	}
}

func (f *fakeStore) WatchRevocations(ctx context.Context, revoked func(string), resubscribed func()) {
	f.mu.Lock()
	f.revoked = revoked
	f.mu.Unlock()
	close(f.watched)
	resubscribed()
	<-ctx.Done()
}

func (f *fakeStore) counts() (grants, applies, settles int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grants, f.applies, f.settles
}

func fakeLeaser(t *testing.T, f *fakeStore, opts lease.Options) *lease.Leaser {
	t.Helper()
	if opts.IdleReturn == 0 {
		opts.IdleReturn = time.Hour
	}
	l := newLeaser(t, f, opts)
	<-f.watched
	return l
}

func hold(id string, fixed int64) metering.HoldRequest {
	return metering.HoldRequest{Account: "acme", HoldID: id, Fixed: fixed}
}

// The state machine, one transition per case, against the fake store.
func TestLeaseStateMachine(t *testing.T) {
	ctx := context.Background()
	t.Run("calls after the first need no round trip", func(t *testing.T) {
		f := newFake(100_000)
		l := fakeLeaser(t, f, lease.Options{})
		for i := 0; i < 5; i++ {
			if _, err := l.Reserve(ctx, hold(fmt.Sprint("c", i), 1000)); err != nil {
				t.Fatal(err)
			}
		}
		// The first grant asks for the call and room for another (2 × 1000);
		// later grants likewise: 5 calls, 3 grants at most.
		if g, _, _ := f.counts(); g > 3 {
			t.Fatalf("%d grants for 5 calls", g)
		}
	})
	t.Run("a call over its hold leaves free negative: the next needs a grant", func(t *testing.T) {
		f := newFake(100_000)
		l := fakeLeaser(t, f, lease.Options{Linger: -1})
		if _, err := l.Reserve(ctx, hold("a", 1000)); err != nil {
			t.Fatal(err)
		}
		g0, _, _ := f.counts()
		ch, err := l.Settle(ctx, settlement("acme", "a", 5000))
		if err != nil || ch.Charged != 5000 || ch.OverHold != 4000 {
			t.Fatalf("settle = %+v, %v", ch, err)
		}
		if _, err := l.Reserve(ctx, hold("b", 1000)); err != nil {
			t.Fatal(err)
		}
		if g, _, _ := f.counts(); g == g0 {
			t.Fatal("the call after an over-hold charge was served from a lease that no longer covers it")
		}
	})
	t.Run("a revocation message forgets what is free", func(t *testing.T) {
		f := newFake(100_000)
		l := fakeLeaser(t, f, lease.Options{Linger: -1})
		if _, err := l.Reserve(ctx, hold("a", 10_000)); err != nil {
			t.Fatal(err)
		}
		f.debit(100_000, true) // everything, leases included
		if _, err := l.Reserve(ctx, hold("b", 1)); !errors.Is(err, metering.ErrInsufficient) {
			t.Fatalf("after the revocation: %v, want insufficient credits", err)
		}
		// The call in flight finishes, charged in full.
		if ch, err := l.Settle(ctx, settlement("acme", "a", 7000)); err != nil || ch.Charged != 7000 {
			t.Fatalf("in-flight settle = %+v, %v", ch, err)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if f.balance != -7000 || f.reserved != 0 {
			t.Fatalf("store: balance %d reserved %d; want −7000, 0", f.balance, f.reserved)
		}
	})
	t.Run("an answer sent before a revocation does not make credits free again", func(t *testing.T) {
		f := newFake(100_000)
		gate := make(chan struct{})
		f.grantGate = gate
		l := fakeLeaser(t, f, lease.Options{Linger: -1})
		done := make(chan error)
		go func() {
			_, err := l.Reserve(ctx, hold("a", 10_000))
			done <- err
		}()
		// Redis runs the grant; then a dispute shrinks the lease, and its
		// message overtakes the grant's answer.
		for g, _, _ := f.counts(); g == 0; g, _, _ = f.counts() {
			time.Sleep(time.Millisecond)
		}
		f.debit(100_000, true)
		f.mu.Lock()
		f.grantGate = nil
		f.mu.Unlock()
		close(gate) // the grant's (stale) answer arrives
		// The call that asked may not take from it either: it asks again,
		// and Redis says there is nothing.
		if err := <-done; !errors.Is(err, metering.ErrInsufficient) {
			t.Fatalf("the call whose grant was overtaken: %v, want insufficient credits", err)
		}
		if _, err := l.Reserve(ctx, hold("b", 1)); !errors.Is(err, metering.ErrInsufficient) {
			t.Fatalf("after the revocation: %v, want insufficient credits", err)
		}
	})
	t.Run("Redis away: the lease serves for Offline, then 503", func(t *testing.T) {
		f := newFake(100_000)
		l := fakeLeaser(t, f, lease.Options{Offline: 200 * time.Millisecond})
		if _, err := l.Reserve(ctx, hold("a", 1000)); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.failGrant = 1 << 30
		f.mu.Unlock()
		// A call too big for what is free needs a grant: it fails, and the
		// lease still serves what fits.
		if _, err := l.Reserve(ctx, hold("big", 50_000)); !errors.Is(err, metering.ErrUnavailable) {
			t.Fatalf("a call needing a grant while Redis is away: %v, want unavailable", err)
		}
		if _, err := l.Reserve(ctx, hold("small", 500)); err != nil {
			t.Fatalf("a call the lease covers, just after Redis went away: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := l.Reserve(ctx, hold("late", 1)); !errors.Is(err, metering.ErrUnavailable) {
			t.Fatalf("a call past Offline: %v, want unavailable", err)
		}
	})
	t.Run("a per-call settle never fails: deferred, then applied once", func(t *testing.T) {
		f := newFake(100_000)
		l := fakeLeaser(t, f, lease.Options{PerCall: true})
		h, err := l.Reserve(ctx, hold("p", 3000))
		if err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.failSettle = 3
		f.mu.Unlock()
		ch, err := l.Settle(ctx, settlement("acme", "p", 2000))
		if err != nil || !ch.Deferred || ch.Charged != 2000 || ch.BalanceAfter != h.Available+h.Amount-2000 {
			t.Fatalf("settle while Redis is away = %+v, %v; want deferred, 2000 charged", ch, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			f.mu.Lock()
			c, ok := f.settled["p"]
			f.mu.Unlock()
			if ok {
				if c != 2000 {
					t.Fatalf("applied %d, want 2000", c)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the deferred settle was never applied")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if f.balance != 98_000 || f.reserved != 0 {
			t.Fatalf("store: balance %d reserved %d", f.balance, f.reserved)
		}
	})
	t.Run("a second settle before the batch is applied is a replay", func(t *testing.T) {
		f := newFake(2000)
		l := fakeLeaser(t, f, lease.Options{Linger: 300 * time.Millisecond}) // the batch waits
		if _, err := l.Reserve(ctx, hold("a", 700)); err != nil {
			t.Fatal(err)
		}
		first, err := l.Settle(ctx, settlement("acme", "a", 700))
		if err != nil {
			t.Fatal(err)
		}
		again, err := l.Settle(ctx, settlement("acme", "a", 700))
		want := first
		want.Replay = true
		if err != nil || again != want {
			t.Fatalf("second settle = %+v, %v; want %+v", again, err, want)
		}
		if err := l.Release(ctx, "acme", "", "a", nil); err != nil {
			t.Fatal(err)
		}
		if _, _, settles := f.counts(); settles != 0 {
			t.Fatalf("%d settles reached the store: a leased call is applied by its batch only", settles)
		}
	})
	t.Run("a refused batch is retried, never dropped", func(t *testing.T) {
		f := newFake(100_000)
		f.refuseApply = 2
		l := fakeLeaser(t, f, lease.Options{Linger: -1})
		if _, err := l.Reserve(ctx, hold("a", 1000)); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Settle(ctx, settlement("acme", "a", 900)); err != nil {
			t.Fatal(err)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.settled["a"] != 900 || f.balance != 99_100 {
			t.Fatalf("store: settled %v, balance %d; the call's charge was dropped", f.settled, f.balance)
		}
	})
	t.Run("Close waits for deferred settles", func(t *testing.T) {
		f := newFake(100_000)
		l := lease.New(f, lease.Options{PerCall: true})
		<-f.watched
		if _, err := l.Reserve(ctx, hold("p", 3000)); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.failSettle = 4 // ~0.4 s of retries
		f.mu.Unlock()
		if ch, err := l.Settle(ctx, settlement("acme", "p", 2000)); err != nil || !ch.Deferred {
			t.Fatalf("settle = %+v, %v; want deferred", ch, err)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := l.Close(cctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.settled["p"] != 2000 {
			t.Fatalf("Close returned with the deferred settle unapplied (settled %v)", f.settled)
		}
	})
	t.Run("a grant whose answer was lost is given back when idle", func(t *testing.T) {
		f := newFake(100_000)
		f.loseGrant = 1
		l := fakeLeaser(t, f, lease.Options{IdleReturn: 50 * time.Millisecond})
		if _, err := l.Reserve(ctx, hold("a", 1000)); !errors.Is(err, metering.ErrUnavailable) {
			t.Fatalf("the lost grant: %v, want unavailable", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			f.mu.Lock()
			r := f.reserved
			f.mu.Unlock()
			if r == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d mc still leased after the idle give-back", r)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
