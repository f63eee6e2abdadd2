package metering

import (
	"context"
	_ "embed"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Credit leases: the Redis side of package lease. A lease is a hold with id
// "lease:<replica>" that one proxy replica serves many calls' holds from in
// process; these calls grow it, apply a batch of its calls to it, and tell
// replicas when a debit took credits their leases promised.

var (
	//go:embed scripts/lease_grant.lua
	leaseGrantSrc string
	//go:embed scripts/lease_flush.lua
	leaseFlushSrc string

	leaseGrantScript = redis.NewScript(holdsSrc + leaseGrantSrc)
	leaseFlushScript = redis.NewScript(holdsSrc + keygovSrc + debitSrc + promoSrc + eventsSrc + periodSrc + periodHoldsSrc + leaseFlushSrc)
)

// RevokedChannel is the Redis channel on which a script that shrank an
// account's leases (see holds.lua tg_shrink_leases) publishes the account id.
const RevokedChannel = "tg:leases:revoked"

// LeaseGrant asks to grow a lease by Most mc, accepting no less than Least.
type LeaseGrant struct {
	Account string
	LeaseID string // "lease:<replica>"
	Least   int64
	Most    int64
	TTL     time.Duration // the lease's expiry from now
}

// LeaseGranted is Redis's answer to a LeaseGrant.
type LeaseGranted struct {
	OK        bool  // false: not even Least was available (nothing changed)
	Granted   int64 // mc added to the lease
	Lease     int64 // the lease after the grant
	Balance   int64 // the account's balance
	Available int64 // available to new holds after the grant (before it, when !OK)
}

// GrantLease grows a replica's lease of account's credits. It fails with
// ErrNoAccount or ErrUnavailable.
func (s *Store) GrantLease(ctx context.Context, g LeaseGrant) (LeaseGranted, error) {
	a := g.Account
	res, err := s.pipe.run(ctx, leaseGrantScript, []string{acctKey(a), holdExpKey(a), holdValKey(a)},
		g.LeaseID, g.Least, max(g.Most, g.Least), g.TTL.Milliseconds()).Int64Slice()
	if err != nil {
		return LeaseGranted{}, unavailable("leasing credits", err)
	}
	switch res[0] {
	case -1:
		return LeaseGranted{}, s.missingAccount(ctx, "leasing credits", a)
	case 0:
		return LeaseGranted{Available: res[1], Balance: res[2]}, nil
	}
	return LeaseGranted{OK: true, Granted: res[1], Lease: res[2], Balance: res[3], Available: res[4]}, nil
}

// LeaseCall is one call of a batch applied to a lease.
type LeaseCall struct {
	Release bool // a failed call: its record only, charged nothing
	KeyID   string
	Cost    int64 // the call's priced usage, charged in full
	Held    int64 // its hold on the lease (Cost past it is recorded as over_hold)
	Record  Record
}

// LeaseBatch is what a replica applies to its lease in one script.
type LeaseBatch struct {
	Account string
	LeaseID string
	TTL     time.Duration // the lease's renewed expiry, from now
	// GiveBack is mc of the lease to return, at most once per GiveBackSeq
	// (a batch resent after a lost answer gives back nothing twice).
	GiveBack    int64
	GiveBackSeq uint64
	Calls       []LeaseCall // each applied at most once, by its record's RequestID
}

// LeaseApplied is Redis's answer to a LeaseBatch.
type LeaseApplied struct {
	Balance   int64
	Lease     int64 // the lease after the batch (0: gone)
	Available int64 // the account's available after the batch
	Charged   int64 // charged by this batch (calls applied before are not counted again)
}

// ApplyLease runs one batch against a replica's lease: each call's charge,
// ledger entry, cost record and period counting as Settle (or, for a failed
// call, Release) does them, its key's budget and its member's budget spend
// (a key a replica still served from its lease after its first rule), the
// give-back, and the lease's renewal — atomically, and idempotently per call
// and give-back. It fails with ErrNoAccount or ErrUnavailable.
func (s *Store) ApplyLease(ctx context.Context, b LeaseBatch) (LeaseApplied, error) {
	a := b.Account
	now := time.Now()
	// The batch's keys, each once: their rules' hashes are declared (the
	// script adds the calls' cost to their budgets).
	var kidBuf [8]string
	kids := kidBuf[:0]
	for i := range b.Calls {
		if kid := b.Calls[i].KeyID; kid != "" && !slices.Contains(kids, kid) {
			kids = append(kids, kid)
		}
	}
	keys := make([]string, 0, 14+len(kids)+len(b.Calls))
	keys = append(keys, acctKey(a), holdExpKey(a), holdValKey(a), ledgerKey(a), planKey(a), usageKey(a),
		"{a:"+a+"}:gb:"+b.LeaseID, periodHoldExpKey(a), periodHoldValKey(a), dayKey(a, now),
		promoKey(a), promoValKey(a), eventsKey(a), memberBudgetKey(a))
	args := make([]any, 0, 7+len(kids)+len(b.Calls)*50)
	args = append(args, b.LeaseID, b.TTL.Milliseconds(), int64(s.opts.RecordTTL/time.Second), MonthStart(now).Unix(),
		b.GiveBack, b.GiveBackSeq, len(kids))
	for _, kid := range kids {
		keys = append(keys, keyRulesKey(a, kid))
		args = append(args, kid)
	}
	for i := range b.Calls {
		c := &b.Calls[i]
		kind := "s"
		if c.Release {
			kind = "r"
		}
		keys = append(keys, genKey(a, c.Record.RequestID))
		args = append(args, kind, c.Record.RequestID, c.KeyID, c.Cost, c.Held,
			c.Record.InputTokens(), max(c.Record.Output, 0), 0)
		at := len(args) - 1
		args = c.Record.args(args)
		args[at] = len(args) - at - 1
	}
	res, err := s.pipe.run(ctx, leaseFlushScript, keys, args...).Int64Slice()
	if err != nil {
		return LeaseApplied{}, unavailable("applying settled calls", err)
	}
	if len(res) == 1 && res[0] == -1 {
		return LeaseApplied{}, s.missingAccount(ctx, "applying settled calls", a)
	}
	if res[3] != 0 {
		s.markDirty(a)
	}
	if len(res) > 4 && res[4] == 1 {
		s.markEvents(a)
	}
	return LeaseApplied{Balance: res[0], Lease: res[1], Available: res[2], Charged: res[3]}, nil
}

// WatchRevocations calls revoked with each account whose leases a debit
// shrank, and resubscribed each time the subscription is (re)established —
// messages published meanwhile are lost, so a caller should then check every
// lease it holds. It returns when ctx is done. (Redis Pub/Sub: on a Cluster
// every node relays the message.)
func (s *Store) WatchRevocations(ctx context.Context, revoked func(account string), resubscribed func()) {
	ps := s.rdb.Subscribe(ctx, RevokedChannel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Message:
				revoked(m.Payload)
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					resubscribed()
				}
			}
		}
	}
}
