-- members: add, change or remove an account's member (teams), atomically
-- with the rules that keep a team governable and with the change's audit
-- entry (one script: a change is never applied without its entry).
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] members      {a:<id>}:members (hash: user → role)
-- KEYS[3] budgets      {a:<id>}:mb (a removed member's budget goes with it)
-- KEYS[4] audit log    {a:<id>}:audit (stream)
-- ARGV: op ("set" | "update": "set" of a member only, never an add |
--       "del" | "check": would "del" succeed, changing nothing),
--       account id, user, role (set), actor is an owner ("1" | "0"),
--       the most members an account may have, actor, now (ms), audit cap.
-- Before the first change the account's own id is its owner: the hash is
-- seeded with it, so that it is counted (and may be demoted once another
-- owner exists).
-- Returns {1, previous role or "", audit entry id or ""} when changed (or
-- when "check" finds the removal allowed; a "set" to the role the user has
-- changes and records nothing), {-1} no such account, {-2} no such member
-- (update, del, check), {-3} the last owner would go, {-4} only an owner may grant,
-- change or remove the owner role, {-5} too many members.
local acct, members = KEYS[1], KEYS[2]
local op, account, user, role, actorOwner, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local update = op == 'update'
if update then op = 'set' end
if redis.call('EXISTS', acct) == 0 then return {-1} end
local seeded = redis.call('EXISTS', members) == 1
local cur = false
if seeded then
  cur = redis.call('HGET', members, user)
elseif user == account then
  cur = 'owner'
end
if not cur then
  if op ~= 'set' or update then return {-2} end
  cur = ''
end
if actorOwner ~= '1' and (cur == 'owner' or role == 'owner') then return {-4} end
if cur == 'owner' and (op ~= 'set' or role ~= 'owner') then
  local owners = 1
  if seeded then
    owners = 0
    for _, r in ipairs(redis.call('HVALS', members)) do if r == 'owner' then owners = owners + 1 end end
  end
  if owners <= 1 then return {-3} end
end
if op == 'set' and cur == '' then
  local n = 1
  if seeded then n = redis.call('HLEN', members) end
  if n >= cap then return {-5} end
end
if op == 'check' then return {1, cur, ''} end
if op == 'set' and cur == role then return {1, cur, ''} end
if not seeded then redis.call('HSET', members, account, 'owner') end
local action
if op == 'del' then
  redis.call('HDEL', members, user)
  redis.call('HDEL', KEYS[3], user)
  action = 'member.removed'
else
  redis.call('HSET', members, user, role)
  action = 'member.updated'
  if cur == '' then action = 'member.added' end
end
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*',
  'actor', ARGV[7], 'action', action, 'target', user, 'created_at', ARGV[8])
return {1, cur, id}
