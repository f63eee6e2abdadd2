-- admit: what the proxy's plan limiter needs to admit one call, in one round trip.
-- (period.lua is prepended.)
-- KEYS[1] plan hash  {a:<id>}:plan
-- KEYS[2] usage hash {a:<id>}:usage  (the period's counters, bumped by settle)
-- KEYS[3] rate hash  {a:<id>}:rpm    (w = minute index, n = calls in it)
-- ARGV[1] calendar month start (unix s): the period when there is no live subscription
-- Returns {0} when the account has no live subscription (nothing is counted), else
-- {1, plan, seats, status, period_start, period_end, requests, input_tokens,
--  output_tokens, credits_mc, calls this minute (this one included), seconds left in the minute}.
local plan, usage, rate = KEYS[1], KEYS[2], KEYS[3]
local p = redis.call('HMGET', plan, 'plan', 'seats', 'status', 'period_start', 'period_end')
if not p[1] or not tg_live(p[3]) then return {0} end
local period = tg_period(plan, ARGV[1])
local u = redis.call('HMGET', usage, 'period', 'requests', 'input_tokens', 'output_tokens', 'credits_mc')
if u[1] ~= period then u = {period, '0', '0', '0', '0'} end

local t = redis.call('TIME')
local now = tonumber(t[1])
local win = string.format('%d', math.floor(now / 60))
local n
if redis.call('HGET', rate, 'w') == win then
  n = redis.call('HINCRBY', rate, 'n', 1)
else
  redis.call('HSET', rate, 'w', win, 'n', 1)
  n = 1
end
redis.call('EXPIRE', rate, 120)
return {1, p[1], p[2] or '1', p[3], period, p[5] or '0', u[2] or '0', u[3] or '0', u[4] or '0', u[5] or '0',
  n, 60 - now % 60}
