-- recharge_begin: the worker's atomic check before charging a card.
-- (period.lua is prepended.)
-- Only the request the account still names proceeds; the balance must still be
-- under the threshold; and the period's spend plus the pack price must not pass
-- the spending limit. When all hold, the price is added to the period's spend
-- and the request is in flight, with a record of what it sells (for the credit).
-- KEYS[1] account hash   {a:<id>}:acct
-- KEYS[2] auto-recharge  {a:<id>}:ar
-- KEYS[3] plan hash      {a:<id>}:plan
-- KEYS[4] sale record    {a:<id>}:co:<request id>
-- ARGV: request id, now ms, calendar month start (unix s), pack, price minor, currency,
--       credits mc, record ttl s
-- Returns {1, 'begun' | 'resumed', pack, price minor, currency, credits mc}
--      or {0, reason, spent minor, limit minor}; reason: stale, lost, disabled, pack_changed,
--         currency_changed, above_threshold, spending_limit.
local acct, ar, plan, co = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, now, month = ARGV[1], ARGV[2], ARGV[3]
local pack, price, currency, credits, ttl = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], tonumber(ARGV[8])
local f = redis.call('HMGET', ar, 'enabled', 'threshold_mc', 'state', 'rid', 'pack', 'limit_minor', 'currency',
  'spent_period', 'spent_minor', 'spent_currency')
if f[4] ~= rid or (f[3] ~= 'queued' and f[3] ~= 'inflight') then return {0, 'stale', 0, 0} end

local function skip(reason, spent, limit)
  redis.call('HSET', ar, 'state', '', 'rid', '', 'last_skip', reason, 'last_skip_at', now)
  return {0, reason, spent or 0, limit or 0}
end

if f[3] == 'inflight' then
  -- A worker began this request and did not finish (it crashed): resume it
  -- with what it sold, so that the charge's idempotency key sees the same request.
  local c = redis.call('HMGET', co, 'pack', 'price_minor', 'currency', 'credits_mc')
  if c[1] then return {1, 'resumed', c[1], c[2], c[3], c[4]} end
  return skip('lost')
end
if f[1] ~= '1' then return skip('disabled') end
if f[5] ~= pack then return skip('pack_changed') end
if f[7] ~= currency then return skip('currency_changed') end
local balance = tonumber(redis.call('HGET', acct, 'balance')) or 0
if balance >= (tonumber(f[2]) or 0) then return skip('above_threshold') end

local period = tg_period(plan, month)
local spent = 0
if f[8] == period and f[10] == currency then spent = tonumber(f[9]) or 0 end
local limit = tonumber(f[6]) or 0
local function int(n) return string.format('%d', n) end
if spent + price > limit then
  redis.call('HSET', ar, 'spent_period', period, 'spent_minor', int(spent), 'spent_currency', currency)
  return skip('spending_limit', spent, limit)
end
redis.call('HSET', ar, 'state', 'inflight', 'state_at', now, 'spent_period', period,
  'spent_minor', int(spent + price), 'spent_currency', currency, 'inflight_price', int(price), 'inflight_period', period)
redis.call('HSET', co, 'pack', pack, 'credits_mc', credits, 'price_minor', ARGV[5], 'currency', currency,
  'created_at', now, 'kind', 'auto_recharge')
redis.call('EXPIRE', co, ttl)
return {1, 'begun', pack, ARGV[5], currency, credits}
