-- restore_account: rebuild one account from the durable books into a Redis
-- that lost it (tollgate admin restore). Every key is the account's own slot;
-- the global lookups (tg:key:…, tg:cus:…, tg:pay:…) are written by the caller
-- afterwards, so a key is never usable before its account exists.
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] ledger       {a:<id>}:ledger
-- KEYS[3] history      {a:<id>}:billing
-- KEYS[4] references   {a:<id>}:refs
-- KEYS[5] keys         {a:<id>}:keys
-- KEYS[6] key hashes   {a:<id>}:keys:hash
-- KEYS[7] active keys  {a:<id>}:keys:active
-- KEYS[8…] the account's other records, in the order of ARGV's "records",
--          then the governed keys' rules {a:<id>}:kg:<key id>, in the order of "rules"
-- ARGV[1] JSON: {"acct": [field, value, …], "last": [id, field, value, …] | [],
--   "history": [[id, field, value, …], …], "refs": [ref, …],
--   "keys": [[id, meta, hash, active "1"|"0", limit, spent, member who created it or ""], …],
--   "records": [[field, value, …], …], "rules": [[field, value, …], …]}
-- Every number is a string: cjson would turn it into a double.
-- All of the account or nothing: the one write that can fail (the XADD) comes
-- first, and nothing else of the account is written by anyone else.
-- Returns 1 when restored, 0 when the account already exists (left alone).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local img = cjson.decode(ARGV[1])
if #img.last > 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  -- The newest entry, with its id: the stream's next ids come after it, so
  -- the shipper's cursor stays valid. (A ledger Redis still holds already
  -- continues after it.)
  redis.call('XADD', KEYS[2], img.last[1], unpack(img.last, 2))
end
redis.call('HSET', KEYS[1], unpack(img.acct))
redis.call('HSET', KEYS[1], 'keys_indexed', '1')
if redis.call('EXISTS', KEYS[3]) == 0 then
  for _, e in ipairs(img.history) do redis.call('XADD', KEYS[3], e[1], unpack(e, 2)) end
end
for _, r in ipairs(img.refs) do redis.call('SADD', KEYS[4], r) end
for _, k in ipairs(img.keys) do
  redis.call('HSET', KEYS[5], k[1], k[2])
  redis.call('HSET', KEYS[6], k[1], k[3])
  if k[4] == '1' then redis.call('SADD', KEYS[7], k[1]) end
  if k[5] ~= '0' then redis.call('HSET', KEYS[1], 'k:' .. k[1] .. ':limit', k[5]) end
  if k[6] ~= '0' then redis.call('HSET', KEYS[1], 'k:' .. k[1] .. ':used', k[6]) end
  if k[7] ~= '' then redis.call('HSET', KEYS[1], 'k:' .. k[1] .. ':m', k[7]) end
end
for i, r in ipairs(img.records) do
  if #r > 0 then redis.call('HSET', KEYS[7 + i], unpack(r)) end
end
for i, r in ipairs(img.rules) do
  local kg = KEYS[7 + #img.records + i]
  redis.call('DEL', kg)
  if #r > 0 then redis.call('HSET', kg, unpack(r)) end
end
return 1
