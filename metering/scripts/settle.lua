-- settle: turn a hold into a charge, exactly once. (period.lua is prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] settle mark  {a:<id>}:gen:<hold id>    (remembers the answer; the proxy's hold
--                      id is its request id, so this is the cost record itself)
-- KEYS[5] ledger       {a:<id>}:ledger           (stream)
-- KEYS[6] cost record  {a:<id>}:gen:<request id>  (hash)
-- KEYS[7] plan         {a:<id>}:plan             (hash, read: the billing period)
-- KEYS[8] usage        {a:<id>}:usage            (hash: the period's counters)
-- ARGV: hold id, key id, cost mc, mark ttl s, record ttl s, entry type, calendar month start
--       (unix s), input tokens, output tokens, then field/value pairs of the usage record
--       (copied to the ledger entry and the cost record).
-- Returns {balance after, charged, capped (0/1), replay (0/1)}, or {-1} when
-- the account does not exist.
local acct, hexp, hval, done, ledger, gen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, kid, cost = ARGV[1], ARGV[2], tonumber(ARGV[3])
local markTTL, recTTL, etype = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local plan, usage, month, inTok, outTok = KEYS[7], KEYS[8], ARGV[7], ARGV[8], ARGV[9]

local prev = redis.call('HMGET', done, 'settled', 'balance_after', 'charged', 'capped')
if prev[1] then return {tonumber(prev[2]), tonumber(prev[3]), tonumber(prev[4]), 1} end
if redis.call('EXISTS', acct) == 0 then return {-1} end

local charge, capped = cost, 0
local v = redis.call('HGET', hval, id)
if v then
  local sep = string.find(v, ':', 1, true)
  local amt = tonumber(string.sub(v, 1, sep - 1))
  kid = string.sub(v, sep + 1) -- the key the hold was placed under is authoritative
  redis.call('HDEL', hval, id)
  redis.call('ZREM', hexp, id)
  -- 0 - amt, not -amt: a zero hold's -0 reaches Redis as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', acct, 'reserved', 0 - amt)
  if kid ~= '' then redis.call('HINCRBY', acct, 'k:' .. kid .. ':res', 0 - amt) end
  -- A call never costs more than its hold.
  if charge > amt then charge, capped = amt, 1 end
else
  -- The hold expired before the call ended: charge what is free, never more.
  local f = redis.call('HMGET', acct, 'balance', 'reserved')
  local avail = (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0)
  if avail < 0 then avail = 0 end
  if charge > avail then charge, capped = avail, 1 end
end

-- 0 - charge, not -charge: for a zero charge Lua's -0 reaches Redis as "-0",
-- which HINCRBY refuses.
local debit = 0 - charge
local balance = redis.call('HINCRBY', acct, 'balance', debit)
redis.call('HINCRBY', acct, 'consumed', charge)
if kid ~= '' then redis.call('HINCRBY', acct, 'k:' .. kid .. ':used', charge) end

-- The period's counters, which the plan limits and the usage API read.
tg_count(plan, usage, month, 1, inTok, outTok, charge)

local rec = {}
for i = 10, #ARGV do rec[#rec + 1] = ARGV[i] end
local eid = redis.call('XADD', ledger, '*', 'type', etype, 'amount', debit, 'balance_after', balance,
  'ref', id, 'capped', capped, unpack(rec))
-- The cost record points at its ledger entry instead of copying it: one
-- small hash per call.
redis.call('HSET', gen, 'settled', 1, 'charged', charge, 'balance_after', balance, 'capped', capped, 'entry', eid)
redis.call('EXPIRE', gen, recTTL)
if done ~= gen then -- a caller whose hold id is not the request id: a separate mark
  redis.call('HSET', done, 'settled', 1, 'balance_after', balance, 'charged', charge, 'capped', capped)
  redis.call('EXPIRE', done, markTTL)
end
return {balance, charge, capped, 0}
