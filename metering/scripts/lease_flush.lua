-- lease_flush: apply a batch of a replica's settled and failed calls to its
-- lease, renew the lease, and give back what the replica no longer needs —
-- one atomic script per account and batch. (holds.lua, keygov.lua, debit.lua, promo.lua,
-- events.lua, period.lua and period_holds.lua are prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] ledger       {a:<id>}:ledger
-- KEYS[5] plan         {a:<id>}:plan
-- KEYS[6] usage        {a:<id>}:usage
-- KEYS[7] give-back mark {a:<id>}:gb:<lease id> (the last give-back applied)
-- KEYS[8] period hold expiry {a:<id>}:phexp
-- KEYS[9] period hold values {a:<id>}:phval
-- KEYS[10] the day's usage  {a:<id>}:day:<YYYY-MM-DD> (UTC, the flush's day)
-- KEYS[11] promotional grants by expiry {a:<id>}:promo  (zset; promo.lua)
-- KEYS[12] promotional grants' remainders {a:<id>}:promov (hash)
-- KEYS[13] outgoing events {a:<id>}:events (stream; events.lua: balance.low)
-- KEYS[14] member budgets {a:<id>}:mb  (user → "mc:period"; keygov.lua)
-- KEYS[14+j] key rules of the j-th of the batch's m keys {a:<id>}:kg:<key id>
-- KEYS[14+m+i] cost record of the i-th call {a:<id>}:gen:<request id>
-- ARGV: lease id, ttl ms, record ttl s, calendar month start (unix s),
--       mc to give back, give-back sequence number, m, the m key ids (each
--       key id the calls name, once, in the order of their rules' KEYS), then per call:
--       kind ("s" settle | "r" release), request id, key id, cost mc, hold mc,
--       input tokens, output tokens, n, then n field/value strings of its record.
-- A batch may arrive twice (a reply lost, the client or the Leaser resending
-- it): a call whose cost record says settled is skipped, and a give-back
-- whose sequence number is already marked is not given back again.
-- Each call is charged its whole cost, even past its hold on the lease (the
-- excess is recorded as over_hold), first from the lease and, should the lease
-- be short or gone (shrunk by a refund, or expired while this replica could
-- not reach Redis), from the balance. A lease is never renewed beyond what the
-- account has: should available be negative after the batch, the leases shrink.
-- Each call's period hold is dropped and its request counted (or given back)
-- as settle and release do (period_holds.lua tg_end_call).
-- What a key's calls cost is added to its budget period when it has a budget,
-- and to its member's budget period when the member who created it has one
-- (keygov.lua), as settle does: a key served from a lease (its replica had
-- not yet seen its first rule or its member's budget) still spends its budget.
-- Such calls were not held against the budget: the period's spend may pass
-- it by what they cost, and the key's next call held one by one is refused.
-- Returns {balance, lease after, available after, charged in all, event emitted (0/1)}, or {-1}
-- when the account does not exist.
local acct, hexp, hval, ledger, plan, usage, gbMark = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local phexp, phval, day = KEYS[8], KEYS[9], KEYS[10]
local id, ttl, recTTL, month = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local giveBack, gbSeq = tonumber(ARGV[5]), ARGV[6]
local mb, nk = KEYS[14], tonumber(ARGV[7])
local kgOf = {} -- key id → its rules hash
for j = 1, nk do kgOf[ARGV[7 + j]] = KEYS[14 + j] end
-- Every key a call names must have its rules declared, before anything is
-- written (a script is not rolled back).
do
  local j = 8 + nk
  while j <= #ARGV do
    local kid = ARGV[j + 2]
    if kid ~= '' and not kgOf[kid] then return redis.error_reply('lease_flush: rules of key ' .. kid .. ' not declared') end
    j = j + 8 + tonumber(ARGV[j + 7])
  end
end
if giveBack > 0 then
  if redis.call('GET', gbMark) == gbSeq then
    giveBack = 0
  else
    redis.call('SET', gbMark, gbSeq, 'PX', ttl)
  end
end

if redis.call('EXISTS', acct) == 0 then return {-1} end
local balance = tonumber(redis.call('HGET', acct, 'balance')) or 0
local lease = 0
local v = redis.call('HGET', hval, id)
if v then lease = tg_parse_hold(v) end

-- Per key: {charged, over-hold mc, over-hold calls}.
local leaseUsed, total, served, requests, inSum, outSum = 0, 0, 0, 0, 0, 0
local perKey = {}
-- Per model: {calls, input tokens, output tokens, charged}, for the day's usage.
local perModel = {}
local i, k = 8 + nk, 15 + nk
while i <= #ARGV do
  local kind, req, kid, cost, held = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local inTok, outTok, n = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local gen = KEYS[k]
  local first, last = i + 8, i + 7 + n
  i, k = last + 1, k + 1
  if redis.call('HEXISTS', gen, 'settled') == 0 then
    if kind == 'r' then
      tg_end_call(plan, usage, phexp, phval, gen, req, month, false)
      redis.call('HSET', gen, 'charged', 0, unpack(ARGV, first, last))
      redis.call('EXPIRE', gen, recTTL)
    else
      local over = 0
      if cost > held then over = cost - held end
      local fromLease = cost
      if fromLease > lease - leaseUsed then fromLease = lease - leaseUsed end
      leaseUsed = leaseUsed + fromLease
      balance = balance - cost
      total = total + cost
      served = served + 1
      requests = requests + tg_end_call(plan, usage, phexp, phval, gen, req, month, true)
      inSum, outSum = inSum + inTok, outSum + outTok
      local t = perKey[kid]
      if not t then
        t = {0, 0, 0}
        perKey[kid] = t
      end
      t[1] = t[1] + cost
      if over > 0 then t[2], t[3] = t[2] + over, t[3] + 1 end
      local rec = {unpack(ARGV, first, last)}
      if kid ~= '' then local n = #rec; rec[n + 1], rec[n + 2] = 'key_id', kid end -- the key charged, for the books
      -- Promotional credits pay first, call by call (promo.lua).
      tg_promo_field(rec, tg_promo_take(acct, KEYS[11], KEYS[12], cost))
      tg_write_charge(ledger, gen, recTTL, req, cost, balance, over, 0, rec)
      local model = tg_rec_model(rec)
      local d = perModel[model]
      if not d then
        d = {0, 0, 0, 0}
        perModel[model] = d
      end
      d[1], d[2], d[3], d[4] = d[1] + 1, d[2] + inTok, d[3] + outTok, d[4] + cost
    end
  end
end

-- The batch's totals, once: balance, consumed, the keys' spend (and their
-- budgets' and their members' budgets' periods), the lease and the period's
-- counters.
local nowS = math.floor(tg_now() / 1000)
for kid, t in pairs(perKey) do
  tg_debit(acct, kid, t[1], t[2], t[3])
  if kid ~= '' then
    tg_key_charge(kgOf[kid], t[1], nowS, month)
    tg_member_end(acct, mb, kid, t[1], nowS, month)
  end
end
for model, d in pairs(perModel) do tg_count_day(day, model, d[1], d[2], d[3], d[4]) end
lease = lease - leaseUsed
if giveBack > lease then giveBack = lease end
lease = lease - giveBack
-- (0 - x, not -x: Lua's -0 reaches Redis as "-0".)
if leaseUsed + giveBack > 0 then redis.call('HINCRBY', acct, 'reserved', 0 - (leaseUsed + giveBack)) end
if served > 0 then
  tg_count(plan, usage, month, requests, inSum, outSum, total)
end
if lease > 0 then
  redis.call('HSET', hval, id, string.format('%d', lease) .. ':')
  redis.call('ZADD', hexp, tg_now() + ttl, id)
elseif v then
  redis.call('HDEL', hval, id)
  redis.call('ZREM', hexp, id)
end
if tg_shrink_leases(acct, hexp, hval) > 0 then
  v = redis.call('HGET', hval, id)
  lease = 0
  if v then lease = tg_parse_hold(v) end
end
local res = redis.call('HMGET', acct, 'balance', 'reserved')
local emitted = 0
if total > 0 then emitted = tg_low_balance(acct, KEYS[13], tonumber(res[1]) + total, tonumber(res[1])) end
return {tonumber(res[1]), lease, tonumber(res[1]) - tonumber(res[2]), total, emitted}
