-- create_key: add an API key to an account, unless the account already has as
-- many active keys as the cap allows: counted and added in one step, so that
-- concurrent requests never get past the cap.
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] keys         {a:<id>}:keys       (hash: key id → metadata JSON)
-- KEYS[3] key hashes   {a:<id>}:keys:hash  (hash: key id → SHA-256 of the secret, hex)
-- ARGV: key id, metadata JSON, secret hash, credit limit mc ('0': none),
--       cap on the active (not revoked) keys, this one included (0: none).
-- Returns {1} when added, {0, active keys} when the cap is reached, {-1} when
-- the account does not exist, {-2} when the key id is taken.
-- The API key lookup (tg:key:<hash>, another slot) is written by the caller
-- after this: a key is never usable before its account knows it.
local acct, keys, hashes = KEYS[1], KEYS[2], KEYS[3]
local id, meta, hash, limit, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', acct) == 0 then return {-1} end
if redis.call('HEXISTS', keys, id) == 1 then return {-2} end
if cap > 0 then
  -- Active: what Store.Keys lists as not revoked (metadata that does not
  -- decode is not listed, so not counted).
  local active = 0
  for _, v in ipairs(redis.call('HVALS', keys)) do
    local ok, k = pcall(cjson.decode, v)
    if ok and type(k) == 'table' and k.revoked ~= true then active = active + 1 end
  end
  if active >= cap then return {0, active} end
end
redis.call('HSET', keys, id, meta)
redis.call('HSET', hashes, id, hash)
if limit ~= '0' then redis.call('HSET', acct, 'k:' .. id .. ':limit', limit) end
return {1}
