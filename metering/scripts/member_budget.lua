-- member_budget: set or remove a member's credit budget per period, shared by
-- the keys it created (keygov.lua reads it where their calls are held).
-- KEYS[1] account hash   {a:<id>}:acct
-- KEYS[2] members        {a:<id>}:members
-- KEYS[3] member budgets {a:<id>}:mb (user → "mc:period")
-- ARGV: account id, user, "mc:period" ('' removes the budget)
-- Returns 1, or -1 when the account does not exist, -2 when user is not a member.
local acct, members, mb = KEYS[1], KEYS[2], KEYS[3]
local account, user, v = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', acct) == 0 then return -1 end
local member = redis.call('HEXISTS', members, user) == 1 or
  (user == account and redis.call('EXISTS', members) == 0)
if not member then return -2 end
if v == '' then redis.call('HDEL', mb, user) else redis.call('HSET', mb, user, v) end
return 1
