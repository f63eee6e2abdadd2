-- release: drop a hold without charge (a failed call), and keep its record.
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] cost record  {a:<id>}:gen:<request id>
-- ARGV: hold id, key id, record ttl s, then field/value pairs of the record (may be none).
-- Returns {1} when a hold was released, {0} when there was none (already
-- released, settled or expired).
local acct, hexp, hval, gen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, kid, recTTL = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- A settled call's record is its settle mark: never overwrite it.
if redis.call('HEXISTS', gen, 'settled') == 1 then return {0} end
if #ARGV > 3 then
  local rec = {}
  for i = 4, #ARGV do rec[#rec + 1] = ARGV[i] end
  redis.call('HSET', gen, 'charged', 0, unpack(rec))
  redis.call('EXPIRE', gen, recTTL)
end
local v = redis.call('HGET', hval, id)
if not v then return {0} end
local sep = string.find(v, ':', 1, true)
local amt = tonumber(string.sub(v, 1, sep - 1))
kid = string.sub(v, sep + 1) -- the key the hold was placed under is authoritative
redis.call('HDEL', hval, id)
redis.call('ZREM', hexp, id)
-- 0 - amt, not -amt: a zero hold's -0 reaches Redis as "-0", which HINCRBY refuses.
redis.call('HINCRBY', acct, 'reserved', 0 - amt)
if kid ~= '' then redis.call('HINCRBY', acct, 'k:' .. kid .. ':res', 0 - amt) end
return {1}
