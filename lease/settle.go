package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Settle charges a call its whole cost and answers at once; it never fails
// once Reserve succeeded (that is the proxy's Meter contract), except for a
// settlement that is itself wrong (a negative cost, a record under another
// request id), which is a bug of the caller. Settling a call again is a
// replay: it answers the first charge and changes nothing.
//
// A call held from the lease is charged in process and queued to be applied
// in Redis; the answer carries this replica's view of the balance after it.
// A cost past the call's hold is charged in full and said in OverHold. A call
// held one by one in Redis (a limited key, Options.PerCall) is settled there;
// should Redis not answer, the settle is retried in the background (Deferred)
// until it lands, or until Close gives up on Redis.
//
// A call is recorded under its hold id (the proxy's request id): a
// Record.RequestID other than the hold id is refused, since the record is what
// makes a second Settle of the hold a replay.
func (l *Leaser) Settle(ctx context.Context, st metering.Settlement) (metering.Charge, error) {
	if st.Cost < 0 {
		return metering.Charge{}, fmt.Errorf("settling %q: negative cost %d", st.HoldID, st.Cost)
	}
	if st.Record.RequestID != "" && st.Record.RequestID != st.HoldID {
		return metering.Charge{}, fmt.Errorf("settling %q as %q: %w", st.HoldID, st.Record.RequestID, metering.ErrRequestID)
	}
	st.Record.RequestID = st.HoldID // the cost record, and what a resent batch is checked by
	if st.Record.CreatedAt.IsZero() {
		st.Record.CreatedAt = time.Now()
	}
	a := l.lookup(st.Account)
	if a == nil {
		return l.settlePerCall(ctx, st)
	}
	a.mu.Lock()
	if ch, ok := a.unapplied[st.HoldID]; ok {
		a.mu.Unlock()
		ch.Replay = true
		return ch, nil
	}
	lh, ok := a.holds[st.HoldID]
	if !ok {
		a.mu.Unlock()
		return l.settlePerCall(ctx, st)
	}
	delete(a.holds, st.HoldID)
	a.held -= lh.amt
	// free may go negative when the call cost more than its hold: new calls
	// then need a grant, and Redis says what is left.
	a.free += lh.amt - st.Cost
	a.pending += st.Cost
	ch := metering.Charge{Charged: st.Cost, BalanceAfter: a.balance - a.pending, OverHold: max(st.Cost-lh.amt, 0)}
	a.unapplied[st.HoldID] = ch
	a.queue = append(a.queue, leaseOp{keyID: st.KeyID, charge: st.Cost, held: lh.amt, rec: st.Record})
	a.queued++
	l.kick(a)
	a.mu.Unlock()
	return ch, nil
}

// Release gives a failed call's hold back to the lease and queues its
// record (charged 0). A hold placed per call is released in Redis; should
// Redis not answer, the hold expires by itself (nothing is charged).
func (l *Leaser) Release(ctx context.Context, account, keyID, holdID string, rec *metering.Record) error {
	a := l.lookup(account)
	if a == nil {
		return l.releasePerCall(ctx, account, keyID, holdID, rec)
	}
	a.mu.Lock()
	if _, settled := a.unapplied[holdID]; settled {
		a.mu.Unlock()
		return nil // settled here: its charge stands
	}
	lh, ok := a.holds[holdID]
	if !ok {
		a.mu.Unlock()
		return l.releasePerCall(ctx, account, keyID, holdID, rec)
	}
	delete(a.holds, holdID)
	a.held -= lh.amt
	a.free += lh.amt
	if rec != nil {
		if rec.CreatedAt.IsZero() {
			rec.CreatedAt = time.Now()
		}
		r := *rec
		if r.RequestID == "" {
			r.RequestID = holdID
		}
		a.queue = append(a.queue, leaseOp{release: true, keyID: keyID, rec: r})
		a.queued++
		l.kick(a)
	}
	a.mu.Unlock()
	return nil
}

// reservePerCall holds one call in Redis, and remembers the hold for a
// settle that may have to be deferred.
func (l *Leaser) reservePerCall(ctx context.Context, r metering.HoldRequest) (metering.Hold, error) {
	h, err := l.st.Reserve(ctx, r)
	if err != nil {
		return h, err
	}
	l.perCall.Lock()
	l.perCall.m[r.Account+"\x00"+r.HoldID] = perCallHold{Hold: h, expires: time.Now().Add(l.ttl).UnixNano()}
	l.perCall.Unlock()
	return h, nil
}

func (l *Leaser) forgetPerCall(account, holdID string) (metering.Hold, bool) {
	k := account + "\x00" + holdID
	l.perCall.Lock()
	h, ok := l.perCall.m[k]
	delete(l.perCall.m, k)
	l.perCall.Unlock()
	return h.Hold, ok
}

