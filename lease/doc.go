// Package lease meters calls against per-replica credit leases: a proxy
// replica leases a slice of an account's available credits from Redis in one
// script (a hold named "lease:<replica>", with the same expiry as any hold),
// holds each call from it in process, and applies settled and failed calls to
// it in batches — one atomic script per account and batch, which writes each
// call's ledger entry and cost record, and ends its plan period hold, exactly
// as a per-call settle (or release) does.
//
// It imports metering for its value types and declares the small interfaces
// it needs of the store (Ledger, Leases); metering owns every Redis key and
// script (lease_grant.lua, lease_flush.lua and the holds/debit preludes they
// share with reserve and settle). It must not import proxy.
//
// # State machine (one leaseAcct per account on this replica)
//
// Once no Redis call of the account is in flight, Redis's lease = free +
// held + pending: free is leased and not held by a call, held is Σ holds of
// calls in flight, pending is Σ charges settled here and not yet applied.
// Reserve takes from free (or asks Redis for a grant, one Redis call of the
// account at a time, answers applied in the order Redis ran them); Settle
// moves a hold to pending (the whole cost, past the hold if need be: free may
// go negative, and the next call then needs a grant); the flush applies
// pending and renews the lease; an idle lease is given back after
// Options.IdleReturn. A refund or dispute that leaves the account short
// shrinks the leases in Redis and tells every replica (revoke.go), which then
// serves no new call from what it had leased.
//
// # Lifetimes and what a crash loses
//
// A Leaser lives as long as its proxy; Close applies what is queued and gives
// every lease back. A SIGKILL loses the charges settled here and not yet
// applied — the calls answered in the last Options.Linger (2 ms) and one round
// trip — never applies one twice (each call is applied at most once by its
// cost record), and its leases expire at the hold TTL after their last
// renewal. Deferred per-call settles (Redis away) are lost too; their holds
// expire in Redis.
//
// Settle never fails once Reserve succeeded: that is the proxy's Meter
// contract. While Redis is unreachable, calls held from a live lease are still
// served for Options.Offline, their charges queued; per-call settles are
// retried in the background.
package lease
