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
//	{a:ID}:acct          hash   balance, reserved, purchased, granted, adjusted, consumed,
//	                            over_hold_calls, over_hold_mc, created_at, promoted, promo
//	                            (the promotional part of balance), low_balance (mc threshold),
//	                            k:<key>:limit|used|res (per-key credit limits),
//	                            k:<key>:n (the key's holds in flight: max_parallel)
//	{a:ID}:kg:<key>      hash   a governed key's rules and their state (keygov.go, keygov.lua)
//	{a:ID}:hexp          zset   hold id → expiry (ms)
//	{a:ID}:hval          hash   hold id → "amount:keyid"; a credit lease is a hold with id
//	                            "lease:<replica>" and no key id (see package lease)
//	{a:ID}:gb:<lease>    string the last give-back applied to a lease (its sequence number), TTL
//	{a:ID}:refs          set    credit references applied (never expires): "checkout:<session>"
//	                            (sales, auto-recharges too), "refund:…", "dispute:…",
//	                            "dispute_won:…", "admin:<ref>" for operators' credits,
//	                            "promo:<code>" for redemptions
//	{a:ID}:ledger        stream one entry per credit or debit (the audit record); a
//	                            usage entry names the API key charged (key_id) when there was one
//	{a:ID}:gen:<req>     hash   cost record of one call, TTL: a settled call's answer and
//	                            its ledger entry id (a failed call: the whole record); its
//	                            settled field makes a retried settle (hold id = request id) a no-op;
//	                            admitted = period when Admit counted the call as a request;
//	                            a restore writes back those of charged calls (RestoreCostRecords)
//	{a:ID}:resp:<id>     string provider that served the account's stored Responses API
//	                            response <id> (the provider's id), TTL RecordTTL: GET/DELETE
//	                            /v1/responses/<id> and previous_response_id are only for it
//	{a:ID}:keys          hash   key id → key metadata (JSON); a key is added by create_key.lua,
//	                            which counts the active ones against a cap in the same step
//	{a:ID}:keys:hash     hash   key id → SHA-256 of the secret (for revocation)
//	{a:ID}:keys:active   set    ids of the keys not revoked (what a cap counts; built once,
//	                            acct field keys_indexed, for keys that predate it)
//	{a:ID}:stripe        string the account's Stripe customer id
//	{a:ID}:members       hash   user → role (members.go); absent until the first change
//	{a:ID}:audit         stream member and key changes (actor, action, target), capped
//	{a:ID}:co:<session>  hash   a checkout as sold (pack, credits, amount, currency), TTL
//	{a:ID}:pay:<intent>  hash   a paid purchase and how much refunds/disputes took back
//	{a:ID}:billing       stream purchase history (same ids as the ledger entries)
//	{a:ID}:plan          hash   subscription: plan, seats, status, period, cancel_at …
//	{a:ID}:usage         hash   this billing period's requests, tokens and credits, and the sums
//	                            of the live period holds (see plans.go)
//	{a:ID}:day:<date>    hash   one UTC day's charged calls per model (r:/i:/o:/c:<model>:
//	                            requests, input and output tokens, mc), TTL 40 days after
//	                            its last write; settle.lua and lease_flush.lua (debit.lua)
//	{a:ID}:phexp         zset   period hold (request id) → expiry (ms)
//	{a:ID}:phval         hash   period hold (request id) → "mc:in:out": a call's worst case
//	                            against its plan's period limits, from Admit to its end
//	{a:ID}:rpm           hash   fixed-window requests-per-minute counter, TTL 120 s
//	{a:ID}:ar            hash   auto-recharge settings and state (queued/inflight, period spend, failures)
//	{a:ID}:promo         zset   promotional grant ("promo:<code>") → expiry ms (promo.go, promo.lua)
//	{a:ID}:promov        hash   promotional grant → mc left of it (Σ = acct.promo)
//	{a:ID}:events        stream outbox of outgoing events, appended by the scripts that
//	                            cause them (events.go, events.lua)
//	{p:CODE}:code        hash   a promotional code: credits_mc, max, expires_at, grant_ttl, redeemed (promo_create.lua)
//	{p:CODE}:by          set    accounts that claimed the code (promo_claim.lua)
//	{wh}:events          stream the webhook queue (consumer group "webhooks")
//	{wh}:d:<delivery>    hash   one event's delivery to one endpoint (body, state, attempts), TTL 7 days
//	{wh}:due             zset   delivery → next attempt ms
//	{wh}:index           zset   delivery → creation ms (the newest 10,000: the operator's list)
//	tg:promo:due         zset   account → its earliest grant expiry (the expiry sweeper's index)
//	tg:events:dirty      set    accounts whose outbox got events (written after the script)
//	tg:key:<sha256>      hash   API key lookup: account, key id (no secret stored)
//	tg:cus:<customer>    string Stripe customer → account
//	tg:pay:<intent>      string Stripe payment intent → account
//	tg:recharge          stream auto-recharge requests (consumer group "billing")
//	tg:leases:revoked    Pub/Sub channel: accounts whose leases a debit shrank
//	tg:keys:changed      Pub/Sub channel: API keys (sha256) whose lookup changed (revoked,
//	                            limited or not); every Store's key cache forgets them (keywatch.go)
//	tg:ledger:dirty      set    accounts whose ledger grew since a shipper last took them
//	                            (journal.go; written after the script, never inside one)
//	tg:epoch             string the epoch marker: its absence, once seen, means Redis lost its
//	                            data (epoch.go); written at setup and by restore
//
// # Scripts and preludes
//
// Each script is a .lua file embedded with go:embed and run through
// redis.Script (EVALSHA, EVAL when missing). Rules several scripts share are
// preludes prepended to them, so that each has one home: holds.lua (dropping a
// hold, sweeping expired ones, shrinking leases when a debit left the account
// short), debit.lua (applying a call's charge and writing its ledger entry and
// cost record: settle and lease_flush write a charge the same way), period.lua
// (the billing period and its counters), sell.lua (crediting a sale),
// promo.lua (the paid/promotional split: promotional credits pay first),
// events.lua (appending an outgoing event, balance.low's crossing rule),
// keygov.lua (a governed key's rules and budget period, a member's budget:
// reserve, settle, release and lease_flush).
//
// # Charges
//
// A call is charged its whole priced usage, even past its hold: the excess is
// its over_hold (on its ledger entry and cost record, and counted in
// over_hold_calls / over_hold_mc), and the balance may go below zero by it.
// Only a call whose hold had expired before it was settled is charged at most
// what is then available (capped), its credits having possibly gone to other
// calls. A debit that leaves available (balance − reserved) below zero — a
// refund, a dispute, a negative adjustment, a charge past a hold — shrinks the
// account's leases by the shortfall in the same script and publishes the
// account on tg:leases:revoked; holds of single calls in flight are left alone.
//
// # Units
//
// Amounts are int64 milli-credits throughout, and integers in every script.
//
// # Books
//
// Every change of a balance is one ledger entry, and each entry type is
// counted in exactly one total of the account hash:
//
//	purchased  purchase, auto_recharge (+); refund, dispute (−); dispute_won (+).
//	           What was bought less what refunds and disputes took back: the sum of
//	           the billing history ({a:ID}:billing holds exactly these entries).
//	           Written by sell.lua (fulfil, recharge_credit) and reverse.lua only.
//	granted    grant: an operator's credit (never negative). credit.lua.
//	adjusted   adjustment: an operator's correction, either sign. credit.lua.
//	consumed   usage (the debit, counted positive). settle.lua, lease_flush.lua.
//	promoted   promo_grant (+), promo_expired (−): promotional credits (promo.go).
//	           promo_grant.lua, promo_expire.lua. The field promo is what is left
//	           of them (spent first); a debit's entry records its part in "promo".
//
// Invariant, for every account at every moment outside a script:
// purchased + granted + adjusted + promoted − consumed = balance = Σ ledger amounts, and
// each total is the sum of its entry types' amounts (consumed: negated).
//
// Operators' credits (Store.Credit, from the admin API and the CLI alike) are
// applied under OperatorReference(ref) = "admin:<ref>", a namespace no sale or
// reversal reference uses, so an operator's reference can never mark a
// purchase as credited.
//
// Accounts credited before granted and adjusted existed: their purchased
// also holds the grants and adjustments made until then (it counted every
// credit), and granted and adjusted count from the change on. For them
// purchased + granted + adjusted − consumed = balance still holds, but
// purchased exceeds the sum of its entry types (and of the billing history)
// by those old operator credits; their ledger entries keep their types, so
// the split can be recomputed from the ledger if ever needed.
//
// # Lifetimes
//
// A *Store is safe for concurrent use and holds no request state. Unless its
// key cache is disabled, it keeps one Pub/Sub connection and goroutine
// (watchKeys) from New until its Redis client is closed. Holds carry
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
