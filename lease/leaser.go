package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Ledger is what a Leaser needs for calls it holds one by one in Redis (keys
// with their own credit limit, or Options.PerCall), and passes through.
// *metering.Store implements it.
type Ledger interface {
	Authenticate(ctx context.Context, secret []byte) (metering.Identity, error)
	Ping(ctx context.Context) error
	Reserve(ctx context.Context, r metering.HoldRequest) (metering.Hold, error)
	Settle(ctx context.Context, s metering.Settlement) (metering.Charge, error)
	Release(ctx context.Context, account, keyID, holdID string, rec *metering.Record) error
	Generation(ctx context.Context, account, requestID string) (metering.Generation, error)
	RecordResponse(ctx context.Context, account, responseID, provider string, tokens int64) error
	StoredResponse(ctx context.Context, account, responseID string) (metering.StoredResponse, error)
	HoldTTL() time.Duration
}

// Leases is the Redis side of the leases. *metering.Store implements it.
type Leases interface {
	GrantLease(ctx context.Context, g metering.LeaseGrant) (metering.LeaseGranted, error)
	ApplyLease(ctx context.Context, b metering.LeaseBatch) (metering.LeaseApplied, error)
	// WatchRevocations runs until ctx is done, telling of accounts whose
	// leases a debit shrank (see metering.Store.WatchRevocations).
	WatchRevocations(ctx context.Context, revoked func(account string), resubscribed func())
}

// Store is both.
type Store interface {
	Ledger
	Leases
}

var _ Store = (*metering.Store)(nil)

// Options configure a Leaser. Zero values mean the documented defaults.
type Options struct {
	// ID names this replica's leases (hold id "lease:<ID>"). It must differ
	// between replicas running at once. Default: random.
	ID string
	// IdleReturn is how long an account's lease may go unused before it is
	// given back, so that other replicas may use the credits. Default 1s.
	IdleReturn time.Duration
	// MaxQueued bounds an account's calls waiting to be applied in Redis:
	// past it the account's new calls wait for room (Redis applying calls
	// slower than they come), and after a second are refused as
	// unavailable. Default 4096.
	MaxQueued int
	// Offline bounds how long calls are still held from a lease after Redis
	// stopped answering this replica (their charges wait in the queue, and
	// are lost should the replica die before Redis is back). Default 2s.
	Offline time.Duration
	// Linger is how long a flush waits for more settled calls before it
	// goes to Redis, so that one script applies several. Default 2ms;
	// negative sends at once.
	Linger time.Duration
	// Verify is how often a lease that calls hold from is checked in Redis
	// when no batch did so meanwhile, in case a message that it was shrunk
	// (a refund, a dispute) was lost. Default 1s (never more than a quarter of
	// the hold TTL).
	Verify time.Duration
	// PerCall holds every call in Redis one by one (no leases); settles are
	// still retried by the Leaser while Redis is unreachable.
	PerCall bool
	// OnError is told when a batch could not be applied (it is retried).
	OnError func(account string, err error)
}

// Leaser meters calls against per-replica credit leases: the first call of
// an account on this replica leases a slice of its available credits in one
// script (a hold like any other, with the same expiry), and later calls hold
// from the lease in process, without a Redis round trip. Settled and failed
// calls are queued and applied in Redis in batches — one atomic script per
// account and batch, which writes each call's ledger entry and cost record as
// settle does — while the caller already has its answer. A lease unused for
// Options.IdleReturn is given back.
//
// What this changes against Store (per-call holds):
//   - a call starts without a round trip, and its settle is applied after it
//     is answered: a replica killed between the two loses those charges (the
//     calls it answered in the last flush: Options.Linger, 2 ms, and a
//     round trip);
//   - the 402 boundary is per replica: credits leased by one replica are not
//     available to another until used or given back;
//   - X-Credits-Balance is this replica's view: exact for one replica, late
//     by other replicas' unflushed calls otherwise;
//   - calls keep being served from a live lease while Redis is unreachable,
//     for Options.Offline (2 s) at most and never past half the hold
//     TTL since the lease was renewed, and are applied when it is back;
//   - calls wait for room when Redis applies them slower than they come
//     (Options.MaxQueued).
//
// Keys with their own credit limit (HoldRequest.KeyLimited) are held per
// call in Redis, as by Store. A Leaser is safe for concurrent use.
type Leaser struct {
	st     Store
	id     string
	ttl    time.Duration
	verify time.Duration // how often a lease in use is checked (Options.Verify)
	opts   Options

	mu    sync.RWMutex
	accts map[string]*leaseAcct

	closed  atomic.Bool
	stop    chan struct{}
	abandon chan struct{} // closed when Close gives up on Redis
	// flushers counts running flush goroutines. Not a WaitGroup: a call
	// settled while Close waits (its handler outlived the drain) starts one
	// then, which a WaitGroup forbids once its count is zero.
	flushers struct {
		sync.Mutex
		n    int
		zero chan struct{} // closed when n drops to 0; nil while n is 0
	}
	janitor sync.WaitGroup
	once    sync.Once
	// abandonOnce guards abandon: Close may run twice.
	abandonOnce sync.Once
	gbSeq       atomic.Uint64 // give-back sequence numbers
	unwatch     context.CancelFunc
	stopLate    sync.Once

	// late holds settles of calls held one by one in Redis that could not
	// be applied when they ended (Redis unreachable); Settle never fails,
	// so they are retried in the background until they land or their hold
	// has expired.
	late lateSettles
	// perCall remembers the holds of calls held one by one in Redis, so
	// that a deferred settle can still say what the balance will be.
	perCall struct {
		sync.Mutex
		m map[string]perCallHold
	}
}

type perCallHold struct {
	metering.Hold
	expires int64 // unix nanos
}

// leaseAcct is one account's lease on this replica. Invariant, once no
// Redis call of the account is in flight: Redis's lease = free + held + pending.
type leaseAcct struct {
	id   string
	mu   sync.Mutex
	cond sync.Cond

	free  int64 // leased mc no call holds (negative when Redis's lease shrank)
	held  int64 // Σ holds of calls in flight
	holds map[string]localHold
	// unapplied are the charges of calls settled here and not yet applied
	// in Redis, by request id: a second Settle of one is a replay, never a
	// per-call settle that would find no hold there.
	unapplied map[string]metering.Charge
	pending   int64 // Σ charges queued, not yet applied in Redis
	balance   int64 // Redis balance as of the last answer
	outside   int64 // available outside the lease as of the last answer

	queue     []leaseOp
	queued    uint64 // calls ever queued
	applied   uint64 // calls ever applied (or dropped: the account is gone)
	flushing  bool
	returning bool   // the next flush gives back what is free
	gbPending int64  // taken from free for a give-back Redis has not confirmed
	gbSeq     uint64 // that give-back's sequence number (resent with it)
	renew     bool   // the next flush renews the lease even with nothing to apply
	inflight  int    // Redis calls in flight for this account
	fails     uint64 // Redis calls of the account that failed, ever
	// sentAt is when the Redis call holding sem was sent (unix nanos, 0:
	// none): a call unanswered for Options.Offline stops the lease
	// serving as a failed one does, before go-redis gives up on it.
	sentAt atomic.Int64
	// sem lets one Redis call of the account run at a time, and is given
	// up only once a.mu is held again: answers are then applied in the
	// order Redis ran the calls, so each is the latest word on the lease.
	sem     chan struct{}
	renewed time.Time
	failing time.Time // first failure since Redis last answered; zero while it does
	used    time.Time
	dead    bool // dropped from the Leaser's map
	// revocations counts the messages that this account's leases were
	// shrunk in Redis: an answer to a Redis call sent before the last one
	// may predate the shrink, so it cannot make credits free again.
	revocations uint64
	// leased: Redis's last answer showed a lease of this replica (true
	// until an answer says the lease is gone: only then may the account's
	// state be dropped, or credits this replica lost count of would stay
	// leased until they expire).
	leased bool
}

// localHold is a call's hold on the lease. Like a hold in Redis it expires:
// a call never settled nor released (a bug, or a lost goroutine) must not
// keep the lease, and its credits, alive for ever.
type localHold struct {
	amt     int64
	expires int64 // unix nanos
}

type leaseOp struct {
	release bool // a failed call: its record only
	keyID   string
	charge  int64 // the call's whole cost
	held    int64 // its hold on the lease
	rec     metering.Record
	marker  bool // not a call: Leaser.Return's place in the queue
}

// errBacklog refuses calls while an account's queue is full.
var errBacklog = errors.New("too many calls waiting to be applied")

// errRedisFailing refuses a call that needs a grant right after another
// call of the account found Redis not answering.
var errRedisFailing = errors.New("redis is not answering")

const maxLeaseBatch = 128

// NewLeaser returns a Leaser over st and starts its background work (idle
// returns, lease renewals); Close stops it.
func New(st Store, opts Options) *Leaser {
	if opts.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		opts.ID = hex.EncodeToString(b[:])
	}
	if opts.IdleReturn <= 0 {
		opts.IdleReturn = time.Second
	}
	if opts.MaxQueued <= 0 {
		opts.MaxQueued = 4096
	}
	if opts.Offline <= 0 {
		opts.Offline = 2 * time.Second
	}
	if opts.Linger == 0 {
		opts.Linger = 2 * time.Millisecond
	}
	if opts.Verify <= 0 {
		opts.Verify = time.Second
	}
	l := &Leaser{
		st: st, id: "lease:" + opts.ID, ttl: st.HoldTTL(), opts: opts,
		accts: make(map[string]*leaseAcct), stop: make(chan struct{}), abandon: make(chan struct{}),
	}
	l.verify = min(opts.Verify, l.ttl/4)
	l.perCall.m = make(map[string]perCallHold)
	l.late.init()
	// Give-back numbers never repeat, even for a fixed ID across restarts.
	l.gbSeq.Store(uint64(time.Now().UnixNano()))
	ctx, cancel := context.WithCancel(context.Background())
	l.unwatch = cancel
	l.janitor.Add(2)
	go l.tend()
	go l.watch(ctx)
	l.late.done.Add(1)
	go l.retryLate()
	return l
}

