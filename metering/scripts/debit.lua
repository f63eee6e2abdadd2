-- debit: prepended to the scripts that charge calls (settle, lease_flush), so
-- that a charge is applied and written the same way on both paths.

-- tg_debit applies charges to the account's totals: the balance, consumed,
-- the key's spend, and the over-hold counters (overCalls calls charged over
-- past their holds). settle calls it once per call, lease_flush once per
-- batch and key. Returns the balance after.
local function tg_debit(acct, kid, charge, over, overCalls)
  -- 0 - charge, not -charge: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
  local balance = redis.call('HINCRBY', acct, 'balance', 0 - charge)
  redis.call('HINCRBY', acct, 'consumed', charge)
  if kid ~= '' then redis.call('HINCRBY', acct, 'k:' .. kid .. ':used', charge) end
  if overCalls > 0 then
    redis.call('HINCRBY', acct, 'over_hold_calls', overCalls)
    redis.call('HINCRBY', acct, 'over_hold_mc', over)
  end
  return balance
end

-- tg_write_charge writes one charged call's ledger entry and its cost record,
-- which points at the entry and marks the call settled. over is what the
-- charge exceeded the call's hold by (charged in full: Σ debits = Σ priced
-- usage); capped is 1 when the hold had expired and the charge was cut to what
-- was available. rec is the call's record as field/value strings. Returns the
-- entry id.
local function tg_write_charge(ledger, gen, recTTL, ref, charge, balance, over, capped, rec)
  local b, o = string.format('%d', balance), string.format('%d', over)
  local eid = redis.call('XADD', ledger, '*', 'type', 'usage', 'amount', string.format('%d', 0 - charge),
    'balance_after', b, 'ref', ref, 'over_hold', o, 'capped', capped, unpack(rec))
  -- The cost record points at its ledger entry instead of copying it: one
  -- small hash per call.
  redis.call('HSET', gen, 'settled', 1, 'charged', string.format('%d', charge), 'balance_after', b,
    'over_hold', o, 'capped', capped, 'entry', eid)
  redis.call('EXPIRE', gen, recTTL)
  return eid
end