// settlePerCall settles a call held in Redis, deferring it when Redis does
// not answer.
func (l *Leaser) settlePerCall(ctx context.Context, st metering.Settlement) (metering.Charge, error) {
	h, _ := l.forgetPerCall(st.Account, st.HoldID)
	ch, err := l.st.Settle(ctx, st)
	if err == nil || !errors.Is(err, metering.ErrUnavailable) {
		return ch, err
	}
	l.deferSettle(st)
	// What the settle will most likely do: the whole cost, from the hold.
	return metering.Charge{Charged: st.Cost, BalanceAfter: h.Available + h.Amount - st.Cost,
		OverHold: max(st.Cost-h.Amount, 0), Deferred: true}, nil
}

func (l *Leaser) releasePerCall(ctx context.Context, account, keyID, holdID string, rec *metering.Record) error {
	l.forgetPerCall(account, holdID)
	return l.st.Release(ctx, account, keyID, holdID, rec)
}

// lateSettles are settles waiting for Redis. They are retried until they
// land (a settle is idempotent by hold id: a retry after a lost reply is a
// replay; one whose hold expired meanwhile is charged what is then available,
// as settle.lua does), or until Close gives up on Redis.
type lateSettles struct {
	mu      sync.Mutex
	list    []lateSettle
	pending int // in list, or being retried
	stopped bool
	kick    chan struct{}
	stop    chan struct{}
	done    sync.WaitGroup
}

type lateSettle struct {
	st       metering.Settlement
	refusals int // errors Redis answered (not unavailability)
}

// maxLate bounds the settles kept for retry: past it (an outage under heavy
// traffic) the oldest are dropped and reported, their calls left to their
// holds' expiry (and so free).
const maxLate = 100_000

// maxRefusals is how often a settle that Redis refuses (a script or data
// error, not an outage) is tried before it is dropped and reported: it must
// not hold back every settle behind it.
const maxRefusals = 5

func (q *lateSettles) init() {
	q.kick = make(chan struct{}, 1)
	q.stop = make(chan struct{})
}

// add queues st; it reports false when the queue has stopped (after Close).
func (l *Leaser) deferSettle(st metering.Settlement) {
	q := &l.late
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		l.report(st.Account, fmt.Errorf("settle of %s (%d mc) after Close never reached Redis: %w", st.HoldID, st.Cost, metering.ErrUnavailable))
		return
	}
	var dropped *lateSettle
	if len(q.list) >= maxLate {
		dropped = &q.list[0]
		q.list = q.list[1:]
		q.pending--
	}
	q.list = append(q.list, lateSettle{st: st})
	q.pending++
	q.mu.Unlock()
	if dropped != nil {
		l.report(dropped.st.Account, fmt.Errorf("deferred settle of %s (%d mc) dropped: too many waiting for Redis", dropped.st.HoldID, dropped.st.Cost))
	}
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *lateSettles) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending
}

// retryLate applies deferred settles, with backoff while Redis stays away.
func (l *Leaser) retryLate() {
	q := &l.late
	defer q.done.Done()
	backoff := 50 * time.Millisecond
	var wait <-chan time.Time // nil while nothing waits
	for {
		select {
		case <-q.kick:
		case <-wait:
		case <-q.stop:
			q.mu.Lock()
			q.stopped = true
			left := q.list
			q.mu.Unlock()
			for _, ls := range left {
				l.report(ls.st.Account, fmt.Errorf("settle of %s (%d mc) never reached Redis: %w", ls.st.HoldID, ls.st.Cost, metering.ErrUnavailable))
			}
			return
		}
		q.mu.Lock()
		todo := q.list
		q.list = nil
		q.mu.Unlock()
		var keep []lateSettle
		done := 0
		for i := range todo {
			ls := &todo[i]
			_, err := l.st.Settle(context.Background(), ls.st)
			if err != nil && errors.Is(err, metering.ErrUnavailable) {
				keep = append(keep, todo[i:]...) // Redis is away: the rest waits too
				break
			}
			if err != nil && !errors.Is(err, metering.ErrNoAccount) {
				if ls.refusals++; ls.refusals < maxRefusals {
					keep = append(keep, *ls) // after the others
					l.report(ls.st.Account, fmt.Errorf("late settle of %s refused (retried): %w", ls.st.HoldID, err))
					continue
				}
			}
			if err != nil {
				l.report(ls.st.Account, fmt.Errorf("late settle of %s (%d mc) dropped: %w", ls.st.HoldID, ls.st.Cost, err))
			}
			done++
		}
		q.mu.Lock()
		q.list = append(keep, q.list...)
		q.pending -= done
		more := len(q.list) > 0
		q.mu.Unlock()
		wait = nil
		if more {
			if len(keep) > 0 {
				backoff = min(2*backoff, time.Second)
			}
			wait = time.After(backoff)
		} else {
			backoff = 50 * time.Millisecond
		}
	}
}

// report tells Options.OnError.
func (l *Leaser) report(account string, err error) {
	if l.opts.OnError != nil {
		l.opts.OnError(account, err)
	}
}