// Authenticate is Store.Authenticate.
func (l *Leaser) Authenticate(ctx context.Context, secret []byte) (metering.Identity, error) {
	return l.st.Authenticate(ctx, secret)
}

// RecordResponse is Store.RecordResponse: a stored response's owner is not
// leased, it is written through (bounded by ctx).
func (l *Leaser) RecordResponse(ctx context.Context, account, responseID, provider string, tokens int64) error {
	return l.st.RecordResponse(ctx, account, responseID, provider, tokens)
}

// StoredResponse is Store.StoredResponse.
func (l *Leaser) StoredResponse(ctx context.Context, account, responseID string) (metering.StoredResponse, error) {
	return l.st.StoredResponse(ctx, account, responseID)
}

// Ping is Store.Ping.
func (l *Leaser) Ping(ctx context.Context) error { return l.st.Ping(ctx) }

func (l *Leaser) acct(id string) *leaseAcct {
	l.mu.RLock()
	a := l.accts[id]
	l.mu.RUnlock()
	if a != nil {
		return a
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if a = l.accts[id]; a == nil {
		a = &leaseAcct{id: id, holds: make(map[string]localHold), unapplied: make(map[string]metering.Charge), sem: make(chan struct{}, 1)}
		a.cond.L = &a.mu
		l.accts[id] = a
	}
	return a
}

func (l *Leaser) lookup(id string) *leaseAcct {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.accts[id]
}

// Reserve holds r from the account's lease, growing the lease when it is
// short. It fails as Store.Reserve does.
func (l *Leaser) Reserve(ctx context.Context, r metering.HoldRequest) (metering.Hold, error) {
	if r.KeyLimited || l.opts.PerCall || l.closed.Load() {
		return l.reservePerCall(ctx, r)
	}
	if r.Fixed < 0 || r.PerOutput < 0 || r.MinOutput < 0 || r.MaxOutput < r.MinOutput {
		return metering.Hold{}, fmt.Errorf("reserving credits: invalid request %+v", r)
	}
	if !metering.ValidAccountID(r.Account) {
		return metering.Hold{}, fmt.Errorf("reserving credits for %q: %w", r.Account, metering.ErrNoAccount)
	}
	least, most := r.Fixed+r.PerOutput*r.MinOutput, r.Fixed+r.PerOutput*r.MaxOutput
	for attempt := 0; ; attempt++ {
		a := l.acct(r.Account)
		a.mu.Lock()
		if a.dead {
			a.mu.Unlock()
			continue
		}
		now := time.Now()
		if a.queued-a.applied >= uint64(l.opts.MaxQueued) {
			// Redis applies calls slower than they come: the caller waits
			// for room (a second at most) rather than run ahead of the ledger.
			a.waitUntil(ctx, now.Add(time.Second), func() bool {
				return a.queued-a.applied >= uint64(l.opts.MaxQueued) && a.flushing
			})
			if a.queued-a.applied >= uint64(l.opts.MaxQueued) {
				a.mu.Unlock()
				return metering.Hold{}, unavailable("reserving credits", errBacklog)
			}
			if a.dead { // dropped while this call waited
				a.mu.Unlock()
				continue
			}
			now = time.Now()
		}
		if h, ok := a.take(r, now, l, false); ok {
			a.mu.Unlock()
			return h, nil
		}
		a.inflight++
		fails := a.fails
		a.mu.Unlock()

		// One Redis call of the account at a time. Another caller's grant
		// may have made room meanwhile: then no grant is needed. When
		// another caller's call failed meanwhile, Redis is not answering:
		// the lease serves what it can, and no caller queues up for a
		// timeout of its own behind the one that just failed.
		select {
		case a.sem <- struct{}{}:
		case <-ctx.Done():
			a.mu.Lock()
			a.inflight--
			h, ok := a.take(r, time.Now(), l, true)
			a.mu.Unlock()
			if ok {
				return h, nil
			}
			return metering.Hold{}, unavailable("reserving credits", ctx.Err())
		}
		a.mu.Lock()
		h, ok := a.take(r, time.Now(), l, false)
		if !ok && a.fails != fails {
			h, ok = a.take(r, time.Now(), l, true)
			if !ok {
				<-a.sem
				a.inflight--
				a.mu.Unlock()
				return metering.Hold{}, unavailable("reserving credits", errRedisFailing)
			}
		}
		if ok {
			<-a.sem
			a.inflight--
			a.mu.Unlock()
			return h, nil
		}
		// Ask for this call and room for one more like it; accept as little
		// as the smallest call needs.
		want, need := 2*most-a.free, max(least-a.free, 0)
		a.sentAt.Store(time.Now().UnixNano())
		revs := a.revocations
		a.mu.Unlock()
		res, err := l.st.GrantLease(ctx, metering.LeaseGrant{Account: r.Account, LeaseID: l.id, Least: need, Most: max(want, need), TTL: l.ttl})

		a.mu.Lock()
		a.sentAt.Store(0)
		<-a.sem
		a.inflight--
		if err == nil || !errors.Is(err, metering.ErrUnavailable) {
			a.failing = time.Time{}
		}
		switch {
		case err != nil && !errors.Is(err, metering.ErrUnavailable):
			a.mu.Unlock()
			return metering.Hold{}, err
		case err != nil:
			if a.failing.IsZero() {
				a.failing = now
			}
			a.fails++
			// Redis may have granted without the answer reaching us: the
			// lease is in doubt until an answer says otherwise, so the
			// account's state stays (the idle give-back finds out and
			// returns whatever was granted).
			a.leased = true
			// Redis unreachable: a live lease still serves what it can.
			h, ok := a.take(r, now, l, true)
			a.mu.Unlock()
			if ok {
				return h, nil
			}
			return metering.Hold{}, unavailable("reserving credits", err)
		case !res.OK:
			a.balance, a.outside = res.Balance, res.Available
			h, ok := a.take(r, now, l, true)
			avail := max(a.free, 0) + max(res.Available, 0)
			a.mu.Unlock()
			if ok {
				return h, nil
			}
			return metering.Hold{}, &metering.InsufficientError{Needed: least, Available: avail}
		}
		a.balance, a.outside = res.Balance, res.Available
		a.renewed = now
		a.leased = res.Lease > 0
		a.reconcile(res.Lease, res.Granted)
		l.distrust(a, revs)
		h, ok = a.take(r, now, l, true)
		avail := max(a.free, 0) + max(res.Available, 0)
		a.mu.Unlock()
		if ok {
			return h, nil
		}
		if attempt >= 3 {
			// Other calls of this replica took what was granted each time.
			return metering.Hold{}, &metering.InsufficientError{Needed: least, Available: avail}
		}
	}
}

// reconcile updates free from Redis's answer: lease is the lease after the
// answered call (answers are applied in the order Redis ran them, see sem).
// With no give-back in doubt that is the whole truth: free = lease − held −
// pending. A give-back whose answer was lost may or may not be in it, so
// then the answer only bounds free from above, grant being what this call
// added: free never claims more than Redis holds for it. Called with a.mu
// held.
func (a *leaseAcct) reconcile(lease, grant int64) {
	exact := lease - a.held - a.pending - a.gbPending
	if a.gbPending == 0 {
		a.free = exact
		return
	}
	a.free = min(a.free+grant, exact)
}

// offline says whether Redis has not answered this account for longer than
// limit: a call failed that long ago, or one has been waiting that long.
func (a *leaseAcct) offline(now time.Time, limit time.Duration) bool {
	if !a.failing.IsZero() && now.Sub(a.failing) > limit {
		return true
	}
	sent := a.sentAt.Load()
	return sent != 0 && now.UnixNano()-sent > int64(limit)
}

// take holds r from the free part of the lease: with MaxOutput, or with
// partial the most output in [MinOutput, MaxOutput] that is free. Called
// with a.mu held.
func (a *leaseAcct) take(r metering.HoldRequest, now time.Time, l *Leaser, partial bool) (metering.Hold, bool) {
	if lh, ok := a.holds[r.HoldID]; ok { // the same hold id twice is one hold
		amt := lh.amt
		out := r.MaxOutput
		if r.PerOutput > 0 {
			out = (amt - r.Fixed) / r.PerOutput
		}
		return metering.Hold{ID: r.HoldID, Amount: amt, OutputTokens: out, Available: max(a.free, 0) + a.outside}, true
	}
	// A lease not renewed for half its lifetime may expire under a new call.
	// Nor one whose replica has not reached Redis for a while.
	if a.renewed.IsZero() || now.Sub(a.renewed) > l.ttl/2 || a.free < r.Fixed || a.offline(now, l.opts.Offline) {
		return metering.Hold{}, false
	}
	out := r.MaxOutput
	if r.PerOutput > 0 {
		if afford := (a.free - r.Fixed) / r.PerOutput; afford < out {
			if !partial {
				return metering.Hold{}, false
			}
			out = afford
		}
	}
	if out < r.MinOutput {
		return metering.Hold{}, false
	}
	amt := r.Fixed + r.PerOutput*out
	a.free -= amt
	a.held += amt
	a.holds[r.HoldID] = localHold{amt: amt, expires: now.Add(l.ttl).UnixNano()}
	a.used = now
	return metering.Hold{ID: r.HoldID, Amount: amt, OutputTokens: out, Available: max(a.free, 0) + a.outside}, true
}

// Generation returns a call's cost record, once this replica's queued calls
// of the account (the one asked about among them) are applied.
func (l *Leaser) Generation(ctx context.Context, account, requestID string) (metering.Generation, error) {
	if a := l.lookup(account); a != nil {
		a.wait(ctx, time.Now().Add(2*time.Second))
	}
	return l.st.Generation(ctx, account, requestID)
}

// waitUntil waits on a.cond while cond holds, until deadline at most or ctx
// is done (a timer wakes the waiters then: a flusher in backoff broadcasts
// late).
// Called with a.mu held.
func (a *leaseAcct) waitUntil(ctx context.Context, deadline time.Time, cond func() bool) {
	if !cond() {
		return
	}
	wake := func() {
		a.mu.Lock()
		a.cond.Broadcast()
		a.mu.Unlock()
	}
	t := time.AfterFunc(time.Until(deadline), wake)
	defer t.Stop()
	defer context.AfterFunc(ctx, wake)()
	for cond() && time.Now().Before(deadline) && ctx.Err() == nil {
		a.cond.Wait()
	}
}

// wait blocks until what was queued before it is applied, or until
// deadline; it returns how many of those calls are still not applied.
func (a *leaseAcct) wait(ctx context.Context, deadline time.Time) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	target := a.queued
	a.waitUntil(ctx, deadline, func() bool { return a.applied < target && a.flushing })
	if a.applied >= target {
		return 0
	}
	return target - a.applied
}

