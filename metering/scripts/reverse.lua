-- reverse: take back the credits of a purchase after a refund or a dispute, never more
-- than it bought in all; give back what a dispute took when it closes in our favour.
-- KEYS[1] account hash     {a:<id>}:acct
-- KEYS[2] references       {a:<id>}:refs            (set)
-- KEYS[3] ledger           {a:<id>}:ledger          (stream)
-- KEYS[4] payment record   {a:<id>}:pay:<payment>   (hash, written by fulfil)
-- KEYS[5] billing history  {a:<id>}:billing         (stream)
-- KEYS[6] hold expiry      {a:<id>}:hexp
-- KEYS[7] hold values      {a:<id>}:hval
-- KEYS[8] promotional grants by expiry   {a:<id>}:promo  (promo.lua is prepended: a
-- KEYS[9] promotional grants' remainders {a:<id>}:promov  reversal is taken from paid
--                                                         alone (tg_promo_debit); a
--                                                         dispute remembers the grants' parts
--                                                         under '<ref>:promo', and its won
--                                                         closing gives them back to the
--                                                         same grants, recorded on its entry
--                                                         as promo_back and promo_grants)
-- KEYS[10] outgoing events {a:<id>}:events (events.lua: credits.reversed, balance.low)
-- (holds.lua is prepended: a reversal that leaves the account short shrinks its
-- leases, and the replicas holding them are told at once.)
-- ARGV: kind ('refund' | 'dispute' | 'dispute_won'), reference, mc, created_at ms,
--       payment id, linked reference, then field/value pairs for the ledger entry.
--   refund:      mc is the credits the payment's cumulative refunded amount stands for;
--                the refunded share only ever grows (an older, smaller refund event
--                changes nothing).
--   dispute:     mc is added to the disputed share, once per reference, and remembered
--                under the reference; nothing is taken when the linked reference (the
--                dispute's closing in our favour, delivered first) is already recorded.
--   dispute_won: the dispute whose reference is linked closed won (or as an inquiry
--                that never withdrew funds): the mc it added leaves the disputed share,
--                once. Delivered before the dispute itself, it is only recorded (in
--                the references and as won_first:<dispute ref> on the payment record).
-- The credits removed in all are min(bought, refunded + disputed); a change of that
-- figure is one ledger entry (negative when taking, positive when giving back).
-- Returns {1, balance after, ledger entry id, mc removed now (negative: given back),
--         promotional mc given back}
--         when the balance changed, {0, balance, '', 0} when nothing did (already
--         applied, or nothing to take), {-1} when the account does not exist, {-2}
--         when the purchase is unknown.
local acct, refs, ledger, pay, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind, ref, mc, now, pid, linked = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

if redis.call('EXISTS', acct) == 0 then return {-1} end
local f = redis.call('HMGET', pay, 'credits_mc', 'refunded_mc', 'disputed_mc', 'removed_mc', 'session_id')
if not f[1] then return {-2} end
local balance = tonumber(redis.call('HGET', acct, 'balance')) or 0
if redis.call('SADD', refs, ref) == 0 then return {0, balance, '', 0} end

-- Amounts are below 2^53, exact as Lua numbers; they are written back with
-- string.format('%d'), never through tostring or '..' (14 significant digits).
local function int(n) return string.format('%d', n) end
local credits, refunded, disputed, removed = tonumber(f[1]), tonumber(f[2]) or 0, tonumber(f[3]) or 0, tonumber(f[4]) or 0
if mc < 0 then mc = 0 end
if kind == 'refund' then
  if mc > refunded then refunded = mc end
elseif kind == 'dispute' then
  if linked ~= '' and redis.call('SISMEMBER', refs, linked) == 1 then return {0, balance, '', 0} end
  if redis.call('HEXISTS', pay, 'won_first:' .. ref) == 1 then return {0, balance, '', 0} end
  disputed = disputed + mc
  redis.call('HSET', pay, ref, int(mc))
else
  if redis.call('SISMEMBER', refs, linked) == 0 then
    -- Won before it opened: remembered on the payment record too, which the
    -- books keep (the references are rebuilt from the journal, where this
    -- leaves no entry), so that the dispute delivered after a restore still
    -- takes nothing.
    redis.call('HSET', pay, 'won_first:' .. linked, '1')
    return {0, balance, '', 0}
  end
  mc = tonumber(redis.call('HGET', pay, linked)) or 0
  disputed = disputed - mc
  if disputed < 0 then disputed = 0 end
end
local total = refunded + disputed
if total > credits then total = credits end
local delta = total - removed
redis.call('HSET', pay, 'refunded_mc', int(refunded), 'disputed_mc', int(disputed))
if delta == 0 or (delta < 0 and kind ~= 'dispute_won') then return {0, balance, '', 0} end

local amount = int(0 - delta)
redis.call('HSET', pay, 'removed_mc', int(total))
balance = redis.call('HINCRBY', acct, 'balance', amount)
redis.call('HINCRBY', acct, 'purchased', amount)
local rec = {'type', kind, 'amount', amount, 'balance_after', balance, 'ref', ref,
  'session_id', f[5] or '', 'stripe_payment_id', pid, 'created_at', now}
for i = 7, #ARGV do rec[#rec + 1] = ARGV[i] end
local promoBack = 0
if delta > 0 then
  local parts = {}
  tg_promo_field(rec, tg_promo_debit(acct, KEYS[8], KEYS[9], delta, parts))
  if kind == 'dispute' and #parts > 0 then redis.call('HSET', pay, ref .. ':promo', tg_promo_encode(parts)) end
elseif kind == 'dispute_won' then
  -- Back to the side it was taken from: the promotional part to its grants.
  local back
  promoBack, back = tg_promo_give(acct, KEYS[8], KEYS[9], tg_promo_decode(redis.call('HGET', pay, linked .. ':promo')), 0 - delta)
  if promoBack > 0 then
    rec[#rec + 1] = 'promo_back'
    rec[#rec + 1] = int(promoBack)
    rec[#rec + 1] = 'promo_grants'
    rec[#rec + 1] = tg_promo_encode(back)
  end
end
local eid = redis.call('XADD', ledger, '*', unpack(rec))
redis.call('XADD', hist, eid, unpack(rec))
if delta > 0 then
  tg_shrink_leases(acct, KEYS[6], KEYS[7])
  tg_low_balance(acct, KEYS[10], balance + delta, balance)
end
local moved = delta
if moved < 0 then moved = 0 - moved end -- a won dispute gives back: kind says which way
tg_event(KEYS[10], 'credits.reversed', 'kind', kind, 'credits_mc', int(moved), 'balance_mc', int(balance),
  'ref', ref, 'payment', pid)
return {1, balance, eid, delta, promoBack}
