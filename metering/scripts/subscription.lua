-- subscription: keep an account's subscription (plan, seats, status, period)
-- as Stripe's events describe it, whatever order they arrive in.
-- KEYS[1] plan hash {a:<id>}:plan
-- ARGV[1] mode, ARGV[2] subscription id, ARGV[3] event time (unix s), then per mode:
--   set      status, then field/value pairs (plan, seats, period_start, period_end, ...)
--   deleted  ended_at
--   paid     period_start, period_end ('' when unknown)
--   failed   reason
--   cancel   cancel_at
-- Returns 1 when the state changed, 0 when the event was stale or not about
-- the account's subscription.
local key, mode, sub, at = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local function live(s) return s == 'active' or s == 'trialing' or s == 'past_due' end
local cur = redis.call('HMGET', key, 'sub', 'status', 'event_at', 'period_start')
local function later()
  local prev = tonumber(cur[3]) or 0
  if at > prev then return at end
  return prev
end

if mode == 'set' then
  local status = ARGV[4]
  if cur[1] and cur[1] ~= sub then
    -- Another subscription: a live one is replaced only by a live one.
    if live(cur[2]) and not live(status) then return 0 end
    redis.call('DEL', key)
  elseif cur[1] then
    if cur[2] == 'canceled' then return 0 end        -- deleted is final
    if (tonumber(cur[3]) or 0) > at then return 0 end -- an older event
  end
  local f = {}
  for i = 5, #ARGV do f[#f + 1] = ARGV[i] end
  redis.call('HSET', key, 'sub', sub, 'status', status, 'event_at', at, unpack(f))
  return 1
end

if cur[1] ~= sub then return 0 end
if mode == 'deleted' then
  redis.call('HSET', key, 'status', 'canceled', 'ended_at', ARGV[4], 'event_at', later())
  return 1
elseif mode == 'paid' then
  local st = cur[2]
  if not (st == 'active' or st == 'trialing' or st == 'past_due' or st == 'unpaid' or st == 'incomplete') then
    return 0
  end
  if st ~= 'trialing' then redis.call('HSET', key, 'status', 'active') end
  redis.call('HSET', key, 'last_payment_error', '')
  local ps = tonumber(ARGV[4])
  if ps and ARGV[5] ~= '' and ps > (tonumber(cur[4]) or 0) then
    redis.call('HSET', key, 'period_start', ARGV[4], 'period_end', ARGV[5])
  end
  return 1
elseif mode == 'failed' then
  if cur[2] == 'active' or cur[2] == 'trialing' then redis.call('HSET', key, 'status', 'past_due') end
  redis.call('HSET', key, 'last_payment_error', ARGV[4])
  return 1
elseif mode == 'cancel' then
  if not live(cur[2]) then return 0 end
  redis.call('HSET', key, 'cancel_at_period_end', 1, 'cancel_at', ARGV[4])
  return 1
end
return redis.error_reply('subscription: unknown mode ' .. mode)
