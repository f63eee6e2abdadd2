-- delivery_schedule: create a webhook delivery, pending and due now, unless
-- it exists: the record with all its fields, its TTL, its due entry and its
-- place in the operator's list, in one step (a record without a body, which
-- a crash between two steps once left, is not a delivery: it is created).
-- KEYS[1] delivery     {wh}:d:<id> (hash)
-- KEYS[2] due          {wh}:due    (zset: delivery id → next attempt ms)
-- KEYS[3] the list     {wh}:index  (zset: delivery id → creation ms)
-- ARGV: id, now ms, ttl ms, list bound, then the delivery's field/value pairs
--       (a non-empty body among them).
-- Returns 1 when created, 0 when the delivery exists.
local d, due, index = KEYS[1], KEYS[2], KEYS[3]
local id, now, ttl, bound = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local body = redis.call('HGET', d, 'body')
if body and body ~= '' then return 0 end
redis.call('HSET', d, unpack(ARGV, 5))
redis.call('PEXPIRE', d, ttl)
redis.call('ZADD', due, now, id)
redis.call('ZADD', index, now, id)
redis.call('ZREMRANGEBYRANK', index, 0, 0 - bound - 1)
return 1
