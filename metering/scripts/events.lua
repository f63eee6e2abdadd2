-- events: outgoing events (webhooks), prepended to the scripts that cause
-- them, so that an event is appended in the same atomic step as its cause.
-- Each account has an outbox stream {a:<id>}:events; the billing process
-- moves its entries to the webhook queue ({wh}:events) and delivers them.
-- An entry: type, then data fields; a field ending in _mc is an amount in mc.

-- tg_event appends one event of type etype with field/value pairs.
local function tg_event(events, etype, ...)
  redis.call('XADD', events, '*', 'type', etype, ...)
end

-- tg_low_balance emits balance.low when a debit took the balance from at or
-- above the account's threshold (acct.low_balance, mc; unset or 0: none) to
-- under it: once per crossing, since the next needs the balance back at or
-- above it first. Compares the balance, not what leases leave available.
-- Returns 1 when it emitted.
local function tg_low_balance(acct, events, before, after)
  local t = tonumber(redis.call('HGET', acct, 'low_balance') or '0') or 0
  if t <= 0 or before < t or after >= t then return 0 end
  tg_event(events, 'balance.low', 'balance_mc', string.format('%d', after), 'threshold_mc', string.format('%d', t))
  return 1
end
