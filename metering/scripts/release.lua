-- release: drop a hold without charge (a failed call), and keep its record.
-- (holds.lua is prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] cost record  {a:<id>}:gen:<request id>
-- ARGV: hold id, key id, record ttl s, then field/value pairs of the record (may be none).
-- Returns {1} when a hold was released, {0} when there was none (already
-- released, settled or expired).
local acct, hexp, hval, gen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, recTTL = ARGV[1], tonumber(ARGV[3])
-- A settled call's record is its settle mark: never overwrite it.
if redis.call('HEXISTS', gen, 'settled') == 1 then return {0} end
if #ARGV > 3 then
  redis.call('HSET', gen, 'charged', 0, unpack(ARGV, 4))
  redis.call('EXPIRE', gen, recTTL)
end
if tg_drop_hold(acct, hexp, hval, id) then return {1} end
return {0}
