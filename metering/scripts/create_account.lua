-- create_account: create an account hash once.
-- KEYS[1] account hash {a:<id>}:acct
-- ARGV: created_at (unix seconds)
-- Returns 1 when created, 0 when it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'balance', 0, 'reserved', 0, 'purchased', 0, 'granted', 0, 'adjusted', 0, 'consumed', 0,
  'created_at', ARGV[1])
return 1
