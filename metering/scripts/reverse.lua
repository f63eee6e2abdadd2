-- reverse: take back the credits of a purchase after a refund or a dispute, never more
-- than it bought in all.
-- KEYS[1] account hash     {a:<id>}:acct
-- KEYS[2] references       {a:<id>}:refs            (set)
-- KEYS[3] ledger           {a:<id>}:ledger          (stream)
-- KEYS[4] payment record   {a:<id>}:pay:<payment>   (hash, written by fulfil)
-- KEYS[5] billing history  {a:<id>}:billing         (stream)
-- ARGV: kind ('refund' | 'dispute'), reference, mc, created_at ms, payment id, then field/value
--       pairs for the ledger entry.
--   refund:  mc is the credits the payment's cumulative refunded amount stands for; the
--            refunded share only ever grows (an older, smaller refund event changes nothing).
--   dispute: mc is added to the disputed share, once per reference.
-- The credits removed in all are min(bought, refunded + disputed).
-- Returns {1, balance after, ledger entry id, mc removed now} when credits were removed,
--         {0, balance, '', 0} when nothing was (already applied, or nothing left to take),
--         {-1} when the account does not exist, {-2} when the purchase is unknown.
local acct, refs, ledger, pay, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind, ref, mc, now, pid = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]

if redis.call('EXISTS', acct) == 0 then return {-1} end
local f = redis.call('HMGET', pay, 'credits_mc', 'refunded_mc', 'disputed_mc', 'removed_mc', 'session_id')
if not f[1] then return {-2} end
local balance = tonumber(redis.call('HGET', acct, 'balance')) or 0
if redis.call('SADD', refs, ref) == 0 then return {0, balance, '', 0} end

-- Amounts are below 2^53, exact as Lua numbers; they are written back with
-- string.format('%d'), never through tostring or '..' (14 significant digits).
local credits, refunded, disputed, removed = tonumber(f[1]), tonumber(f[2]) or 0, tonumber(f[3]) or 0, tonumber(f[4]) or 0
if mc < 0 then mc = 0 end
if kind == 'refund' then
  if mc > refunded then refunded = mc end
else
  disputed = disputed + mc
end
local total = refunded + disputed
if total > credits then total = credits end
local delta = total - removed
local function int(n) return string.format('%d', n) end
redis.call('HSET', pay, 'refunded_mc', int(refunded), 'disputed_mc', int(disputed))
if delta <= 0 then return {0, balance, '', 0} end

local debit = int(0 - delta)
redis.call('HSET', pay, 'removed_mc', int(total))
balance = redis.call('HINCRBY', acct, 'balance', debit)
redis.call('HINCRBY', acct, 'purchased', debit)
local rec = {'type', kind, 'amount', debit, 'balance_after', balance, 'ref', ref,
  'session_id', f[5] or '', 'stripe_payment_id', pid, 'created_at', now}
for i = 6, #ARGV do rec[#rec + 1] = ARGV[i] end
local eid = redis.call('XADD', ledger, '*', unpack(rec))
redis.call('XADD', hist, eid, unpack(rec))
return {1, balance, eid, delta}
