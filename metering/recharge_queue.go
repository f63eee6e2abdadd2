package metering

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// RechargeQueueOptions configure a RechargeQueue. Zero values mean the
// documented defaults.
type RechargeQueueOptions struct {
	// MaxPending bounds the accounts being enqueued at once (one goroutine
	// each). A settle that finds it full is dropped: the next settle of the
	// account asks again. Default 64.
	MaxPending int
	// CacheTTL is how long what an enqueue learnt of an account (auto-recharge
	// off, its threshold, a request already queued) lets settles skip Redis.
	// Default 1s; negative disables the cache.
	CacheTTL time.Duration
	// Timeout bounds one enqueue's Redis calls. Default 2s.
	Timeout time.Duration
	// StaleAfter: a queued request that no worker began after this is
	// replaced by a new one (it was lost between the account and the stream).
	// Default 10m.
	StaleAfter time.Duration
	// InflightStaleAfter: a request in flight this long (a payment left
	// processing whose outcome never arrived) no longer blocks a new one.
	// Default 24h.
	InflightStaleAfter time.Duration
	// OnError is told of enqueue failures (optional; the next settle retries).
	OnError func(account string, err error)
}

func (o *RechargeQueueOptions) init() {
	if o.MaxPending <= 0 {
		o.MaxPending = 64
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 10 * time.Minute
	}
	if o.InflightStaleAfter <= 0 {
		o.InflightStaleAfter = 24 * time.Hour
	}
}

// RechargeQueue asks for auto-recharges from the proxy's settle hook. OnSettle
// never blocks: it looks at an in-process cache and, when the account may need
// a recharge, starts one bounded goroutine per account (concurrent settles of
// one account share it) that runs the enqueue script. Across replicas the
// script itself lets only one request be queued per account.
type RechargeQueue struct {
	store *Store
	opts  RechargeQueueOptions

	mu sync.Mutex
	// pending: accounts with an enqueue goroutine running; true when a settle
	// arrived meanwhile, so the goroutine runs once more (the settle that
	// crossed the threshold may land while an earlier enqueue, which read
	// the balance before it, is still running).
	pending map[string]bool
	wg      sync.WaitGroup

	cacheMu sync.RWMutex
	cache   map[string]rechargeHint

	queued, dropped, failed atomic.Int64
}

// rechargeHint is what the last enqueue of an account found.
type rechargeHint struct {
	on        bool  // auto-recharge is on
	threshold int64 // mc
	busy      bool  // a request is queued or in flight, or none may be made now
	expires   int64 // unix nanos
}

const maxRechargeHints = 100_000

// NewRechargeQueue returns a queue that enqueues through s.
func NewRechargeQueue(s *Store, opts RechargeQueueOptions) *RechargeQueue {
	opts.init()
	return &RechargeQueue{store: s, opts: opts, pending: make(map[string]bool), cache: make(map[string]rechargeHint)}
}

// OnSettle is a proxy settle hook: when the balance the settle left may be
// under the account's threshold, it enqueues a recharge asynchronously.
func (q *RechargeQueue) OnSettle(account string, ch Charge) {
	if ch.Replay {
		return
	}
	if q.opts.CacheTTL > 0 {
		q.cacheMu.RLock()
		h, ok := q.cache[account]
		q.cacheMu.RUnlock()
		if ok && time.Now().UnixNano() < h.expires && (!h.on || h.busy || ch.BalanceAfter >= h.threshold) {
			return
		}
	}
	q.mu.Lock()
	if _, dup := q.pending[account]; dup {
		q.pending[account] = true
		q.mu.Unlock()
		return
	}
	if len(q.pending) >= q.opts.MaxPending {
		q.mu.Unlock()
		q.dropped.Add(1)
		return
	}
	q.pending[account] = false
	q.wg.Add(1)
	q.mu.Unlock()
	go func() {
		defer q.wg.Done()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), q.opts.Timeout)
			_, err := q.Enqueue(ctx, account)
			cancel()
			if err != nil {
				q.failed.Add(1)
				if q.opts.OnError != nil {
					q.opts.OnError(account, err)
				}
			}
			q.mu.Lock()
			again := q.pending[account]
			if !again || err != nil {
				delete(q.pending, account)
				q.mu.Unlock()
				return
			}
			q.pending[account] = false
			q.mu.Unlock()
		}
	}()
}

// Enqueue runs the enqueue script for account now and remembers what it
// found for CacheTTL.
func (q *RechargeQueue) Enqueue(ctx context.Context, account string) (EnqueueOutcome, error) {
	out, threshold, err := q.store.EnqueueRecharge(ctx, account, q.opts)
	if err != nil {
		return out, err
	}
	if out == EnqueueQueued {
		q.queued.Add(1)
	}
	if q.opts.CacheTTL > 0 {
		h := rechargeHint{on: out != EnqueueOff, threshold: threshold,
			busy:    out == EnqueueQueued || out == EnqueueBusy || out == EnqueueBackoff || out == EnqueueLimit,
			expires: time.Now().Add(q.opts.CacheTTL).UnixNano()}
		q.cacheMu.Lock()
		if len(q.cache) >= maxRechargeHints {
			q.cache = make(map[string]rechargeHint)
		}
		q.cache[account] = h
		q.cacheMu.Unlock()
	}
	return out, nil
}

// Wait waits for the enqueues in progress (tests, shutdown).
func (q *RechargeQueue) Wait() { q.wg.Wait() }

// RechargeQueueStats counts what a queue did.
type RechargeQueueStats struct {
	Queued  int64 // requests added to the stream
	Dropped int64 // settles dropped because MaxPending accounts were being enqueued
	Failed  int64 // enqueues that failed (Redis)
}

// Stats returns the queue's counters.
func (q *RechargeQueue) Stats() RechargeQueueStats {
	return RechargeQueueStats{Queued: q.queued.Load(), Dropped: q.dropped.Load(), Failed: q.failed.Load()}
}
