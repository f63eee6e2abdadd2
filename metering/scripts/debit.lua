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

-- tg_rec_model is the model named in a call's record (field/value strings).
local function tg_rec_model(rec)
  for j = 1, #rec - 1, 2 do
    if rec[j] == 'model' then return rec[j + 1] end
  end
  return ''
end

-- tg_count_day adds n charged calls of one model to the account's usage of
-- the day (UTC): one hash per day, {a:<id>}:day:<YYYY-MM-DD>, fields
-- "<counter>:<model>" with counter r (requests), i (input tokens, cached and
-- cache writes included), o (output tokens) and c (mc charged); it expires 40
-- days after its last write. Only charged calls come here: failed calls are
-- released, never counted.
local TG_DAY_TTL = 40 * 86400
local function tg_count_day(day, model, n, inTok, outTok, charge)
  redis.call('HINCRBY', day, 'r:' .. model, n)
  redis.call('HINCRBY', day, 'i:' .. model, inTok)
  redis.call('HINCRBY', day, 'o:' .. model, outTok)
  redis.call('HINCRBY', day, 'c:' .. model, charge)
  redis.call('EXPIRE', day, TG_DAY_TTL)
end
