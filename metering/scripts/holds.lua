-- holds: prepended to the scripts that place holds or leases (reserve,
-- lease_grant), so that expired holds are dropped in exactly one way.
--
-- tg_sweep drops every hold whose expiry has passed and gives its credits
-- back: a proxy that died mid-call (or with a lease) frees them here.
local function tg_sweep(acct, hexp, hval, now)
  local expired = redis.call('ZRANGEBYSCORE', hexp, '-inf', now)
  for _, h in ipairs(expired) do
    local v = redis.call('HGET', hval, h)
    if v then
      local sep = string.find(v, ':', 1, true)
      local amt, k = tonumber(string.sub(v, 1, sep - 1)), string.sub(v, sep + 1)
      -- 0 - amt, not -amt: a zero hold's -0 reaches Redis as "-0", which HINCRBY refuses.
      redis.call('HINCRBY', acct, 'reserved', 0 - amt)
      if k ~= '' then redis.call('HINCRBY', acct, 'k:' .. k .. ':res', 0 - amt) end
      redis.call('HDEL', hval, h)
    end
    redis.call('ZREM', hexp, h)
  end
end

-- tg_now is Redis's clock in milliseconds.
local function tg_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
