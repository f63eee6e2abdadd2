-- period_holds: prepended (after period.lua) to the scripts that admit a call
-- against its plan's period limits and to those that end calls (admit,
-- settle, release, lease_flush), so that a call's period hold is placed,
-- dropped and counted in exactly one way.
--
-- A period hold is what a call admitted under a plan may still use of the
-- period's allowance: its input estimate, the output tokens it may be
-- granted, and the credits of its worst case. It is phval[id] =
-- "mc:in:out" (id: the call's request id, which is also its hold id) with its
-- expiry (ms) in phexp; the usage hash keeps the sums of the live ones in
-- held_mc, held_in and held_out. Those sums are never reset with the period:
-- a call admitted in one period may end in the next, and its hold must come
-- off the sums it went into. A proxy that dies mid-call leaves its period
-- holds to expire at the hold TTL, swept by the account's next admit.
--
-- Admit counts the call as a request at once and marks its cost record
-- admitted = <period>: that mark, which outlives the period hold, is how
-- the call's end knows that it was counted.

-- tg_phold_parse splits a period hold's value into mc, input and output tokens.
local function tg_phold_parse(v)
  local a = string.find(v, ':', 1, true)
  local b = string.find(v, ':', a + 1, true)
  return tonumber(string.sub(v, 1, a - 1)), tonumber(string.sub(v, a + 1, b - 1)), tonumber(string.sub(v, b + 1))
end

-- tg_phold_place holds mc, inTok and outTok of the period's allowance for
-- call id until expires (ms).
local function tg_phold_place(usage, phexp, phval, id, mc, inTok, outTok, expires)
  -- string.format, not '..': Lua's tostring keeps only 14 significant digits.
  redis.call('HSET', phval, id, string.format('%d:%d:%d', mc, inTok, outTok))
  redis.call('ZADD', phexp, expires, id)
  redis.call('HINCRBY', usage, 'held_mc', mc)
  redis.call('HINCRBY', usage, 'held_in', inTok)
  redis.call('HINCRBY', usage, 'held_out', outTok)
end

-- tg_phold_drop removes call id's period hold, if any, and takes it off the
-- sums. Returns true when there was one.
local function tg_phold_drop(usage, phexp, phval, id)
  local v = redis.call('HGET', phval, id)
  redis.call('ZREM', phexp, id)
  if not v then return false end
  redis.call('HDEL', phval, id)
  local mc, inTok, outTok = tg_phold_parse(v)
  -- 0 - x, not -x: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', usage, 'held_mc', 0 - mc)
  redis.call('HINCRBY', usage, 'held_in', 0 - inTok)
  redis.call('HINCRBY', usage, 'held_out', 0 - outTok)
  return true
end

-- tg_phold_sweep drops every period hold whose expiry has passed.
local function tg_phold_sweep(usage, phexp, phval, now)
  local expired = redis.call('ZRANGEBYSCORE', phexp, '-inf', now)
  for _, id in ipairs(expired) do tg_phold_drop(usage, phexp, phval, id) end
end

-- tg_end_call ends call id for the period's counters, the same way whether
-- it is settled, released or applied from a lease: its period hold is
-- dropped, and it returns the requests its end counts. A call served counts
-- one unless admit counted it already; a failed call counts none, and gives
-- back the one admit counted, in the period admit counted it in (a later
-- period's counters never had it). gen is the call's cost record.
local function tg_end_call(plan, usage, phexp, phval, gen, id, defStart, served)
  tg_phold_drop(usage, phexp, phval, id)
  local admitted = redis.call('HGET', gen, 'admitted')
  if served then
    if admitted then return 0 end
    return 1
  end
  if admitted then
    redis.call('HDEL', gen, 'admitted') -- given back once, however often the call is released
    if admitted == tg_usage(plan, usage, defStart) then redis.call('HINCRBY', usage, 'requests', -1) end
  end
  return 0
end
