-- key_limited: mark an API key's lookup limited ('1': its calls are held one
-- by one in Redis) or not ('0'), only while the lookup exists (a revoked
-- key's is gone and stays gone), and, when that changes it, tell every
-- Store's key cache (keywatch.go) in the same step.
-- KEYS[1] tg:key:<sha256>
-- ARGV: '1' or '0', the key cache channel, the key's sha256 (hex)
-- Returns 1 when the lookup exists, 0 when it does not.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'limited') ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'limited', ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
