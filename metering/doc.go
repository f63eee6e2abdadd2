// Package metering owns every Redis key and Lua script of Tollgate: accounts,
// API keys, holds, settlement, credits, the per-account ledger and per-call
// cost records.
//
// It imports nothing of ours. Other packages never build Redis commands; they
// call a *Store (or declare the small interface they need and let a *Store
// satisfy it).
//
// # Keys
//
// Every key of one account carries the hash tag {a:<account>} so that each
// script touches a single slot and runs unchanged on Redis Cluster:
//
//	{a:ID}:acct          hash   balance, reserved, purchased, consumed, created_at,
//	                            k:<key>:limit|used|res (per-key credit limits)
//	{a:ID}:hexp          zset   hold id → expiry (ms)
//	{a:ID}:hval          hash   hold id → "amount:keyid"
//	{a:ID}:refs          set    credit references applied (never expires)
//	{a:ID}:ledger        stream one entry per credit or debit (the audit record)
//	{a:ID}:gen:<req>     hash   cost record of one call, TTL: a settled call's answer and
//	                            its ledger entry id (a failed call: the whole record); its
//	                            settled field makes a retried settle (hold id = request id) a no-op;
//	                            admitted = period when Admit counted the call as a request
//	{a:ID}:keys          hash   key id → key metadata (JSON)
//	{a:ID}:keys:hash     hash   key id → SHA-256 of the secret (for revocation)
//	{a:ID}:stripe        string the account's Stripe customer id
//	{a:ID}:co:<session>  hash   a checkout as sold (pack, credits, amount, currency), TTL
//	{a:ID}:pay:<intent>  hash   a paid purchase and how much refunds/disputes took back
//	{a:ID}:billing       stream purchase history (same ids as the ledger entries)
//	{a:ID}:plan          hash   subscription: plan, seats, status, period, cancel_at …
//	{a:ID}:usage         hash   this billing period's requests, tokens and credits, and the sums
//	                            of the live period holds (see plans.go)
//	{a:ID}:phexp         zset   period hold (request id) → expiry (ms)
//	{a:ID}:phval         hash   period hold (request id) → "mc:in:out": a call's worst case
//	                            against its plan's period limits, from Admit to its end
//	{a:ID}:rpm           hash   fixed-window requests-per-minute counter, TTL 120 s
//	{a:ID}:ar            hash   auto-recharge settings and state (queued/inflight, period spend, failures)
//	tg:key:<sha256>      hash   API key lookup: account, key id (no secret stored)
//	tg:cus:<customer>    string Stripe customer → account
//	tg:pay:<intent>      string Stripe payment intent → account
//	tg:recharge          stream auto-recharge requests (consumer group "billing")
//
// # Units
//
// Amounts are int64 milli-credits throughout, and integers in every script.
// Invariant: purchased − consumed = balance, and the ledger's amounts sum to
// the balance, for every account at every moment outside a script.
//
// # Lifetimes
//
// A *Store is safe for concurrent use and holds no request state. Holds carry
// an expiry; a proxy that dies mid-call frees its holds within the hold TTL,
// the next time any reserve runs on that account, and its period holds the
// next time Admit runs on it.
//
// # Counting requests
//
// A call admitted under a plan (Admit) is counted as a request when it is
// admitted; one of an account without a plan when it is settled. A failed
// call is not a request: its release gives back what Admit counted (with
// credit leases, when the release is applied: within milliseconds). A call
// refused by a limit is no request, but counts in requests_per_minute. A call
// admitted whose proxy died stays counted.
package metering
