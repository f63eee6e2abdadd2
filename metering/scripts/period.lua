-- period: prepended to the scripts that count per billing period (settle,
-- admit, recharge_enqueue, recharge_begin), so that each decides the period
-- in exactly one way.
--
-- An account's billing period is its subscription's current period while the
-- subscription is live (active, trialing, past_due), else the calendar month
-- the caller passes (UTC, unix seconds). Periods are compared as the decimal
-- strings they are stored as.
local function tg_live(status)
  return status == 'active' or status == 'trialing' or status == 'past_due'
end
local function tg_period(plan, defStart)
  local p = redis.call('HMGET', plan, 'status', 'period_start')
  if p[1] and tg_live(p[1]) and p[2] and p[2] ~= '' then return p[2] end
  return defStart
end

-- tg_count adds settled calls to the period's usage counters (requests,
-- tokens, credits), starting them afresh when the period changed.
local function tg_count(plan, usage, defStart, requests, inTok, outTok, credits)
  local period = tg_period(plan, defStart)
  if redis.call('HGET', usage, 'period') ~= period then
    redis.call('HSET', usage, 'period', period, 'requests', 0, 'input_tokens', 0, 'output_tokens', 0, 'credits_mc', 0)
  end
  redis.call('HINCRBY', usage, 'requests', requests)
  redis.call('HINCRBY', usage, 'input_tokens', inTok)
  redis.call('HINCRBY', usage, 'output_tokens', outTok)
  redis.call('HINCRBY', usage, 'credits_mc', credits)
end
