-- promo_expire: take back what is left of every promotional grant whose
-- expiry has passed, each as a ledger entry of its own (type promo_expired,
-- ref expired:<grant>). Idempotent: an expired grant leaves the set.
-- Live holds (calls and leases: acct.reserved) were placed against the
-- balance, and a call spends promotional credits first: an expiry takes now
-- only what leaves the balance ≥ reserved, and keeps back no more than the
-- holds need (at most reserved, in all): a paid part in debt stays in debt.
-- A part kept back stays in its grant (spent first by the calls that settle)
-- and the account is due again TG_PROMO_RETRY ms later.
-- (holds.lua and promo.lua are prepended: leases shrink should the account be
-- short afterwards.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] ledger       {a:<id>}:ledger
-- KEYS[3] promotional grants by expiry   {a:<id>}:promo
-- KEYS[4] promotional grants' remainders {a:<id>}:promov
-- KEYS[5] hold expiry  {a:<id>}:hexp
-- KEYS[6] hold values  {a:<id>}:hval
-- KEYS[7] outgoing events {a:<id>}:events (events.lua: balance.low)
-- ARGV: now ms (the caller's clock: the expiry is the operator's promise).
-- Returns {grants expired, mc taken back, the next expiry ms (0: none)}, or
-- {-1} when the account does not exist.
local TG_PROMO_RETRY = 30000
local acct, ledger, pz, pv = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
if redis.call('EXISTS', acct) == 0 then return {-1} end
local n, total = 0, 0
-- Holds past their expiry (a proxy that died mid-call) are dropped first:
-- they would otherwise keep part of an expired grant alive for ever.
tg_sweep(acct, KEYS[5], KEYS[6], tg_now())
local f = redis.call('HMGET', acct, 'balance', 'reserved')
local bal, reserved = tonumber(f[1]) or 0, tonumber(f[2]) or 0
if reserved < 0 then reserved = 0 end
local need, kept = reserved, 0 -- what holds may still need of the grants
for _, g in ipairs(redis.call('ZRANGEBYSCORE', pz, '-inf', now)) do
  local rem = tonumber(redis.call('HGET', pv, g)) or 0
  -- keep = min(rem, need, reserved − (balance − rem)): taking the rest
  -- leaves the balance ≥ reserved, or keeps all the holds need.
  local keep = reserved - (bal - rem)
  if keep > need then keep = need end
  if keep > rem then keep = rem end
  if keep < 0 then keep = 0 end
  local take = rem - keep
  if keep == 0 then
    redis.call('ZREM', pz, g)
    redis.call('HDEL', pv, g)
  elseif take > 0 then
    redis.call('HINCRBY', pv, g, 0 - take)
  end
  need, kept = need - keep, kept + keep
  if take > 0 then
    local amount = string.format('%d', 0 - take)
    bal = redis.call('HINCRBY', acct, 'balance', amount)
    redis.call('HINCRBY', acct, 'promoted', amount)
    redis.call('HINCRBY', acct, 'promo', amount)
    redis.call('XADD', ledger, '*', 'type', 'promo_expired', 'amount', amount, 'balance_after', bal,
      'ref', 'expired:' .. g, 'grant', g, 'created_at', string.format('%d', now))
    n, total = n + 1, total + take
  end
end
if total > 0 then
  tg_shrink_leases(acct, KEYS[5], KEYS[6])
  local after = tonumber(redis.call('HGET', acct, 'balance'))
  tg_low_balance(acct, KEYS[7], after + total, after)
end
local next = 0
local first = redis.call('ZRANGE', pz, 0, 0, 'WITHSCORES')
if #first > 0 and tonumber(first[2]) < TG_PROMO_NEVER then next = tonumber(first[2]) end
-- A part kept back for holds: again shortly, when they may have ended.
if kept > 0 and next <= now then next = now + TG_PROMO_RETRY end
return {n, total, next}
