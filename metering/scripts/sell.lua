-- sell.lua: prepended to fulfil.lua and recharge_credit.lua. tg_sell credits
-- a paid sale from OUR record of it (the checkout as sold), exactly once per
-- reference, and writes the ledger entry, the history entry and the payment
-- record that refunds and disputes find it by.
-- Returns {1, balance after, ledger entry id, credits} when credited now,
--         {0, balance, '', 0}                           when the reference was already applied,
--         {-1} no account, {-2} no such sale, {-3, expected amount, expected currency}.
local function tg_sell(acct, refs, ledger, co, pay, hist, ref, paid, cur, pid, sid, now, etype, extraFrom)
  if redis.call('EXISTS', acct) == 0 then return {-1} end
  if redis.call('SISMEMBER', refs, ref) == 1 then
    return {0, tonumber(redis.call('HGET', acct, 'balance')) or 0, '', 0}
  end
  local c = redis.call('HMGET', co, 'credits_mc', 'price_minor', 'currency', 'pack')
  if not c[1] then return {-2} end
  -- Amounts stay the decimal strings they were stored as: never a Lua number's
  -- formatting (tostring and '..' keep only 14 significant digits).
  local credits, price, currency, pack = c[1], c[2], c[3], c[4]
  if tonumber(price) ~= paid or currency ~= cur then return {-3, tonumber(price), currency} end

  redis.call('SADD', refs, ref)
  local balance = redis.call('HINCRBY', acct, 'balance', credits)
  redis.call('HINCRBY', acct, 'purchased', credits)
  local rec = {'type', etype, 'amount', credits, 'balance_after', balance, 'ref', ref,
    'pack', pack, 'price_minor', price, 'currency', currency, 'session_id', sid,
    'stripe_payment_id', pid, 'created_at', now}
  for i = extraFrom, #ARGV do rec[#rec + 1] = ARGV[i] end
  local eid = redis.call('XADD', ledger, '*', unpack(rec))
  redis.call('XADD', hist, eid, unpack(rec))
  redis.call('HSET', co, 'fulfilled', 1, 'payment_id', pid)
  if pid ~= '' then
    redis.call('HSET', pay, 'credits_mc', credits, 'amount_minor', price, 'currency', currency,
      'session_id', sid, 'pack', pack, 'refunded_mc', 0, 'disputed_mc', 0, 'removed_mc', 0)
  end
  return {1, balance, eid, tonumber(credits)}
end
