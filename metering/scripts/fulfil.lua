-- fulfil: credit a paid checkout from OUR record of it, exactly once per session.
-- KEYS[1] account hash     {a:<id>}:acct
-- KEYS[2] references       {a:<id>}:refs            (set)
-- KEYS[3] ledger           {a:<id>}:ledger          (stream)
-- KEYS[4] checkout record  {a:<id>}:co:<session>    (hash, written at checkout)
-- KEYS[5] payment record   {a:<id>}:pay:<payment>   (hash, written here; unused when no payment id)
-- KEYS[6] billing history  {a:<id>}:billing         (stream, same entry ids as the ledger)
-- ARGV: reference, amount paid (minor units), currency paid, payment id ("" = none), session id,
--       created_at ms, then field/value pairs for the ledger entry.
-- Returns {1, balance after, ledger entry id, credits}   when credited now,
--         {0, balance, '', 0}                             when the reference was already applied,
--         {-1}                                            when the account does not exist,
--         {-2}                                            when there is no such checkout,
--         {-3, expected amount, expected currency}        when the payment does not match it.
local acct, refs, ledger, co, pay, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ref, paid, cur, pid, sid, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if redis.call('EXISTS', acct) == 0 then return {-1} end
if redis.call('SISMEMBER', refs, ref) == 1 then
  return {0, tonumber(redis.call('HGET', acct, 'balance')) or 0, '', 0}
end
local c = redis.call('HMGET', co, 'credits_mc', 'price_minor', 'currency', 'pack')
if not c[1] then return {-2} end
-- Amounts stay the decimal strings they were stored as: never a Lua number's
-- formatting (tostring and '..' keep only 14 significant digits).
local credits, price, currency, pack = c[1], c[2], c[3], c[4]
if tonumber(price) ~= paid or currency ~= cur then return {-3, tonumber(price), currency} end

redis.call('SADD', refs, ref)
local balance = redis.call('HINCRBY', acct, 'balance', credits)
redis.call('HINCRBY', acct, 'purchased', credits)
local rec = {'type', 'purchase', 'amount', credits, 'balance_after', balance, 'ref', ref,
  'pack', pack, 'price_minor', price, 'currency', currency, 'session_id', sid,
  'stripe_payment_id', pid, 'created_at', now}
for i = 7, #ARGV do rec[#rec + 1] = ARGV[i] end
local eid = redis.call('XADD', ledger, '*', unpack(rec))
redis.call('XADD', hist, eid, unpack(rec))
redis.call('HSET', co, 'fulfilled', 1, 'payment_id', pid)
if pid ~= '' then
  redis.call('HSET', pay, 'credits_mc', credits, 'amount_minor', price, 'currency', currency,
    'session_id', sid, 'pack', pack, 'refunded_mc', 0, 'disputed_mc', 0, 'removed_mc', 0)
end
return {1, balance, eid, tonumber(credits)}
