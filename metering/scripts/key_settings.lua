-- key_settings: replace an API key's rules (a governed key's settings), with
-- its metadata, in one step. (The API key lookup, another slot, is updated by
-- the caller after this.)
-- KEYS[1] keys       {a:<id>}:keys          (hash: key id → metadata JSON)
-- KEYS[2] key rules  {a:<id>}:kg:<key id>   (see keygov.lua)
-- ARGV: key id, the metadata read (compare-and-set: another change in
--       between refuses this one), the new metadata, then the rules, '' for
--       none: exp, models, par, rpm, tpm, budget, bper
-- Returns 1, 0 when the metadata changed since it was read, -1 when the key
-- does not exist.
local keys, kg = KEYS[1], KEYS[2]
local cur = redis.call('HGET', keys, ARGV[1])
if not cur then return -1 end
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', keys, ARGV[1], ARGV[3])
local names = {'exp', 'models', 'par', 'rpm', 'tpm', 'budget', 'bper'}
for i, name in ipairs(names) do
  local v = ARGV[3 + i]
  if v == '' then redis.call('HDEL', kg, name) else redis.call('HSET', kg, name, v) end
end
-- A limit removed takes its bucket with it; a budget keeps what was spent in
-- the period (changing its amount does not forget it).
if ARGV[7] == '' then redis.call('HDEL', kg, 'rl', 'rt') end
if ARGV[8] == '' then redis.call('HDEL', kg, 'tl', 'tt') end
return 1
