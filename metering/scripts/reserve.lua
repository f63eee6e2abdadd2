-- reserve: place a hold for the worst case of one call. (holds.lua is prepended.)
-- KEYS[1] account hash  {a:<id>}:acct
-- KEYS[2] hold expiry   {a:<id>}:hexp   (zset hold id -> expiry ms)
-- KEYS[3] hold values   {a:<id>}:hval   (hash hold id -> "amount:keyid")
-- ARGV: hold id, key id, fixed mc, mc per output token, min output, max output, ttl ms
-- Returns {1, amount, output tokens granted, available after}
--      or {0, available, needed, limited_by}   (limited_by: "balance" | "key")
--      or {-1} when the account does not exist.
local acct, hexp, hval = KEYS[1], KEYS[2], KEYS[3]
local id, kid = ARGV[1], ARGV[2]
local fixed, per = tonumber(ARGV[3]), tonumber(ARGV[4])
local minOut, maxOut, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

if redis.call('EXISTS', acct) == 0 then return {-1} end
local now = tg_now()

-- Drop expired holds first: a proxy that died mid-call frees its credits here.
tg_sweep(acct, hexp, hval, now)

local f = redis.call('HMGET', acct, 'balance', 'reserved', 'k:' .. kid .. ':limit', 'k:' .. kid .. ':used', 'k:' .. kid .. ':res')
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
if kid ~= '' and klimit > 0 then
  local kavail = klimit - (tonumber(f[4]) or 0) - (tonumber(f[5]) or 0)
  if kavail < avail then avail, limitedBy = kavail, 'key' end
end

local needed = fixed + per * minOut
if avail < needed then return {0, avail, needed, limitedBy} end

local out = maxOut
if per > 0 then
  local affordable = math.floor((avail - fixed) / per)
  if affordable < out then out = affordable end
end
local amount = fixed + per * out

-- string.format, not '..': Lua's tostring keeps only 14 significant digits.
redis.call('HSET', hval, id, string.format('%d', amount) .. ':' .. kid)
redis.call('ZADD', hexp, now + ttl, id)
redis.call('HINCRBY', acct, 'reserved', amount)
if kid ~= '' then redis.call('HINCRBY', acct, 'k:' .. kid .. ':res', amount) end
return {1, amount, out, avail - amount}
