-- release: drop a failed call's hold without charge, and keep its record.
-- (holds.lua, keygov.lua, period.lua and period_holds.lua are prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] cost record  {a:<id>}:gen:<request id>
-- KEYS[5] plan         {a:<id>}:plan   (hash, read: the billing period)
-- KEYS[6] usage        {a:<id>}:usage  (hash: the period's counters)
-- KEYS[7] period hold expiry {a:<id>}:phexp
-- KEYS[8] period hold values {a:<id>}:phval
-- KEYS[9] key rules    {a:<id>}:kg:<key id>  (a governed key's tpm bucket gets the call's tokens back)
-- ARGV: hold id, key id, record ttl s, calendar month start (unix s), then
--       field/value pairs of the record (may be none).
-- The call's period hold is dropped too, and the request admit counted is
-- given back: a failed call is not a request.
-- Returns {1} when a hold was released, {0} when there was none (already
-- released, settled or expired).
local acct, hexp, hval, gen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local plan, usage, phexp, phval = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local id, recTTL, month = ARGV[1], tonumber(ARGV[3]), ARGV[4]
-- A settled call's record is its settle mark: never overwrite it.
if redis.call('HEXISTS', gen, 'settled') == 1 then return {0} end
tg_end_call(plan, usage, phexp, phval, gen, id, month, false)
if ARGV[2] ~= '' then
  local now = tg_now()
  tg_key_end(KEYS[9], gen, 0, 0, math.floor(now / 1000), now, month)
end
if #ARGV > 4 then
  redis.call('HSET', gen, 'charged', 0, unpack(ARGV, 5))
  redis.call('EXPIRE', gen, recTTL)
end
if tg_drop_hold(acct, hexp, hval, id) then return {1} end
return {0}
