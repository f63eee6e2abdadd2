-- recharge_credit: credit a paid auto-recharge from OUR record of it, exactly
-- once per request (the worker and the payment_intent.succeeded webhook both
-- call it with the same reference), and end the request.
-- KEYS[1] account hash     {a:<id>}:acct
-- KEYS[2] references       {a:<id>}:refs
-- KEYS[3] ledger           {a:<id>}:ledger
-- KEYS[4] sale record      {a:<id>}:co:<request id>   (written by recharge_begin)
-- KEYS[5] payment record   {a:<id>}:pay:<payment>
-- KEYS[6] billing history  {a:<id>}:billing
-- KEYS[7] auto-recharge    {a:<id>}:ar
-- ARGV: reference, request id, amount paid (minor), currency paid, payment id, now ms,
--       then field/value pairs for the ledger entry.
-- Returns {1, balance after, ledger entry id, credits} when credited now,
--         {0, balance, '', 0} when the reference was already applied,
--         {-1} no account, {-2} no such sale, {-3, expected amount, expected currency}.
local acct, refs, ledger, co, pay, hist, ar = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local ref, rid, paid, cur, pid, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

local function done()
  local s = redis.call('HMGET', ar, 'rid', 'state')
  if s[1] == rid and s[2] == 'inflight' then
    redis.call('HSET', ar, 'state', '', 'rid', '', 'failures', 0, 'last_error', '', 'last_recharge_at', now,
      'inflight_price', 0)
  end
end

if redis.call('EXISTS', acct) == 0 then return {-1} end
if redis.call('SISMEMBER', refs, ref) == 1 then
  done()
  return {0, tonumber(redis.call('HGET', acct, 'balance')) or 0, '', 0}
end
local c = redis.call('HMGET', co, 'credits_mc', 'price_minor', 'currency', 'pack')
if not c[1] then return {-2} end
local credits, price, currency, pack = c[1], c[2], c[3], c[4]
if tonumber(price) ~= paid or currency ~= cur then return {-3, tonumber(price), currency} end

redis.call('SADD', refs, ref)
local balance = redis.call('HINCRBY', acct, 'balance', credits)
redis.call('HINCRBY', acct, 'purchased', credits)
local rec = {'type', 'auto_recharge', 'amount', credits, 'balance_after', balance, 'ref', ref,
  'pack', pack, 'price_minor', price, 'currency', currency, 'session_id', rid,
  'stripe_payment_id', pid, 'created_at', now}
for i = 7, #ARGV do rec[#rec + 1] = ARGV[i] end
local eid = redis.call('XADD', ledger, '*', unpack(rec))
redis.call('XADD', hist, eid, unpack(rec))
redis.call('HSET', co, 'fulfilled', 1, 'payment_id', pid)
if pid ~= '' then
  redis.call('HSET', pay, 'credits_mc', credits, 'amount_minor', price, 'currency', currency,
    'session_id', rid, 'pack', pack, 'refunded_mc', 0, 'disputed_mc', 0, 'removed_mc', 0)
end
done()
return {1, balance, eid, tonumber(credits)}
