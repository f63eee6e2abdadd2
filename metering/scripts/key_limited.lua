-- key_limited: mark an API key's lookup limited ('1': its calls are held one
-- by one in Redis) or not ('0'), only while the lookup exists (a revoked
-- key's is gone and stays gone).
-- KEYS[1] tg:key:<sha256>
-- ARGV[1] '1' or '0'
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'limited', ARGV[1])
return 1
