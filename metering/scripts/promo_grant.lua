-- promo_grant: credit an account one promotional grant, at most once per
-- reference (promo:<code>), ever. (promo.lua is prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] references   {a:<id>}:refs   (set)
-- KEYS[3] ledger       {a:<id>}:ledger (stream)
-- KEYS[4] promotional grants by expiry   {a:<id>}:promo
-- KEYS[5] promotional grants' remainders {a:<id>}:promov
-- ARGV: mc, reference (also the grant's id), expiry ms (0: never), code, created_at ms.
-- The entry is of type promo_grant; its amount counts in 'promoted' and in
-- 'promo' (the promotional part of the balance).
-- Returns {1, balance after, entry id} when granted, {0, balance, ""} when
-- the reference was already applied, {-1} when the account does not exist.
local acct, refs, ledger, pz, pv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mc, ref, exp, code, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
if redis.call('EXISTS', acct) == 0 then return {-1} end
if redis.call('SADD', refs, ref) == 0 then
  return {0, tonumber(redis.call('HGET', acct, 'balance')) or 0, ''}
end
local balance = redis.call('HINCRBY', acct, 'balance', mc)
redis.call('HINCRBY', acct, 'promoted', mc)
redis.call('HINCRBY', acct, 'promo', mc)
local score, expField = TG_PROMO_NEVER, ''
if exp > 0 then score, expField = exp, string.format('%d', exp) end
redis.call('ZADD', pz, score, ref)
redis.call('HSET', pv, ref, mc)
local eid = redis.call('XADD', ledger, '*', 'type', 'promo_grant', 'amount', mc, 'balance_after', balance,
  'ref', ref, 'grant', ref, 'code', code, 'expires_at', expField, 'created_at', now)
return {1, balance, eid}
