-- lease_grant: grow a proxy replica's credit lease. (holds.lua is prepended.)
-- A lease is a hold like any other (same hash, same expiry set), owned by one
-- replica, which serves many calls' holds from it in process.
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- ARGV: lease id, least mc wanted, most mc wanted, ttl ms
-- Returns {1, granted, lease after, balance, available after}
--      or {0, available, balance} when not even the least is available
--      or {-1} when the account does not exist.
local acct, hexp, hval = KEYS[1], KEYS[2], KEYS[3]
local id, least, most, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

if redis.call('EXISTS', acct) == 0 then return {-1} end
local now = tg_now()
tg_sweep(acct, hexp, hval, now)

local f = redis.call('HMGET', acct, 'balance', 'reserved')
local balance, reserved = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local avail = balance - reserved
if avail < least then return {0, avail, balance} end

local grant = most
if avail < grant then grant = avail end
if grant < 0 then grant = 0 end
local cur = 0
local v = redis.call('HGET', hval, id)
if v then cur = tg_parse_hold(v) end
local lease = cur + grant
-- string.format, not '..': Lua's tostring keeps only 14 significant digits.
redis.call('HSET', hval, id, string.format('%d', lease) .. ':')
redis.call('ZADD', hexp, now + ttl, id)
if grant > 0 then redis.call('HINCRBY', acct, 'reserved', grant) end
return {1, grant, lease, balance, avail - grant}
