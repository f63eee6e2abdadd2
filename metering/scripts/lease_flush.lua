-- lease_flush: apply a batch of a replica's settled and failed calls to its
-- lease, renew the lease, and give back what the replica no longer needs —
-- one atomic script per account and batch. (period.lua is prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] ledger       {a:<id>}:ledger
-- KEYS[5] plan         {a:<id>}:plan
-- KEYS[6] usage        {a:<id>}:usage
-- KEYS[7] give-back mark {a:<id>}:gb:<lease id> (the last give-back applied)
-- KEYS[7+i] cost record of the i-th call {a:<id>}:gen:<request id>
-- ARGV: lease id, ttl ms, record ttl s, calendar month start (unix s),
--       mc to give back, give-back sequence number, then per call:
--       kind ("s" settle | "r" release), request id, key id, charge mc,
--       input tokens, output tokens, n, then n field/value strings of its record.
-- A batch may arrive twice (a reply lost, the client or the Leaser resending
-- it): a call whose cost record says settled is skipped, and a give-back
-- whose sequence number is already marked is not given back again.
-- Each settle debits its charge from the lease; should the lease be gone (it
-- expired while this replica could not reach Redis) the charge comes from the
-- available balance instead, never more than is available (capped).
-- Returns {balance, lease after, available after, charged in all}, or {-1}
-- when the account does not exist.
local acct, hexp, hval, ledger, plan, usage, gbMark = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, ttl, recTTL, month = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local giveBack, gbSeq = tonumber(ARGV[5]), ARGV[6]
if giveBack > 0 then
  if redis.call('GET', gbMark) == gbSeq then
    giveBack = 0
  else
    redis.call('SET', gbMark, gbSeq, 'PX', ttl)
  end
end

if redis.call('EXISTS', acct) == 0 then return {-1} end
local f = redis.call('HMGET', acct, 'balance', 'reserved')
local balance, reserved = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local lease = 0
local v = redis.call('HGET', hval, id)
if v then lease = tonumber(string.sub(v, 1, string.find(v, ':', 1, true) - 1)) end

local leaseUsed, total, requests, inSum, outSum = 0, 0, 0, 0, 0
local keyUsed = {}
local i, k = 7, 8
while i <= #ARGV do
  local kind, req, kid, cost = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local inTok, outTok, n = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local gen = KEYS[k]
  local first, last = i + 7, i + 6 + n
  i, k = last + 1, k + 1
  if redis.call('HEXISTS', gen, 'settled') == 0 then
    if kind == 'r' then
      redis.call('HSET', gen, 'charged', 0, unpack(ARGV, first, last))
      redis.call('EXPIRE', gen, recTTL)
    else
      local charge, capped = cost, 0
      local fromLease = charge
      if fromLease > lease - leaseUsed then fromLease = lease - leaseUsed end
      local rest = charge - fromLease
      if rest > 0 then
        -- Outside the lease: only what is available, never more.
        local avail = balance - (reserved - leaseUsed - fromLease) - (lease - leaseUsed - fromLease)
        if avail < 0 then avail = 0 end
        if rest > avail then rest, capped = avail, 1 end
        charge = fromLease + rest
      end
      leaseUsed = leaseUsed + fromLease
      balance = balance - charge
      total = total + charge
      requests = requests + 1
      inSum, outSum = inSum + inTok, outSum + outTok
      if kid ~= '' then keyUsed[kid] = (keyUsed[kid] or 0) + charge end
      local eid = redis.call('XADD', ledger, '*', 'type', 'usage', 'amount', 0 - charge,
        'balance_after', string.format('%d', balance), 'ref', req, 'capped', capped, unpack(ARGV, first, last))
      redis.call('HSET', gen, 'settled', 1, 'charged', charge, 'balance_after', string.format('%d', balance),
        'capped', capped, 'entry', eid)
      redis.call('EXPIRE', gen, recTTL)
    end
  end
end

-- The batch's totals, once: balance, consumed, the lease, the keys' spend and
-- the period's counters. (0 - x, not -x: Lua's -0 reaches Redis as "-0".)
lease = lease - leaseUsed
if giveBack > lease then giveBack = lease end
lease = lease - giveBack
if total > 0 then
  redis.call('HINCRBY', acct, 'balance', 0 - total)
  redis.call('HINCRBY', acct, 'consumed', total)
end
if leaseUsed + giveBack > 0 then redis.call('HINCRBY', acct, 'reserved', 0 - (leaseUsed + giveBack)) end
for kid, used in pairs(keyUsed) do redis.call('HINCRBY', acct, 'k:' .. kid .. ':used', used) end
if requests > 0 then
  tg_count(plan, usage, month, requests, inSum, outSum, total)
end
if lease > 0 then
  redis.call('HSET', hval, id, string.format('%d', lease) .. ':')
  local t = redis.call('TIME')
  redis.call('ZADD', hexp, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl, id)
elseif v then
  redis.call('HDEL', hval, id)
  redis.call('ZREM', hexp, id)
end
local res = redis.call('HMGET', acct, 'balance', 'reserved')
return {tonumber(res[1]), lease, tonumber(res[1]) - tonumber(res[2]), total}
