-- create_key: add an API key to an account, unless the account already has as
-- many active keys as the cap allows: counted and added in one step, so that
-- concurrent requests never get past the cap.
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] keys         {a:<id>}:keys       (hash: key id → metadata JSON)
-- KEYS[3] key hashes   {a:<id>}:keys:hash  (hash: key id → SHA-256 of the secret, hex)
-- KEYS[4] active keys  {a:<id>}:keys:active (set of the ids not revoked; RevokeKey removes one)
-- KEYS[5] audit log    {a:<id>}:audit (stream: the key.created entry, with the key)
-- KEYS[6] members      {a:<id>}:members (the creator must be a member)
-- ARGV: key id, metadata JSON, secret hash, credit limit mc ('0': none),
--       cap on the active (not revoked) keys, this one included (0: none),
--       the member who creates it ('': none; its budget covers the key, keygov.lua),
--       the actor for the audit entry ('': none), now (ms), the audit log's cap,
--       the account id.
-- Returns {1} when added, {0, active keys} when the cap is reached, {-1} when
-- the account does not exist, {-2} when the key id is taken, {-3} when the
-- member creating it is not (any more) a member: a member's removal, once
-- made, lets no key of its appear after it (billing revokes its keys after).
-- The API key lookup (tg:key:<hash>, another slot) is written by the caller
-- after this: a key is never usable before its account knows it.
local acct, keys, hashes, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, meta, hash, limit, cap, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if redis.call('EXISTS', acct) == 0 then return {-1} end
if redis.call('HEXISTS', keys, id) == 1 then return {-2} end
if member ~= '' then
  -- Before the first member change the account's own id is its only member.
  if redis.call('EXISTS', KEYS[6]) == 1 then
    if redis.call('HEXISTS', KEYS[6], member) == 0 then return {-3} end
  elseif member ~= ARGV[10] then
    return {-3}
  end
end
-- The active set, built once from the metadata for an account whose keys
-- predate it (marked keys_indexed): afterwards counting costs nothing, however
-- many keys were ever revoked. Active: what Store.Keys lists as not revoked
-- (metadata that does not decode is not listed, so not counted).
if redis.call('HGET', acct, 'keys_indexed') ~= '1' then
  local all = redis.call('HGETALL', keys)
  for i = 1, #all, 2 do
    local ok, k = pcall(cjson.decode, all[i + 1])
    if ok and type(k) == 'table' and k.revoked ~= true then redis.call('SADD', active, all[i]) end
  end
  redis.call('HSET', acct, 'keys_indexed', '1')
end
if cap > 0 then
  local n = redis.call('SCARD', active)
  if n >= cap then return {0, n} end
end
redis.call('SADD', active, id)
redis.call('HSET', keys, id, meta)
redis.call('HSET', hashes, id, hash)
if limit ~= '0' then redis.call('HSET', acct, 'k:' .. id .. ':limit', limit) end
if member ~= '' then redis.call('HSET', acct, 'k:' .. id .. ':m', member) end
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*',
    'actor', ARGV[7], 'action', 'key.created', 'target', id, 'created_at', ARGV[8])
end
return {1}
