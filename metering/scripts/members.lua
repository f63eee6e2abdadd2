-- members: add, change or remove an account's member (teams), atomically
-- with the rules that keep a team governable.
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] members      {a:<id>}:members (hash: user → role)
-- KEYS[3] budgets      {a:<id>}:mb (a removed member's budget goes with it)
-- ARGV: op ("set" | "del"), account id, user, role (set), actor is an owner ("1" | "0"),
--       the most members an account may have.
-- Before the first change the account's own id is its owner: the hash is
-- seeded with it, so that it is counted (and may be demoted once another
-- owner exists).
-- Returns {1, previous role or ""} when changed,
-- {-1} no such account, {-2} no such member (del), {-3} the last owner would
-- go, {-4} only an owner may grant, change or remove the owner role,
-- {-5} too many members.
local acct, members = KEYS[1], KEYS[2]
local op, account, user, role, actorOwner, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('EXISTS', acct) == 0 then return {-1} end
if redis.call('EXISTS', members) == 0 then redis.call('HSET', members, account, 'owner') end
local cur = redis.call('HGET', members, user)
if not cur then
  if op == 'del' then return {-2} end
  cur = ''
end
if actorOwner ~= '1' and (cur == 'owner' or role == 'owner') then return {-4} end
if cur == 'owner' and (op == 'del' or role ~= 'owner') then
  local owners, all = 0, redis.call('HVALS', members)
  for _, r in ipairs(all) do if r == 'owner' then owners = owners + 1 end end
  if owners <= 1 then return {-3} end
end
if op == 'del' then
  redis.call('HDEL', members, user)
  redis.call('HDEL', KEYS[3], user)
else
  if cur == '' and redis.call('HLEN', members) >= cap then return {-5} end
  redis.call('HSET', members, user, role)
end
return {1, cur}