// Flush waits until every call settled or released so far is applied in
// Redis, or ctx is done.
func (l *Leaser) Flush(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	for _, a := range l.all() {
		if left := a.wait(ctx, deadline); left > 0 {
			return fmt.Errorf("flushing leases: %d calls of %q not applied: %w", left, a.id, metering.ErrUnavailable)
		}
	}
	return nil
}

// Return gives back the free part of every lease now (calls in flight keep
// their holds) and waits until that is applied, or ctx is done. It is meant
// for Close (after the janitor has stopped) and for tests that read Redis
// with nothing leased.
func (l *Leaser) Return(ctx context.Context) error {
	for _, a := range l.all() {
		a.mu.Lock()
		a.returning = true
		a.queued++ // a marker for wait: the return is applied with the next batch
		a.queue = append(a.queue, leaseOp{marker: true})
		l.kick(a)
		a.mu.Unlock()
	}
	if err := l.Flush(ctx); err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	for _, a := range l.all() {
		// A give-back may take a second round (credits found by the exact
		// count after the first): wait for it too.
		a.mu.Lock()
		a.waitUntil(ctx, deadline, func() bool { return (a.returning || a.gbPending > 0) && a.flushing })
		left := a.returning || a.gbPending > 0
		a.mu.Unlock()
		if left {
			return fmt.Errorf("returning the lease of %q: %w", a.id, metering.ErrUnavailable)
		}
	}
	return nil
}

