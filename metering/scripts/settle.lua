-- settle: turn a call's hold into its charge, exactly once. (holds.lua,
-- keygov.lua, debit.lua, period.lua and period_holds.lua are prepended.)
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] hold expiry  {a:<id>}:hexp
-- KEYS[3] hold values  {a:<id>}:hval
-- KEYS[4] cost record  {a:<id>}:gen:<hold id>  (the hold id is the call's request id; its
--                      settled field makes a second settle a replay)
-- KEYS[5] ledger       {a:<id>}:ledger         (stream)
-- KEYS[6] plan         {a:<id>}:plan           (hash, read: the billing period)
-- KEYS[7] usage        {a:<id>}:usage          (hash: the period's counters)
-- KEYS[8] period hold expiry {a:<id>}:phexp     (the call's period hold, if admitted under a plan)
-- KEYS[9] period hold values {a:<id>}:phval
-- KEYS[10] the day's usage  {a:<id>}:day:<YYYY-MM-DD> (UTC, the settle's day)
-- KEYS[11] key rules   {a:<id>}:kg:<key id>   (a governed key: its budget period and tpm bucket)
-- KEYS[12] member budgets {a:<id>}:mb          (the key's member: its budget period)
-- ARGV: hold id, key id, cost mc, record ttl s, calendar month start (unix s),
--       input tokens, output tokens, then field/value pairs of the usage record.
-- The call is charged its whole cost, even past its hold (the excess is
-- recorded as over_hold, and leases shrink should the account now be short).
-- Only a call whose hold had expired is charged at most what is available
-- (capped): its credits may have gone to other calls meanwhile.
-- Returns {balance after, charged, capped (0/1), replay (0/1), over hold mc},
-- or {-1} when the account does not exist.
local acct, hexp, hval, gen, ledger, plan, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local phexp, phval, day, kg = KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local id, kid, cost, recTTL = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local month, inTok, outTok = ARGV[5], ARGV[6], ARGV[7]

local prev = redis.call('HMGET', gen, 'settled', 'balance_after', 'charged', 'capped', 'over_hold')
if prev[1] then
  return {tonumber(prev[2]), tonumber(prev[3]), tonumber(prev[4]) or 0, 1, tonumber(prev[5]) or 0}
end
if redis.call('EXISTS', acct) == 0 then return {-1} end

local charge, capped, over = cost, 0, 0
local amt, hkid = tg_drop_hold(acct, hexp, hval, id)
if amt then
  kid = hkid -- the key the hold was placed under is authoritative
  if charge > amt then over = charge - amt end
else
  -- The hold expired before the call ended: charge what is free, never more.
  local f = redis.call('HMGET', acct, 'balance', 'reserved')
  local avail = (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0)
  if avail < 0 then avail = 0 end
  if charge > avail then charge, capped = avail, 1 end
end

local overCalls = 0
if over > 0 then overCalls = 1 end
local balance = tg_debit(acct, kid, charge, over, overCalls)
if kid ~= '' and kid == ARGV[2] then
  local now = tg_now()
  tg_key_end(kg, gen, charge, tonumber(inTok) + tonumber(outTok), math.floor(now / 1000), now, month)
  tg_member_end(acct, KEYS[12], kid, charge, math.floor(now / 1000), month)
end
local rec = {unpack(ARGV, 8)}
if kid ~= '' then local n = #rec; rec[n + 1], rec[n + 2] = 'key_id', kid end -- the key charged, for the books
tg_write_charge(ledger, gen, recTTL, id, charge, balance, over, capped, rec)
tg_count_day(day, tg_rec_model(rec), 1, inTok, outTok, charge)
-- The period's counters, which the plan limits and the usage API read; the
-- call's period hold is dropped.
tg_count(plan, usage, month, tg_end_call(plan, usage, phexp, phval, gen, id, month, true), inTok, outTok, charge)
if over > 0 then tg_shrink_leases(acct, hexp, hval) end
return {balance, charge, capped, 0, over}
