-- keygov: prepended to the scripts that hold, settle and release single
-- calls (reserve, settle, release) and to lease_flush (which counts leased
-- calls' spend in budgets), so that a governed API key's rules live in one
-- place. (holds.lua is prepended before it.)
--
-- A governed key has a hash {a:<id>}:kg:<key id>:
--   settings  exp (unix s; absent: never), models (",id,id,": catalog ids the
--             key may call; absent: any), rpm, tpm, par (max parallel calls),
--             budget (mc per period), bper (day|week|month)
--   state     rl, rt: the rpm bucket (level, ms of its last update);
--             tl, tt: the tpm bucket; bstart, bused: the budget period's start
--             (unix s) and what the key spent in it (mc)
-- and, in the account hash, k:<key>:n: its holds in flight (holds.lua counts
-- them down, so that a call that never ends frees its slot at the hold TTL).
--
-- Rate limits are leaky buckets (GCRA) over a minute: a limit of N admits N
-- at once and one more every 60/N s. Levels are kept scaled by 60000 (units
-- × ms), so that every step is an integer: a call of c units adds c × 60000,
-- the bucket drains N per ms, and it holds at most N × 60000.
-- A tpm bucket takes a call's worst case (its input estimate and the output
-- it is granted) when it is held; its end gives back what it did not use
-- (the worst case is kept in the call's cost record, field ktok).

local TG_MINUTE = 60000

-- tg_key_period is the start (unix s) of the budget period kind that holds
-- now (unix s); month is the calendar month's start, which Lua cannot compute.
local function tg_key_period(kind, now, month)
  if kind == 'day' then return now - now % 86400 end
  if kind == 'week' then
    local days = math.floor(now / 86400)
    return (days - (days + 3) % 7) * 86400 -- 1970-01-01 was a Thursday; weeks start on Monday
  end
  return tonumber(month)
end

-- tg_bucket is a bucket's level drained to nowMs.
local function tg_bucket(level, at, rate, nowMs)
  level = (tonumber(level) or 0) - (nowMs - (tonumber(at) or nowMs)) * rate
  if level < 0 then level = 0 end
  return level
end

-- tg_key_used is what the key spent in its budget period that holds now.
-- A period only moves forward: a caller whose clock is still in an earlier
-- period (the month's start comes from the proxy's clock) counts in the
-- newer one the key already reached, never resets it.
local function tg_key_used(g, now, month)
  local start = tg_key_period(g.bper, now, month)
  local cur = tonumber(g.bstart)
  if cur == nil or cur < start then return 0, start end
  return tonumber(g.bused) or 0, cur
end

-- tg_key_spend adds charge (mc) to the budget period of the key whose rules
-- hash is kg, when it has a budget (bper: its period's kind, bstart: the
-- start of the period it spent in last, as read from kg).
local function tg_key_spend(kg, bper, bstart, charge, nowS, month)
  if charge <= 0 or not bper then return end
  local start = tg_key_period(bper, nowS, month)
  local cur = tonumber(bstart)
  if cur == nil or cur < start then -- a new period (never back to an older one)
    redis.call('HSET', kg, 'bstart', start, 'bused', string.format('%d', charge))
  else
    redis.call('HINCRBY', kg, 'bused', charge)
  end
end

-- tg_key_charge adds what a key's calls cost (mc) to its budget period, when
-- the key has a budget: lease_flush.lua's calls, served from a replica's
-- lease (a key whose first rule a replica's key cache had not seen yet).
-- Not idempotent: the caller charges each call once.
local function tg_key_charge(kg, charge, nowS, month)
  local f = redis.call('HMGET', kg, 'bper', 'bstart')
  tg_key_spend(kg, f[1], f[2], charge, nowS, month)
end

-- tg_key_end ends a governed key's call: charge (mc) is added to its budget
-- period, and the tpm bucket gets back what the call held but did not use
-- (used tokens; a failed call used none). Idempotent per call: the call's
-- worst case (ktok) is removed from its cost record.
local function tg_key_end(kg, gen, charge, used, nowS, nowMs, month)
  if redis.call('EXISTS', kg) == 0 then return end
  local f = redis.call('HMGET', kg, 'bper', 'bstart', 'bused', 'tpm', 'tl', 'tt')
  tg_key_spend(kg, f[1], f[2], charge, nowS, month)
  local held = tonumber(redis.call('HGET', gen, 'ktok') or '')
  if held then
    redis.call('HDEL', gen, 'ktok')
    local tpm = tonumber(f[4]) or 0
    if tpm > 0 then
      local level = tg_bucket(f[5], f[6], tpm, nowMs) - (held - used) * TG_MINUTE
      if level < 0 then level = 0 end
      redis.call('HSET', kg, 'tl', string.format('%d', level), 'tt', nowMs)
    end
  end
end

-- Member budgets (teams): a member's credit budget per period, shared by
-- the keys it created. Its settings are in {a:<id>}:mb (user → "mc:period");
-- in the account hash, k:<key>:m names the member who created a key,
-- m:<user>:res is what the member's keys hold in flight (holds.lua counts it
-- down) and m:<user>:bstart, m:<user>:bused its period's start and spend.

-- tg_member_budget is the member of key kid and what is left of its budget
-- (budget − spent this period − its holds), or nil when it has none.
local function tg_member_budget(acct, mb, kid, nowS, month)
  local mem = redis.call('HGET', acct, 'k:' .. kid .. ':m')
  if not mem then return nil end
  local v = redis.call('HGET', mb, mem)
  if not v then return mem, nil end
  local sep = string.find(v, ':', 1, true)
  local budget, bper = tonumber(string.sub(v, 1, sep - 1)), string.sub(v, sep + 1)
  local f = redis.call('HMGET', acct, 'm:' .. mem .. ':bstart', 'm:' .. mem .. ':bused', 'm:' .. mem .. ':res')
  local used = tg_key_used({bper = bper, bstart = f[1], bused = f[2]}, nowS, month)
  return mem, budget - used - (tonumber(f[3]) or 0)
end

-- tg_member_end adds a call's charge to the budget period of the member who
-- created key kid, when it has a budget.
local function tg_member_end(acct, mb, kid, charge, nowS, month)
  if charge <= 0 then return end
  local mem = redis.call('HGET', acct, 'k:' .. kid .. ':m')
  if not mem then return end
  local v = redis.call('HGET', mb, mem)
  if not v then return end
  local start = tg_key_period(string.sub(v, string.find(v, ':', 1, true) + 1), nowS, month)
  local cur = tonumber(redis.call('HGET', acct, 'm:' .. mem .. ':bstart'))
  if cur == nil or cur < start then -- a new period (never back to an older one)
    redis.call('HSET', acct, 'm:' .. mem .. ':bstart', start, 'm:' .. mem .. ':bused', string.format('%d', charge))
  else
    redis.call('HINCRBY', acct, 'm:' .. mem .. ':bused', charge)
  end
end
