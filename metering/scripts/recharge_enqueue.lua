-- recharge_enqueue: claim the right to queue one auto-recharge for an account
-- whose balance is under its threshold. (period.lua is prepended.)
-- At most one request is queued or in flight per account: the caller adds the
-- request to the stream only when this answers 1, and the worker acts only on
-- the request whose id the account still names (recharge_begin).
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] auto-recharge {a:<id>}:ar
-- KEYS[3] plan hash    {a:<id>}:plan  (read: the billing period)
-- ARGV: request id, now ms, queued stale ms (a queued request no worker began after
--       this is abandoned), in-flight stale ms (a request begun this long ago that never
--       ended, e.g. a payment left processing, no longer blocks), calendar month start (unix s)
-- Returns {code, threshold mc, balance mc}; code 1 = queued now (add it to the
-- stream), 0 = off, 2 = balance not under the threshold, 3 = one already queued or
-- in flight, 4 = backing off after a failure, 5 = the spending limit leaves no room.
local acct, ar, plan = KEYS[1], KEYS[2], KEYS[3]
local rid, now, stale, flightStale, month = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local f = redis.call('HMGET', ar, 'enabled', 'threshold_mc', 'state', 'state_at', 'next_at',
  'limit_minor', 'price_minor', 'currency', 'spent_period', 'spent_minor', 'spent_currency')
local threshold = tonumber(f[2]) or 0
if f[1] ~= '1' then return {0, threshold, 0} end
local balance = tonumber(redis.call('HGET', acct, 'balance'))
if not balance then return {0, threshold, 0} end
if balance >= threshold then return {2, threshold, balance} end
local age = now - (tonumber(f[4]) or 0)
if f[3] == 'inflight' and age < flightStale then return {3, threshold, balance} end
if f[3] == 'queued' and age < stale then return {3, threshold, balance} end
if now < (tonumber(f[5]) or 0) then return {4, threshold, balance} end
local spent = 0
if f[9] == tg_period(plan, month) and f[11] == f[8] then spent = tonumber(f[10]) or 0 end
if spent + (tonumber(f[7]) or 0) > (tonumber(f[6]) or 0) then return {5, threshold, balance} end
redis.call('HSET', ar, 'state', 'queued', 'rid', rid, 'state_at', now)
return {1, threshold, balance}