func (l *Leaser) all() []*leaseAcct {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]*leaseAcct, 0, len(l.accts))
	for _, a := range l.accts {
		out = append(out, a)
	}
	return out
}

// Close stops leasing (later calls are held per call), applies every queued
// call and gives every lease back, waiting until ctx is done at most.
func (l *Leaser) Close(ctx context.Context) error {
	l.closed.Store(true)
	l.once.Do(func() {
		close(l.stop)
		l.unwatch()
	})
	l.janitor.Wait()
	err := l.Return(ctx)
	select {
	case <-l.flushed():
	case <-ctx.Done():
		l.abandonOnce.Do(func() { close(l.abandon) }) // a batch still failing is left to the leases' expiry
		<-l.flushed()
		if err == nil {
			err = ctx.Err()
		}
	}
	// From now on a batch that fails is not retried: its leases expire.
	l.abandonOnce.Do(func() { close(l.abandon) })
	// Deferred settles of calls held one by one: until they land, or ctx.
	for l.late.len() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	l.stopLate.Do(func() { close(l.late.stop) })
	l.late.done.Wait()
	if n := l.late.len(); n > 0 && err == nil {
		err = fmt.Errorf("closing the leaser: %d settled calls never reached Redis: %w", n, metering.ErrUnavailable)
	}
	return err
}

