-- member_budget: set or remove a member's credit budget per period, shared by
-- the keys it created (keygov.lua reads it where their calls are held), and,
-- when an actor is named and the budget changes, its member.updated audit
-- entry in the same step (a retry that changes nothing records nothing).
-- KEYS[1] account hash   {a:<id>}:acct
-- KEYS[2] members        {a:<id>}:members
-- KEYS[3] member budgets {a:<id>}:mb (user → "mc:period")
-- KEYS[4] audit log      {a:<id>}:audit
-- ARGV: account id, user, "mc:period" ('' removes the budget),
--       actor ('': no audit entry), now (ms), the audit log's cap,
--       '1' when an owner (or the operator) sets it
-- Returns 1, or -1 when the account does not exist, -2 when user is not a
-- member, -4 when user is an owner and the setter is not (checked here, in
-- the step that writes: a promotion to owner just before cannot slip by).
local acct, members, mb = KEYS[1], KEYS[2], KEYS[3]
local account, user, v = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', acct) == 0 then return -1 end
local role = redis.call('HGET', members, user)
if not role and user == account and redis.call('EXISTS', members) == 0 then role = 'owner' end
if not role then return -2 end
if role == 'owner' and ARGV[7] ~= '1' then return -4 end
local cur = redis.call('HGET', mb, user) or ''
if v == '' then redis.call('HDEL', mb, user) else redis.call('HSET', mb, user, v) end
if ARGV[4] ~= '' and cur ~= v then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
    'actor', ARGV[4], 'action', 'member.updated', 'target', user, 'created_at', ARGV[5])
end
return 1
