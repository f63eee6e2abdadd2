package lease

// Leased is what this replica holds leased across every account, in mc: for
// each lease, the credits no call holds, those calls in flight hold, and the
// charges settled here and not yet applied in Redis (a lease shrunk below
// what this replica still counts contributes nothing). Read by metrics
// (tollgate_lease_credits); it takes each account's lock in turn.
func (l *Leaser) Leased() int64 {
	l.mu.RLock()
	accts := make([]*leaseAcct, 0, len(l.accts))
	for _, a := range l.accts {
		accts = append(accts, a)
	}
	l.mu.RUnlock()
	var sum int64
	for _, a := range accts {
		a.mu.Lock()
		if !a.dead {
			sum += max(a.free+a.held+a.pending, 0)
		}
		a.mu.Unlock()
	}
	return sum
}
