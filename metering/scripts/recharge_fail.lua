-- recharge_fail: end an auto-recharge that did not charge the card.
-- The price it added to the period's spend is given back; a failure is
-- counted and, at max failures in a row, auto-recharge turns itself off and
-- keeps the reason.
-- KEYS[1] auto-recharge {a:<id>}:ar
-- KEYS[2] outgoing events {a:<id>}:events (events.lua: auto_recharge.failed, for a failure of the card)
-- ARGV: request id, reason, max failures, now ms, backoff ms, count ('1' a failure
--       of the card, '0' not: nothing to charge)
-- Returns {1, failures, disabled (0/1)}, or {0} when the request is not the
-- account's current one (nothing changed).
local ar = KEYS[1]
local rid, reason, maxFail, now, backoff, count = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local f = redis.call('HMGET', ar, 'rid', 'state', 'failures', 'spent_period', 'spent_minor', 'inflight_price',
  'inflight_period')
if f[1] ~= rid or (f[2] ~= 'inflight' and f[2] ~= 'queued') then return {0} end
local function int(n) return string.format('%d', n) end
if f[2] == 'inflight' and f[4] == f[7] then
  local spent = (tonumber(f[5]) or 0) - (tonumber(f[6]) or 0)
  if spent < 0 then spent = 0 end
  redis.call('HSET', ar, 'spent_minor', int(spent))
end
local failures = tonumber(f[3]) or 0
if count == '1' then failures = failures + 1 end
redis.call('HSET', ar, 'state', '', 'rid', '', 'failures', failures, 'last_error', reason, 'last_error_at', now,
  'next_at', int(now + backoff), 'inflight_price', 0)
local disabled = 0
if count == '1' and failures >= maxFail then
  redis.call('HSET', ar, 'enabled', 0, 'disabled_reason', reason, 'disabled_at', now)
  disabled = 1
end
if count == '1' then
  tg_event(KEYS[2], 'auto_recharge.failed', 'reason', reason, 'failures', int(failures), 'disabled', tostring(disabled == 1),
    'request', rid)
end
return {1, failures, disabled}
