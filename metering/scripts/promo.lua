-- promo: promotional credits, prepended to every script that debits a
-- balance (settle, lease_flush, credit, reverse) or grants or expires
-- promotional credits (promo_redeem, promo_expire), so that the rule of the
-- split has one home.
-- An account's balance is paid + promotional. acct.promo is the promotional
-- part; each grant's remainder is pv[grant] with its expiry (ms; TG_PROMO_NEVER
-- when it does not expire) as its score in pz. Σ pv = acct.promo, always,
-- promo ≥ 0, and paid = balance − promo exactly through every path (paid may
-- be negative: a grant to an account in debt adds to balance and promo alike
-- and leaves the debt as it was; promotional credits never pay a debt).
-- A charge is paid from promotional credits first, earliest-expiring grant
-- first (ties: the grant id's order); a debit that is not a charge (a refund,
-- a dispute, a negative adjustment) is paid by paid alone (tg_promo_debit).
-- Whatever a debit takes from the grants is recorded on its entry as 'promo'.

local TG_PROMO_NEVER = 253402300799000 -- 9999-12-31T23:59:59Z

-- tg_promo_take takes up to amount mc from the promotional grants, earliest
-- expiry first, and returns what it took. When parts is a table, each grant's
-- part is appended to it as {grant, mc, expiry score}.
local function tg_promo_take(acct, pz, pv, amount, parts)
  if amount <= 0 then return 0 end
  local left = tonumber(redis.call('HGET', acct, 'promo')) or 0
  if left <= 0 then return 0 end
  local want = amount
  if want > left then want = left end
  local taken = 0
  while taken < want do
    local g = redis.call('ZRANGE', pz, 0, 0, 'WITHSCORES')
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
    if parts and t > 0 then parts[#parts + 1] = {g[1], t, tonumber(g[2])} end
    taken = taken + t
  end
  if taken > 0 then redis.call('HINCRBY', acct, 'promo', 0 - taken) end
  return taken
end

-- tg_promo_debit splits a debit that is not a charge (a refund, a dispute, a
-- negative adjustment), of amount mc, already taken off the balance: paid
-- pays all of it, even into a debt, and the promotional credits nothing, so
-- that a gift never pays back money refunded or disputed (a grant left
-- unspent expires later and leaves the debt whole). Returns what it took
-- from the grants: nothing (parts unchanged). Kept as the one place the rule
-- lives, for the scripts that record a debit's promotional part.
local function tg_promo_debit(acct, pz, pv, amount, parts)
  return 0
end

-- tg_promo_encode writes parts as 'grant=mc@expiry;…'; tg_promo_decode reads
-- them back (grant ids are promo:<code>, without '=', '@' or ';').
local function tg_promo_encode(parts)
  local out = {}
  for _, p in ipairs(parts) do
    out[#out + 1] = p[1] .. '=' .. string.format('%d', p[2]) .. '@' .. string.format('%d', p[3])
  end
  return table.concat(out, ';')
end

local function tg_promo_decode(s)
  local parts = {}
  for g, mc, exp in string.gmatch(s or '', '([^=;]+)=(%d+)@(%d+)') do
    parts[#parts + 1] = {g, tonumber(mc), tonumber(exp)}
  end
  return parts
end

-- tg_promo_give gives back up to limit mc of parts to the grants they came
-- from, each with its own expiry (one already past it is expired by the
-- sweeper: the caller re-indexes the account). Returns the mc given back and
-- the parts given back.
local function tg_promo_give(acct, pz, pv, parts, limit)
  local given, out = 0, {}
  for _, p in ipairs(parts) do
    local t = p[2]
    if t > limit - given then t = limit - given end
    if t <= 0 then break end
    redis.call('HINCRBY', pv, p[1], t)
    redis.call('ZADD', pz, p[3], p[1])
    given = given + t
    out[#out + 1] = {p[1], t, p[3]}
  end
  if given > 0 then redis.call('HINCRBY', acct, 'promo', given) end
  return given, out
end

-- tg_promo_field appends the 'promo' field of an entry to rec when taken > 0.
local function tg_promo_field(rec, taken)
  if taken > 0 then
    rec[#rec + 1] = 'promo'
    rec[#rec + 1] = string.format('%d', taken)
  end
  return rec
end
