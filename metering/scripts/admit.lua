-- admit: admit one call of an account against its plan's limits, or refuse
-- it, atomically and in one round trip. (period.lua and period_holds.lua are
-- prepended; events.lua too.)
-- KEYS[1] plan hash          {a:<id>}:plan
-- KEYS[2] usage hash         {a:<id>}:usage  (the period's counters and the period holds' sums)
-- KEYS[3] rate hash          {a:<id>}:rpm    (w = minute index, n = calls in it)
-- KEYS[4] period hold expiry {a:<id>}:phexp
-- KEYS[5] period hold values {a:<id>}:phval
-- KEYS[6] cost record        {a:<id>}:gen:<request id>
-- KEYS[7] outgoing events    {a:<id>}:events (plan.limit_reached: once per limit and period,
--                            requests_per_minute once per minute)
-- ARGV[1]  calendar month start (unix s): the period when there is no live subscription
-- ARGV[2], ARGV[3]  the plan id and seats the limits are for
-- ARGV[4..8]  limits, 0 for none: requests, input tokens, output tokens, credits (mc),
--             requests per minute
-- ARGV[9]  request id
-- ARGV[10..15]  the call's worst case: input tokens, fixed mc, mc per output token,
--             output tokens billed per output token granted, min output, max output
-- ARGV[16], ARGV[17]  hold ttl ms, record ttl s
--
-- A call is admitted while each period counter plus what calls in progress
-- hold of it is under its limit, so that calls admitted at once pass a limit
-- by at most one call's worth; the output it may be granted is capped by what
-- is left of the output token and credit allowances (its input is not
-- capped), and it is refused when not even min output fits. Admitted, it is
-- counted as a request and holds its worst case (see period_holds.lua).
-- requests_per_minute counts every call of the clock minute, refused ones too.
--
-- Returns
--   {0}                  no live subscription: nothing counted
--   {2, plan, seats}     the live subscription is not to ARGV's plan and seats: nothing
--                        counted, ask again with its limits
--   {1, output granted, period start, period end, calls this minute, seconds left in the minute}
--   {-1, limit, used (held included), limit value, least this call needs (0: anything),
--    period start, period end, calls this minute, seconds left in the minute, event emitted (0/1)}
local plan, usage, rate, phexp, phval, gen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local p = redis.call('HMGET', plan, 'plan', 'seats', 'status', 'period_end')
if not p[1] or not tg_live(p[3]) then return {0} end
local seats = math.max(tonumber(p[2]) or 1, 1)
if p[1] ~= ARGV[2] or seats ~= tonumber(ARGV[3]) then return {2, p[1], seats} end

local limReq, limIn, limOut, limMc, limRpm =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local id = ARGV[9]
local inTok, fixed, per, outPer = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local minOut, maxOut, ttl, recTTL = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])

local t = redis.call('TIME')
local now = tonumber(t[1])
local nowMs = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local minuteLeft = 60 - now % 60
local period = tg_usage(plan, usage, ARGV[1])
local periodEnd = p[4] or '0'

-- The same request admitted again (a retry after a lost reply) is the same
-- admission, counted once.
if redis.call('HEXISTS', gen, 'admitted') == 1 then
  local out = maxOut
  local v = redis.call('HGET', phval, id)
  if v then
    local _, _, held = tg_phold_parse(v)
    out = math.min(math.floor(held / outPer), maxOut)
  end
  local n = tonumber(redis.call('HGET', rate, 'n')) or 0
  return {1, out, period, periodEnd, n, minuteLeft}
end

-- Period holds of calls that never ended (a proxy died) free the allowance here.
tg_phold_sweep(usage, phexp, phval, nowMs)

local win = string.format('%d', math.floor(now / 60))
local n
if redis.call('HGET', rate, 'w') == win then
  n = redis.call('HINCRBY', rate, 'n', 1)
else
  redis.call('HSET', rate, 'w', win, 'n', 1)
  n = 1
end
redis.call('EXPIRE', rate, 120)

local u = redis.call('HMGET', usage, 'requests', 'input_tokens', 'output_tokens', 'credits_mc', 'held_in', 'held_out', 'held_mc')
local requests = tonumber(u[1]) or 0
local usedIn = (tonumber(u[2]) or 0) + (tonumber(u[5]) or 0)
local usedOut = (tonumber(u[3]) or 0) + (tonumber(u[6]) or 0)
local usedMc = (tonumber(u[4]) or 0) + (tonumber(u[7]) or 0)
local function refuse(limit, used, max, needed)
  local mark = tostring(period)
  if limit == 'requests_per_minute' then mark = win end
  local emitted = 0
  if redis.call('HGET', usage, 'x:' .. limit) ~= mark then
    redis.call('HSET', usage, 'x:' .. limit, mark)
    local u, m = 'used', 'max'
    if limit == 'credits' then u, m = 'used_mc', 'max_mc' end
    tg_event(KEYS[7], 'plan.limit_reached', 'plan', ARGV[2], 'limit', limit, u, string.format('%d', used),
      m, string.format('%d', max))
    emitted = 1
  end
  return {-1, limit, used, max, needed, period, periodEnd, n, minuteLeft, emitted}
end

if limRpm > 0 and n > limRpm then return refuse('requests_per_minute', n, limRpm, 0) end
if limReq > 0 and requests >= limReq then return refuse('requests', requests, limReq, 0) end
if limIn > 0 and usedIn >= limIn then return refuse('input_tokens', usedIn, limIn, 0) end
local out = maxOut
if limOut > 0 then
  local fit = math.floor((limOut - usedOut) / outPer)
  if usedOut >= limOut or fit < minOut then return refuse('output_tokens', usedOut, limOut, minOut * outPer) end
  if fit < out then out = fit end
end
if limMc > 0 then
  if usedMc >= limMc then return refuse('credits', usedMc, limMc, fixed + per * minOut) end
  if per > 0 then
    local fit = math.floor((limMc - usedMc - fixed) / per)
    if fit < minOut then return refuse('credits', usedMc, limMc, fixed + per * minOut) end
    if fit < out then out = fit end
  end
end

redis.call('HINCRBY', usage, 'requests', 1)
tg_phold_place(usage, phexp, phval, id, fixed + per * out, inTok, out * outPer, nowMs + ttl)
redis.call('HSET', gen, 'admitted', period)
redis.call('EXPIRE', gen, recTTL)
return {1, out, period, periodEnd, n, minuteLeft}
