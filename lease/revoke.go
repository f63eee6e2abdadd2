package lease

import "context"

// A refund, a dispute or an operator's debit that leaves an account short
// shrinks its leases in Redis in the same script (holds.lua
// tg_shrink_leases), which publishes the account on metering.RevokedChannel.
// Each replica then stops serving new calls from what it had leased at once:
// its free credits are forgotten until Redis says again what the lease holds.
// Should the message be lost (a reconnect), every lease in use is checked
// within Options.Verify anyway, and every batch's answer carries the lease.

// watch follows revocations until ctx is done.
func (l *Leaser) watch(ctx context.Context) {
	defer l.janitor.Done()
	l.st.WatchRevocations(ctx, l.revoked, l.resubscribed)
}

// revoked forgets what this replica had free of account's lease, and asks
// Redis what is left of it.
func (l *Leaser) revoked(account string) {
	a := l.lookup(account)
	if a == nil {
		return
	}
	a.mu.Lock()
	a.revocations++
	a.free = min(a.free, 0)
	a.renew = true
	l.kick(a)
	a.mu.Unlock()
}

// resubscribed checks every lease: messages may have been lost meanwhile.
func (l *Leaser) resubscribed() {
	for _, a := range l.all() {
		a.mu.Lock()
		if a.leased || a.free > 0 {
			a.renew = true
			l.kick(a)
		}
		a.mu.Unlock()
	}
}

// distrust undoes what an answer to a Redis call sent before a revocation
// message (revs is the count when it was sent) made free: Redis may have run
// it before the shrink. The renewal that the message asked for says what is
// true. Called with a.mu held, after reconcile.
func (l *Leaser) distrust(a *leaseAcct, revs uint64) {
	if a.revocations != revs {
		a.free = min(a.free, 0)
		a.renew = true
		l.kick(a)
	}
}
