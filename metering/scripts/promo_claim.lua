-- promo_claim: claim one redemption of a promotional code for an account, in
-- the code's own slot ({p:<code>}); promo_grant then credits the account in
-- its slot. Two scripts, each atomic, because a code's count and an account's
-- balance live in different slots (Redis Cluster runs a script in one slot).
-- A claim is once per account: a second claim by the same account answers
-- "claimed before", and promo_grant (idempotent by the reference
-- promo:<code>) tells a grant done from one a crash cut short, so that a
-- retry completes it and nothing is granted twice.
-- KEYS[1] code   {p:<code>}:code (hash: credits_mc, max, expires_at ms (0: never), grant_ttl ms (0: never), redeemed)
-- KEYS[2] takers {p:<code>}:by   (set of accounts)
-- ARGV: account, now ms.
-- Returns {1, credits mc, grant ttl ms} when claimed now, {2, …} when claimed
-- before by this account, {-1} unknown code, {-2} expired, {-3} exhausted.
local code, by = KEYS[1], KEYS[2]
local account, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', code, 'credits_mc', 'max', 'expires_at', 'grant_ttl')
if not f[1] then return {-1} end
if redis.call('SISMEMBER', by, account) == 1 then return {2, tonumber(f[1]), tonumber(f[4]) or 0} end
local exp = tonumber(f[3]) or 0
if exp > 0 and now >= exp then return {-2} end
local max = tonumber(f[2]) or 0
if max > 0 and redis.call('SCARD', by) >= max then return {-3} end
redis.call('SADD', by, account)
redis.call('HINCRBY', code, 'redeemed', 1)
return {1, tonumber(f[1]), tonumber(f[4]) or 0}
