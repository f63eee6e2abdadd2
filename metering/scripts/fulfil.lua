-- fulfil: credit a paid checkout from OUR record of it, exactly once per session.
-- (sell.lua is prepended.)
-- KEYS[1] account hash     {a:<id>}:acct
-- KEYS[2] references       {a:<id>}:refs            (set)
-- KEYS[3] ledger           {a:<id>}:ledger          (stream)
-- KEYS[4] checkout record  {a:<id>}:co:<session>    (hash, written at checkout)
-- KEYS[5] payment record   {a:<id>}:pay:<payment>   (hash, written here; unused when no payment id)
-- KEYS[6] billing history  {a:<id>}:billing         (stream, same entry ids as the ledger)
-- KEYS[7] outgoing events  {a:<id>}:events          (events.lua: credits.purchased)
-- ARGV: reference, amount paid (minor units), currency paid, payment id ("" = none), session id,
--       created_at ms, then field/value pairs for the ledger entry.
-- Returns {1, balance after, ledger entry id, credits}   when credited now,
--         {0, balance, '', 0}                             when the reference was already applied,
--         {-1}                                            when the account does not exist,
--         {-2}                                            when there is no such checkout,
--         {-3, expected amount, expected currency}        when the payment does not match it.
local r = tg_sell(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6], 'purchase', 7)
if r[1] == 1 then
  tg_event(KEYS[7], 'credits.purchased', 'credits_mc', string.format('%d', r[4]), 'balance_mc', string.format('%d', r[2]),
    'session', ARGV[5], 'payment', ARGV[4])
end
return r
