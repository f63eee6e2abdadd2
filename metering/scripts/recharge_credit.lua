-- recharge_credit: credit a paid auto-recharge from OUR record of it, exactly
-- once per request (the worker and the payment_intent.succeeded webhook both
-- call it with the same reference), and end the request. (sell.lua is prepended.)
-- KEYS[1] account hash     {a:<id>}:acct
-- KEYS[2] references       {a:<id>}:refs
-- KEYS[3] ledger           {a:<id>}:ledger
-- KEYS[4] sale record      {a:<id>}:co:<request id>   (written by recharge_begin)
-- KEYS[5] payment record   {a:<id>}:pay:<payment>
-- KEYS[6] billing history  {a:<id>}:billing
-- KEYS[7] auto-recharge    {a:<id>}:ar
-- KEYS[8] outgoing events  {a:<id>}:events (events.lua: auto_recharge.succeeded)
-- ARGV: reference, request id, amount paid (minor), currency paid, payment id, now ms,
--       then field/value pairs for the ledger entry.
-- Returns {1, balance after, ledger entry id, credits} when credited now,
--         {0, balance, '', 0} when the reference was already applied,
--         {-1} no account, {-2} no such sale, {-3, expected amount, expected currency}.
local acct, refs, ledger, co, pay, hist, ar = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local ref, rid, paid, cur, pid, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

local function done()
  local s = redis.call('HMGET', ar, 'rid', 'state')
  if s[1] == rid and s[2] == 'inflight' then
    redis.call('HSET', ar, 'state', '', 'rid', '', 'failures', 0, 'last_error', '', 'last_recharge_at', now,
      'inflight_price', 0)
  end
end

local r = tg_sell(acct, refs, ledger, co, pay, hist, ref, paid, cur, pid, rid, now, 'auto_recharge', 7)
if r[1] == 0 or r[1] == 1 then done() end
if r[1] == 1 then
  tg_event(KEYS[8], 'auto_recharge.succeeded', 'credits_mc', string.format('%d', r[4]), 'balance_mc', string.format('%d', r[2]),
    'request', rid, 'payment', pid)
end
return r
