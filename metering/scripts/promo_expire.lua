-- promo_expire: take back what is left of every promotional grant whose
-- expiry has passed, each as a ledger entry of its own (type promo_expired,
-- ref expired:<grant>). Idempotent: an expired grant leaves the set.
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
local acct, ledger, pz, pv = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
if redis.call('EXISTS', acct) == 0 then return {-1} end
local n, total = 0, 0
for _, g in ipairs(redis.call('ZRANGEBYSCORE', pz, '-inf', now)) do
  local rem = tonumber(redis.call('HGET', pv, g)) or 0
  redis.call('ZREM', pz, g)
  redis.call('HDEL', pv, g)
  if rem > 0 then
    local amount = string.format('%d', 0 - rem)
    local balance = redis.call('HINCRBY', acct, 'balance', amount)
    redis.call('HINCRBY', acct, 'promoted', amount)
    redis.call('HINCRBY', acct, 'promo', amount)
    redis.call('XADD', ledger, '*', 'type', 'promo_expired', 'amount', amount, 'balance_after', balance,
      'ref', 'expired:' .. g, 'grant', g, 'created_at', string.format('%d', now))
    n, total = n + 1, total + rem
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
return {n, total, next}
