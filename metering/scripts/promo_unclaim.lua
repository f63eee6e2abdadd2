-- promo_unclaim: give back an account's claim of a promotional code that it
-- turned out to hold already (promo_grant found the reference: the code was
-- lost and created again), so that it takes none of the code's redemptions.
-- KEYS[1] code   {p:<code>}:code
-- KEYS[2] takers {p:<code>}:by
-- ARGV: account.
-- Returns 1 when a claim was given back, 0 when there was none.
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'redeemed', -1) end
return 1
