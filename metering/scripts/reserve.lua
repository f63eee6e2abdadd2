-- reserve: place a hold for the worst case of one call. (holds.lua,
-- keygov.lua and events.lua are prepended.)
-- KEYS[1] account hash  {a:<id>}:acct
-- KEYS[2] hold expiry   {a:<id>}:hexp   (zset hold id -> expiry ms)
-- KEYS[3] hold values   {a:<id>}:hval   (hash hold id -> "amount:keyid")
-- KEYS[4] key rules     {a:<id>}:kg:<key id>  (a governed key's settings and state)
-- KEYS[5] cost record   {a:<id>}:gen:<hold id>
-- KEYS[6] member budgets {a:<id>}:mb  (user → "mc:period"; keygov.lua)
-- KEYS[7] outgoing events {a:<id>}:events (key.budget_exhausted, once per key and budget period)
-- ARGV: hold id, key id, fixed mc, mc per output token, min output, max output, ttl ms,
--       calendar month start (unix s), model (catalog id), input tokens the hold covers,
--       output tokens billed per output token granted, record ttl s
-- Returns {1, amount, output tokens granted, available after}
--      or {0, available, needed, limited_by, event emitted (0/1)}   (limited_by: "balance" | "key" | "budget" | "member_budget")
--      or {-2, limit, retry after ms, limit value}  a governed key's rule refused the call:
--         expired, model, max_parallel, rpm, tpm (nothing was counted)
--      or {-1} when the account does not exist.
local acct, hexp, hval, kg, gen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, kid = ARGV[1], ARGV[2]
local fixed, per = tonumber(ARGV[3]), tonumber(ARGV[4])
local minOut, maxOut, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local month, model, inTok, outPer, recTTL = ARGV[8], ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])

if redis.call('EXISTS', acct) == 0 then return {-1} end
local now = tg_now()
local nowS = math.floor(now / 1000)

-- Drop expired holds first: a proxy that died mid-call frees its credits here.
tg_sweep(acct, hexp, hval, now)

local f = redis.call('HMGET', acct, 'balance', 'reserved', 'k:' .. kid .. ':limit', 'k:' .. kid .. ':used',
  'k:' .. kid .. ':res', 'k:' .. kid .. ':n')
local balance, reserved = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local avail = balance - reserved

-- Idempotent: the same hold id placed twice is one hold.
local existing = redis.call('HGET', hval, id)
if existing then
  local amt = tg_parse_hold(existing)
  local out = maxOut
  if per > 0 then out = math.floor((amt - fixed) / per) end
  return {1, amt, out, avail}
end

local limitedBy = 'balance'
local klimit = tonumber(f[3]) or 0
local kres = tonumber(f[5]) or 0
if kid ~= '' and klimit > 0 then
  local kavail = klimit - (tonumber(f[4]) or 0) - kres
  if kavail < avail then avail, limitedBy = kavail, 'key' end
end

-- A governed key's rules: checked before anything is counted, applied
-- below once the call is held.
local g
local out = maxOut
if kid ~= '' then
  local v = redis.call('HMGET', kg, 'exp', 'models', 'par', 'rpm', 'rl', 'rt', 'tpm', 'tl', 'tt', 'budget', 'bper', 'bstart', 'bused')
  g = {exp = tonumber(v[1]), models = v[2], par = tonumber(v[3]) or 0, rpm = tonumber(v[4]) or 0, rl = v[5], rt = v[6],
       tpm = tonumber(v[7]) or 0, tl = v[8], tt = v[9], budget = tonumber(v[10]) or 0, bper = v[11], bstart = v[12], bused = v[13]}
  if g.exp and g.exp > 0 and nowS >= g.exp then return {-2, 'expired', 0, g.exp} end
  if g.models and not string.find(g.models, ',' .. model .. ',', 1, true) then return {-2, 'model', 0, 0} end
  if g.par > 0 and (tonumber(f[6]) or 0) >= g.par then return {-2, 'max_parallel', 1000, g.par} end
  if g.rpm > 0 then
    g.rlevel = tg_bucket(g.rl, g.rt, g.rpm, now) + TG_MINUTE
    local over = g.rlevel - g.rpm * TG_MINUTE
    if over > 0 then return {-2, 'rpm', math.ceil(over / g.rpm), g.rpm} end
  end
  if g.tpm > 0 then
    g.tlevel = tg_bucket(g.tl, g.tt, g.tpm, now)
    local room = math.floor((g.tpm * TG_MINUTE - g.tlevel) / TG_MINUTE) - inTok
    local least = inTok + minOut * outPer
    if room < minOut * outPer then
      local wait = TG_MINUTE
      if least <= g.tpm then wait = math.ceil((g.tlevel + least * TG_MINUTE - g.tpm * TG_MINUTE) / g.tpm) end
      return {-2, 'tpm', wait, g.tpm}
    end
    if outPer > 0 then
      local fit = math.floor(room / outPer)
      if fit < out then out = fit end
    end
  end
  if g.budget > 0 and g.bper then
    local used = tg_key_used(g, nowS, month)
    local bavail = g.budget - used - kres
    if bavail < avail then avail, limitedBy = bavail, 'budget' end
  end
end
-- The budget of the member who created the key, shared by all its keys.
local mem
if kid ~= '' then
  local mavail
  mem, mavail = tg_member_budget(acct, KEYS[6], kid, nowS, month)
  if mavail and mavail < avail then avail, limitedBy = mavail, 'member_budget' end
end

local needed = fixed + per * minOut
if avail < needed then
  local emitted = 0
  if limitedBy == 'budget' then
    -- The key's budget is spent for this period: tell the operator once.
    local ps = string.format('%d', tg_key_period(g.bper, nowS, month))
    if redis.call('HGET', kg, 'bx') ~= ps then
      redis.call('HSET', kg, 'bx', ps)
      tg_event(KEYS[7], 'key.budget_exhausted', 'key', kid, 'budget_mc', string.format('%d', g.budget),
        'period', g.bper, 'period_start', ps)
      emitted = 1
    end
  end
  return {0, avail, needed, limitedBy, emitted}
end

if per > 0 then
  local affordable = math.floor((avail - fixed) / per)
  if affordable < out then out = affordable end
end
local amount = fixed + per * out

-- string.format, not '..': Lua's tostring keeps only 14 significant digits.
redis.call('HSET', hval, id, string.format('%d', amount) .. ':' .. kid)
redis.call('ZADD', hexp, now + ttl, id)
redis.call('HINCRBY', acct, 'reserved', amount)
if kid ~= '' then
  redis.call('HINCRBY', acct, 'k:' .. kid .. ':res', amount)
  redis.call('HINCRBY', acct, 'k:' .. kid .. ':n', 1)
  if mem then redis.call('HINCRBY', acct, 'm:' .. mem .. ':res', amount) end
  if g.rpm > 0 then redis.call('HSET', kg, 'rl', string.format('%d', g.rlevel), 'rt', now) end
  if g.tpm > 0 then
    local tokens = inTok + out * outPer
    redis.call('HSET', kg, 'tl', string.format('%d', g.tlevel + tokens * TG_MINUTE), 'tt', now)
    redis.call('HSET', gen, 'ktok', tokens)
    redis.call('EXPIRE', gen, recTTL)
  end
end
return {1, amount, out, avail - amount}
