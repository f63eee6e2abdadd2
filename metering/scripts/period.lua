-- period: prepended to the scripts that count per billing period (admit,
-- settle, release, lease_flush, recharge_enqueue, recharge_begin), so that
-- each decides the period in exactly one way.
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

-- tg_usage readies the period's counters in the usage hash, starting them
-- afresh when the period changed, and returns the period. (The sums of the
-- period holds, held_*, are not reset: a call admitted in one period may end
-- in the next; see period_holds.lua.)
local function tg_usage(plan, usage, defStart)
  local period = tg_period(plan, defStart)
  if redis.call('HGET', usage, 'period') ~= period then
    redis.call('HSET', usage, 'period', period, 'requests', 0, 'input_tokens', 0, 'output_tokens', 0, 'credits_mc', 0)
  end
  return period
end

-- tg_count adds ended calls to the period's usage counters: requests (those
-- admit did not count already, see tg_end_call), tokens and credits.
local function tg_count(plan, usage, defStart, requests, inTok, outTok, credits)
  tg_usage(plan, usage, defStart)
  if requests ~= 0 then redis.call('HINCRBY', usage, 'requests', requests) end
  redis.call('HINCRBY', usage, 'input_tokens', inTok)
  redis.call('HINCRBY', usage, 'output_tokens', outTok)
  redis.call('HINCRBY', usage, 'credits_mc', credits)
end
