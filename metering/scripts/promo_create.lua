-- promo_create: create a promotional code, all its fields at once, unless it
-- exists (a code half-written could be redeemed without its bounds). A
-- restore passes the accounts that redeemed it, written in the same step.
-- KEYS[1] code   {p:<code>}:code
-- KEYS[2] takers {p:<code>}:by
-- ARGV: credits mc, max redemptions (0: no bound), expires_at ms (0: never),
--       grant ttl ms (0: never), created_at ms, then the accounts that redeemed it
-- Returns 1 when created, 0 when the code exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'credits_mc', ARGV[1], 'max', ARGV[2], 'expires_at', ARGV[3], 'grant_ttl', ARGV[4],
  'created_at', ARGV[5], 'redeemed', #ARGV - 5)
for i = 6, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
