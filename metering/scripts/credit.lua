-- credit: an operator's grant or adjustment, at most once per reference, ever.
-- Each kind has its own total: a grant adds to 'granted', an adjustment (either
-- sign) to 'adjusted'; 'purchased' counts purchases only (sell.lua, reverse.lua).
-- KEYS[1] account hash {a:<id>}:acct
-- KEYS[2] references   {a:<id>}:refs   (set)
-- KEYS[3] ledger       {a:<id>}:ledger (stream)
-- KEYS[4] hold expiry  {a:<id>}:hexp
-- KEYS[5] hold values  {a:<id>}:hval
-- KEYS[6] promotional grants by expiry {a:<id>}:promo  (zset; promo.lua is prepended:
-- KEYS[7] promotional grants' remainders {a:<id>}:promov  a negative adjustment
--         is taken from paid alone, even into a debt: tg_promo_debit)
-- KEYS[8] outgoing events {a:<id>}:events (events.lua: a negative adjustment may cross the low-balance threshold)
-- (holds.lua is prepended: an adjustment that leaves the account short shrinks its leases.)
-- ARGV: signed amount mc, reference, entry type ('grant' | 'adjustment'), the
--       reference as the CLI applied it before operator references had their own
--       namespace ('' when none: then it is a sale's), then field/value pairs for
--       the ledger entry.
-- Returns {1, balance after, ledger entry id} when applied, {0, balance, ""}
-- when the reference was already applied, {-1} when the account does not exist.
local acct, refs, ledger = KEYS[1], KEYS[2], KEYS[3]
local amount, ref, etype = ARGV[1], ARGV[2], ARGV[3]
local total = ({grant = 'granted', adjustment = 'adjusted'})[etype]
if not total then return redis.error_reply('credit: entry type ' .. etype .. ' is not an operator credit') end
if redis.call('EXISTS', acct) == 0 then return {-1} end
local legacy = ARGV[4]
if (legacy ~= '' and redis.call('SISMEMBER', refs, legacy) == 1) or redis.call('SADD', refs, ref) == 0 then
  return {0, tonumber(redis.call('HGET', acct, 'balance')) or 0, ''}
end
local balance = redis.call('HINCRBY', acct, 'balance', amount)
redis.call('HINCRBY', acct, total, amount)
local rec = {}
for i = 5, #ARGV do rec[#rec + 1] = ARGV[i] end
if tonumber(amount) < 0 then tg_promo_field(rec, tg_promo_debit(acct, KEYS[6], KEYS[7], 0 - tonumber(amount))) end
local eid = redis.call('XADD', ledger, '*', 'type', etype, 'amount', amount, 'balance_after', balance,
  'ref', ref, unpack(rec))
if tonumber(amount) < 0 then
  tg_shrink_leases(acct, KEYS[4], KEYS[5])
  tg_low_balance(acct, KEYS[8], balance - tonumber(amount), balance)
end
return {1, balance, eid}
