-- delivery_claim: take up to n webhook deliveries that are due, each for
-- lease ms (its due time moves to now + lease, so that a worker that dies
-- mid-attempt leaves it to be taken again, never dropped).
-- KEYS[1] due deliveries {wh}:due (zset: delivery id → next attempt ms)
-- ARGV: now ms, lease ms, n
-- Returns the delivery ids taken.
local due = KEYS[1]
local now, lease, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, n)
for _, id in ipairs(ids) do redis.call('ZADD', due, now + lease, id) end
return ids
