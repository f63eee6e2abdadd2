-- holds: prepended to every script that places, drops or shrinks holds and
-- leases (reserve, lease_grant, settle, release, lease_flush, credit,
-- reverse), so that each rule about holds lives in exactly one place.
-- A hold is hval[id] = "amount:keyid" with its expiry in hexp; a credit lease
-- is a hold whose id starts with "lease:" (no key id). Σ holds = reserved.

-- tg_now is Redis's clock in milliseconds.
local function tg_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- tg_parse_hold splits a hold's value into its amount and key id.
local function tg_parse_hold(v)
  local sep = string.find(v, ':', 1, true)
  return tonumber(string.sub(v, 1, sep - 1)), string.sub(v, sep + 1)
end

-- tg_drop_hold removes hold id and gives its credits back to what is
-- available. Returns its amount and key id, or nil when there is none.
local function tg_drop_hold(acct, hexp, hval, id)
  local v = redis.call('HGET', hval, id)
  redis.call('ZREM', hexp, id)
  if not v then return nil end
  local amt, kid = tg_parse_hold(v)
  redis.call('HDEL', hval, id)
  -- 0 - amt, not -amt: a zero hold's -0 reaches Redis as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', acct, 'reserved', 0 - amt)
  if kid ~= '' then
    redis.call('HINCRBY', acct, 'k:' .. kid .. ':res', 0 - amt)
    -- The key's calls in flight (keygov.lua); holds placed before they were
    -- counted must not take the count below zero.
    if redis.call('HINCRBY', acct, 'k:' .. kid .. ':n', -1) <= 0 then redis.call('HDEL', acct, 'k:' .. kid .. ':n') end
    -- What the key's member holds in flight (keygov.lua, member budgets).
    local mem = redis.call('HGET', acct, 'k:' .. kid .. ':m')
    if mem and redis.call('HINCRBY', acct, 'm:' .. mem .. ':res', 0 - amt) <= 0 then
      redis.call('HDEL', acct, 'm:' .. mem .. ':res')
    end
  end
  return amt, kid
end

-- tg_sweep drops every hold whose expiry has passed and gives its credits
-- back: a proxy that died mid-call (or with a lease) frees them here.
local function tg_sweep(acct, hexp, hval, now)
  local expired = redis.call('ZRANGEBYSCORE', hexp, '-inf', now)
  for _, h in ipairs(expired) do tg_drop_hold(acct, hexp, hval, h) end
end

-- tg_shrink_leases keeps credit leases from promising credits the account no
-- longer has: when a debit (a refund, a dispute, an operator's adjustment, a
-- call charged past its hold) leaves available = balance − reserved below
-- zero, the replicas' leases shrink by the shortfall — dropped when nothing
-- is left — and every replica is told on channel tg:leases:revoked, so that
-- none serves a new call from what it had leased. Holds of single calls in
-- flight are left alone: calls already running may finish. Returns the mc
-- taken from leases.
local function tg_shrink_leases(acct, hexp, hval)
  local f = redis.call('HMGET', acct, 'balance', 'reserved')
  local short = (tonumber(f[2]) or 0) - (tonumber(f[1]) or 0)
  if short <= 0 then return 0 end
  local taken = 0
  local all = redis.call('HGETALL', hval)
  for i = 1, #all, 2 do
    local id = all[i]
    if short > 0 and string.sub(id, 1, 6) == 'lease:' then
      local amt = tg_parse_hold(all[i + 1])
      local cut = amt
      if cut > short then cut = short end
      if cut == amt then
        redis.call('HDEL', hval, id)
        redis.call('ZREM', hexp, id)
      else
        redis.call('HSET', hval, id, string.format('%d', amt - cut) .. ':')
      end
      if cut > 0 then redis.call('HINCRBY', acct, 'reserved', 0 - cut) end
      short, taken = short - cut, taken + cut
    end
  end
  if taken > 0 then
    redis.call('PUBLISH', 'tg:leases:revoked', string.match(acct, '^{a:(.*)}:acct$'))
  end
  return taken
end