// kick starts the account's flusher unless it runs. Called with a.mu held.
func (l *Leaser) kick(a *leaseAcct) {
	if !a.flushing {
		a.flushing = true
		l.flushers.Lock()
		if l.flushers.n == 0 {
			l.flushers.zero = make(chan struct{})
		}
		l.flushers.n++
		l.flushers.Unlock()
		go l.flush(a)
	}
}

func (l *Leaser) flushDone() {
	l.flushers.Lock()
	if l.flushers.n--; l.flushers.n == 0 {
		close(l.flushers.zero)
		l.flushers.zero = nil
	}
	l.flushers.Unlock()
}

// flushed returns a channel closed once no flush runs.
func (l *Leaser) flushed() <-chan struct{} {
	l.flushers.Lock()
	defer l.flushers.Unlock()
	if l.flushers.zero == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return l.flushers.zero
}

// flush applies the account's queue in batches until it is empty, retrying
// with backoff while Redis is unreachable. A batch that may already have been
// applied (its answer was lost) is resent with the per-call check on, so
// that no call is applied twice.
func (l *Leaser) flush(a *leaseAcct) {
	defer l.flushDone()
	backoff := 20 * time.Millisecond
	if l.opts.Linger > 0 {
		// Let the calls of the next moments join this batch: fewer, larger
		// scripts, and no Redis wakeup per call. (Later rounds need no
		// wait: calls queue while a batch is in flight.)
		time.Sleep(l.opts.Linger)
	}
	a.mu.Lock()
	var (
		batch     []leaseOp // sent, not yet known applied: resent as it is
		haveBatch bool
		charges   int64
		returning bool // a give-back round, until Redis has answered it
	)
	for {
		if l.closed.Load() && a.free > 0 && a.gbPending == 0 {
			// Leasing has stopped: what a call still in flight when Close
			// began leaves free goes back with its charge.
			a.returning = true
		}
		if !haveBatch && len(a.queue) == 0 && !a.returning && !a.renew && a.gbPending == 0 {
			a.flushing = false
			a.cond.Broadcast()
			a.mu.Unlock()
			return
		}
		if !haveBatch {
			n := min(len(a.queue), maxLeaseBatch)
			batch, a.queue, haveBatch = a.queue[:n:n], a.queue[n:], true
			charges = 0
			for i := range batch {
				charges += batch[i].charge
			}
		}
		returning = returning || a.returning
		if a.returning && a.gbPending == 0 {
			// What is free goes back now; until Redis confirms it, it is
			// neither free here nor known to be gone there.
			a.gbPending = max(a.free, 0)
			a.free -= a.gbPending
			a.gbSeq = l.gbSeq.Add(1) // unique for the replica: account states come and go
		}
		a.returning = false
		a.renew = false
		a.inflight++
		giveBack, gbSeq := a.gbPending, a.gbSeq
		revs := a.revocations // read early: an answer is only distrusted more
		a.mu.Unlock()

		a.sem <- struct{}{}
		sent := time.Now()
		a.sentAt.Store(sent.UnixNano())
		res, err := l.apply(a.id, giveBack, gbSeq, batch)

		a.mu.Lock()
		a.sentAt.Store(0)
		<-a.sem
		a.inflight--
		if err != nil && !errors.Is(err, metering.ErrNoAccount) {
			// The batch and the give-back stay as they are and go again,
			// with the same call ids and give-back number: whatever of them
			// Redis did apply is not applied twice. (Also on an error Redis
			// answered, such as a script error: dropping the batch would
			// make its calls free, so it is retried, and reported, until
			// an operator fixes the cause.)
			if a.failing.IsZero() {
				a.failing = sent
			}
			a.fails++
			a.cond.Broadcast()
			a.mu.Unlock()
			if l.opts.OnError != nil {
				l.opts.OnError(a.id, err)
			}
			select {
			case <-time.After(backoff):
			case <-l.abandon:
				a.mu.Lock()
				a.flushing = false
				a.cond.Broadcast()
				a.mu.Unlock()
				return
			}
			backoff = min(2*backoff, time.Second)
			a.mu.Lock()
			continue
		}
		backoff = 20 * time.Millisecond
		a.failing = time.Time{}
		a.pending -= charges
		a.applied += uint64(len(batch))
		for i := range batch {
			delete(a.unapplied, batch[i].rec.RequestID)
		}
		batch, haveBatch = nil, false
		a.gbPending = 0
		if err != nil { // the account is gone: nothing to apply to
			a.free, a.balance, a.outside, a.leased = 0, 0, 0, false
			if l.opts.OnError != nil {
				a.mu.Unlock() // OnError may call back into the Leaser
				l.opts.OnError(a.id, err)
				a.mu.Lock()
			}
		} else {
			a.balance, a.outside = res.Balance, res.Available
			a.renewed = sent
			a.leased = res.Lease > 0
			a.reconcile(res.Lease, 0)
			l.distrust(a, revs)
			if returning && a.free > 0 {
				// Credits settled calls gave back while the give-back was on
				// its way (or that a lost answer hid): they go back too.
				a.returning = true
			}
		}
		returning = false
		a.cond.Broadcast()
	}
}

