-- promo: promotional credits, prepended to every script that debits a
-- balance (settle, lease_flush, credit, reverse) or grants or expires
-- promotional credits (promo_redeem, promo_expire), so that the rule of the
-- split has one home.
-- An account's balance is paid + promotional. acct.promo is the promotional
-- part; each grant's remainder is pv[grant] with its expiry (ms; TG_PROMO_NEVER
-- when it does not expire) as its score in pz. Σ pv = acct.promo, always, and
-- 0 ≤ promo ≤ max(balance, 0): paid credits never pay for promotional ones.
-- A charge is paid from promotional credits first, earliest-expiring grant
-- first (ties: the grant id's order); a debit that is not a charge (a refund,
-- a dispute, a negative adjustment) takes from them only what the balance no
-- longer covers. Whatever is taken is recorded on the entry as 'promo'.

local TG_PROMO_NEVER = 253402300799000 -- 9999-12-31T23:59:59Z

-- tg_promo_take takes up to amount mc from the promotional grants, earliest
-- expiry first, and returns what it took.
local function tg_promo_take(acct, pz, pv, amount)
  if amount <= 0 then return 0 end
  local left = tonumber(redis.call('HGET', acct, 'promo')) or 0
  if left <= 0 then return 0 end
  local want = amount
  if want > left then want = left end
  local taken = 0
  while taken < want do
    local g = redis.call('ZRANGE', pz, 0, 0)
    if #g == 0 then break end
    local rem = tonumber(redis.call('HGET', pv, g[1])) or 0
    local t = want - taken
    if t >= rem then
      t = rem
      redis.call('ZREM', pz, g[1])
      redis.call('HDEL', pv, g[1])
    else
      redis.call('HINCRBY', pv, g[1], 0 - t)
    end
    taken = taken + t
  end
  if taken > 0 then redis.call('HINCRBY', acct, 'promo', 0 - taken) end
  return taken
end

-- tg_promo_clamp keeps promo ≤ max(balance, 0) after a debit that is not a
-- charge; returns what it took from the grants.
local function tg_promo_clamp(acct, pz, pv)
  local f = redis.call('HMGET', acct, 'balance', 'promo')
  local bal, left = tonumber(f[1]) or 0, tonumber(f[2]) or 0
  if bal < 0 then bal = 0 end
  if left <= bal then return 0 end
  return tg_promo_take(acct, pz, pv, left - bal)
end

-- tg_promo_field appends the 'promo' field of an entry to rec when taken > 0.
local function tg_promo_field(rec, taken)
  if taken > 0 then
    rec[#rec + 1] = 'promo'
    rec[#rec + 1] = string.format('%d', taken)
  end
  return rec
end