// apply runs one account's batch in Redis. The ledger and cost records
// already belong to other callers' batches: it is never cancelled half way.
func (l *Leaser) apply(account string, giveBack int64, gbSeq uint64, batch []leaseOp) (metering.LeaseApplied, error) {
	calls := make([]metering.LeaseCall, 0, len(batch))
	for i := range batch {
		op := &batch[i]
		if !op.marker {
			calls = append(calls, metering.LeaseCall{Release: op.release, KeyID: op.keyID, Cost: op.charge, Held: op.held, Record: op.rec})
		}
	}
	return l.st.ApplyLease(context.Background(), metering.LeaseBatch{Account: account, LeaseID: l.id, TTL: l.ttl,
		GiveBack: giveBack, GiveBackSeq: gbSeq, Calls: calls})
}

// tend gives back idle leases, renews leases in use, and forgets accounts
// with nothing leased.
func (l *Leaser) tend() {
	defer l.janitor.Done()
	tick := min(l.opts.IdleReturn/2, l.verify/4)
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		var expired []string
		for _, a := range l.all() {
			a.mu.Lock()
			expired = expired[:0]
			for id, h := range a.holds {
				if h.expires < now.UnixNano() {
					// Its call outlived the hold TTL unsettled: its credits
					// are free again, as a hold in Redis would be; a late
					// settle finds no hold and charges what is available.
					delete(a.holds, id)
					a.held -= h.amt
					a.free += h.amt
					expired = append(expired, id)
				}
			}
			idle := now.Sub(a.used) > l.opts.IdleReturn
			switch {
			case a.held == 0 && len(a.queue) == 0 && idle && (a.free > 0 || a.leased) && !a.flushing:
				a.returning = true
				l.kick(a)
			case (a.held > 0 || a.free > 0) && now.Sub(a.renewed) > l.verify:
				// Renew the lease, and learn whether a refund or a dispute
				// shrank it (should its message have been lost).
				a.renew = true
				l.kick(a)
			case a.held == 0 && !a.leased && len(a.queue) == 0 && idle && !a.flushing && a.inflight == 0:
				a.dead = true
				l.mu.Lock()
				delete(l.accts, a.id)
				l.mu.Unlock()
			}
			a.mu.Unlock()
			for _, id := range expired {
				l.report(a.id, fmt.Errorf("hold %s expired unsettled", id))
			}
		}
		l.perCall.Lock()
		for k, h := range l.perCall.m {
			if h.expires < now.UnixNano() {
				delete(l.perCall.m, k) // its call never ended (a bug): the hold expires in Redis too
			}
		}
		l.perCall.Unlock()
	}
}

func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, metering.ErrUnavailable, err)
}
