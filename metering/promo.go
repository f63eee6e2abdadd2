package metering

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Promotional credits: operators create redemption codes, accounts redeem
// them once each, and each redemption is a grant that may expire. The
// balance is paid + promotional; a charge is paid from promotional credits
// first, earliest-expiring grant first (scripts/promo.lua, prepended to every
// script that debits a balance). Ledger entry types: PromoGrant (+) and
// PromoExpired (−), both counted in the account's Promoted total; a debit's
// entry records in its "promo" field how much of it promotional credits paid.

// Ledger entry types of promotional credits.
const (
	PromoGrant   = "promo_grant"
	PromoExpired = "promo_expired"
)

var (
	//go:embed scripts/promo.lua
	promoSrc string
	//go:embed scripts/promo_create.lua
	promoCreateSrc string
	//go:embed scripts/promo_claim.lua
	promoClaimSrc string
	//go:embed scripts/promo_grant.lua
	promoGrantSrc string
	//go:embed scripts/promo_expire.lua
	promoExpireSrc string

	promoCreateScript = redis.NewScript(promoCreateSrc)
	promoClaimScript  = redis.NewScript(promoClaimSrc)
	promoGrantScript  = redis.NewScript(promoSrc + promoGrantSrc)
	promoExpireScript = redis.NewScript(holdsSrc + promoSrc + eventsSrc + promoExpireSrc)
)

// Promo-code errors (with ErrNotFound for an unknown code); test with errors.Is.
var (
	ErrPromoExpired   = errors.New("metering: promotional code expired")
	ErrPromoExhausted = errors.New("metering: promotional code exhausted")
	ErrPromoRedeemed  = errors.New("metering: promotional code already redeemed")
	ErrPromoExists    = errors.New("metering: promotional code already exists")
)

// promoDueKey indexes accounts by their earliest grant expiry (ms), for the
// sweeper. Written outside the scripts (another slot), before a grant, so
// that a grant is never left out of it; SweepPromoIndex rebuilds it.
const promoDueKey = "tg:promo:due"

func promoKey(id string) string         { return "{a:" + id + "}:promo" }
func promoValKey(id string) string      { return "{a:" + id + "}:promov" }
func promoCodeKey(code string) string   { return "{p:" + code + "}:code" }
func promoTakersKey(code string) string { return "{p:" + code + "}:by" }
func promoReference(code string) string { return "promo:" + code }

// ValidPromoCode reports whether code may name a promotional code: 1–64
// letters, digits, - and _.
func ValidPromoCode(code string) bool {
	if code == "" || len(code) > 64 {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// PromoCode is an operator's redemption code.
type PromoCode struct {
	Code    string
	Credits int64 // mc granted per redemption (> 0)
	// MaxRedemptions bounds the accounts that may redeem it (0: no bound).
	MaxRedemptions int64
	ExpiresAt      time.Time     // zero: never; no redemption at or after it
	GrantExpiresIn time.Duration // 0: grants never expire
	Redeemed       int64         // accounts that redeemed it (read only)
}

// CreatePromoCode stores a new code; ErrPromoExists when the code is taken.
func (s *Store) CreatePromoCode(ctx context.Context, p PromoCode) error {
	_, err := s.createPromoCode(ctx, p, nil)
	return err
}

func (s *Store) createPromoCode(ctx context.Context, p PromoCode, takers []string) (bool, error) {
	if !ValidPromoCode(p.Code) || p.Credits <= 0 || p.MaxRedemptions < 0 || p.GrantExpiresIn < 0 {
		return false, fmt.Errorf("creating promotional code %q: invalid", p.Code)
	}
	var exp int64
	if !p.ExpiresAt.IsZero() {
		exp = p.ExpiresAt.UnixMilli()
	}
	args := []any{p.Credits, p.MaxRedemptions, exp, p.GrantExpiresIn.Milliseconds(), nowMillis()}
	for _, a := range takers {
		args = append(args, a)
	}
	n, err := promoCreateScript.Run(ctx, s.rdb, []string{promoCodeKey(p.Code), promoTakersKey(p.Code)}, args...).Int()
	if err != nil {
		return false, unavailable("creating promotional code", err)
	}
	if n == 0 {
		return false, fmt.Errorf("creating promotional code %q: %w", p.Code, ErrPromoExists)
	}
	return true, nil
}

// RestorePromoCode writes back a code Redis lost, with the accounts that
// redeemed it (restore; from the books). A code Redis has is left alone;
// restored says which.
func (s *Store) RestorePromoCode(ctx context.Context, p PromoCode, takers []string) (restored bool, err error) {
	ok, err := s.createPromoCode(ctx, p, takers)
	if errors.Is(err, ErrPromoExists) {
		return false, nil
	}
	return ok, err
}

// PromoCode reads a code (ErrNotFound when unknown).
func (s *Store) PromoCode(ctx context.Context, code string) (PromoCode, error) {
	if !ValidPromoCode(code) {
		return PromoCode{}, fmt.Errorf("reading promotional code: %w", ErrNotFound)
	}
	m, err := s.rdb.HGetAll(ctx, promoCodeKey(code)).Result()
	if err != nil {
		return PromoCode{}, unavailable("reading promotional code", err)
	}
	if m["credits_mc"] == "" {
		return PromoCode{}, fmt.Errorf("reading promotional code %q: %w", code, ErrNotFound)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	p := PromoCode{Code: code, Credits: n("credits_mc"), MaxRedemptions: n("max"),
		GrantExpiresIn: time.Duration(n("grant_ttl")) * time.Millisecond, Redeemed: n("redeemed")}
	if e := n("expires_at"); e > 0 {
		p.ExpiresAt = time.UnixMilli(e).UTC()
	}
	return p, nil
}

// Redeemed is the result of Redeem.
type Redeemed struct {
	Credits      int64 // mc granted
	BalanceAfter int64
	ExpiresAt    time.Time // the grant's expiry (zero: never)
	EntryID      string
}

// Redeem redeems code for account: once per account, within the code's
// redemptions and before its expiry. Errors: ErrNotFound (unknown code),
// ErrPromoExpired, ErrPromoExhausted, ErrPromoRedeemed (this account already
// has it), ErrNoAccount. Safe under any concurrency: the code's count and the
// account's grant are each one script, and a retry after a crash between
// them completes the grant (see promo_claim.lua).
func (s *Store) Redeem(ctx context.Context, account, code string) (Redeemed, error) {
	if !ValidAccountID(account) {
		return Redeemed{}, notAccount("redeeming for", account)
	}
	if !ValidPromoCode(code) {
		return Redeemed{}, fmt.Errorf("redeeming code: %w", ErrNotFound)
	}
	// An account that does not exist must not take one of the code's
	// redemptions (accounts are never deleted: checked once, before).
	if n, err := s.rdb.Exists(ctx, acctKey(account)).Result(); err != nil {
		return Redeemed{}, unavailable("redeeming code", err)
	} else if n == 0 {
		return Redeemed{}, s.missingAccount(ctx, "redeeming code", account)
	}
	// An account that holds the code's reference already (the code was lost,
	// say by a restore, and created again) takes no redemption of it.
	ref := promoReference(code)
	if had, err := s.rdb.SIsMember(ctx, refsKey(account), ref).Result(); err != nil {
		return Redeemed{}, unavailable("redeeming code", err)
	} else if had {
		return Redeemed{}, fmt.Errorf("redeeming code %q: %w", code, ErrPromoRedeemed)
	}
	now := time.Now()
	res, err := promoClaimScript.Run(ctx, s.rdb, []string{promoCodeKey(code), promoTakersKey(code)}, account, now.UnixMilli()).Int64Slice()
	if err != nil {
		return Redeemed{}, unavailable("claiming promotional code", err)
	}
	switch res[0] {
	case -1:
		return Redeemed{}, fmt.Errorf("redeeming code %q: %w", code, ErrNotFound)
	case -2:
		return Redeemed{}, fmt.Errorf("redeeming code %q: %w", code, ErrPromoExpired)
	case -3:
		return Redeemed{}, fmt.Errorf("redeeming code %q: %w", code, ErrPromoExhausted)
	}
	mc, ttl := res[1], res[2]
	var exp int64
	if ttl > 0 {
		exp = now.UnixMilli() + ttl
		// The sweeper's index first: a grant is never missing from it.
		if err := s.rdb.ZAddLT(ctx, promoDueKey, redis.Z{Score: float64(exp), Member: account}).Err(); err != nil {
			return Redeemed{}, unavailable("indexing promotional grant", err)
		}
	}
	g, err := promoGrantScript.Run(ctx, s.rdb,
		[]string{acctKey(account), refsKey(account), ledgerKey(account), promoKey(account), promoValKey(account)},
		mc, ref, exp, code, now.UnixMilli()).Slice()
	if err != nil {
		return Redeemed{}, unavailable("granting promotional credits", err)
	}
	switch toInt(g[0]) {
	case 1:
		s.markDirty(account)
		if exp > 0 {
			// Again after the grant: a sweep that ran between the first
			// write and the grant may have removed the account (the
			// periodic IndexPromos backstop covers a crash here).
			s.rdb.ZAddLT(ctx, promoDueKey, redis.Z{Score: float64(exp), Member: account})
		}
		id, _ := g[2].(string)
		r := Redeemed{Credits: mc, BalanceAfter: toInt(g[1]), EntryID: id}
		if exp > 0 {
			r.ExpiresAt = time.UnixMilli(exp).UTC()
		}
		return r, nil
	case 0:
		// Granted before. The claim is kept even when it was made now: two
		// redeems of one account at once both reach here, and giving one
		// claim back would free a redemption the account holds (one more
		// account could then redeem past max_redemptions). Only a code
		// created again after a restore, redeemed by an account that raced
		// the reference check above, uses a slot it does not need.
		return Redeemed{}, fmt.Errorf("redeeming code %q: %w", code, ErrPromoRedeemed)
	default:
		return Redeemed{}, s.missingAccount(ctx, "redeeming code", account)
	}
}

// PromoGrant is what is left of one promotional grant.
type PromoGrantLeft struct {
	ID        string // the grant's reference, promo:<code>
	Left      int64  // mc
	ExpiresAt time.Time
}

// PromoGrants lists an account's promotional grants with something left,
// earliest-expiring first (the order they are spent in).
func (s *Store) PromoGrants(ctx context.Context, account string) ([]PromoGrantLeft, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, promoKey(account), 0, -1).Result()
	if err != nil {
		return nil, unavailable("reading promotional grants", err)
	}
	if len(zs) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HGetAll(ctx, promoValKey(account)).Result()
	if err != nil {
		return nil, unavailable("reading promotional grants", err)
	}
	out := make([]PromoGrantLeft, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		left, _ := strconv.ParseInt(vals[id], 10, 64)
		g := PromoGrantLeft{ID: id, Left: left}
		if z.Score < promoNever {
			g.ExpiresAt = time.UnixMilli(int64(z.Score)).UTC()
		}
		out = append(out, g)
	}
	return out, nil
}

// promoNever is TG_PROMO_NEVER (promo.lua): the score of a grant that does not expire.
const promoNever = 253402300799000

// ExpiredPromos is the result of ExpirePromos.
type ExpiredPromos struct {
	Grants int64     // grants expired now
	Taken  int64     // mc taken back
	Next   time.Time // the account's next expiry (zero: none)
}

// ExpirePromos takes back what is left of account's grants expired at now,
// one promo_expired entry each, but for what live holds still need (kept in
// the grant; Next is then 30 s after now). Idempotent.
func (s *Store) ExpirePromos(ctx context.Context, account string, now time.Time) (ExpiredPromos, error) {
	res, err := promoExpireScript.Run(ctx, s.rdb,
		[]string{acctKey(account), ledgerKey(account), promoKey(account), promoValKey(account), holdExpKey(account), holdValKey(account), eventsKey(account)},
		now.UnixMilli()).Int64Slice()
	if err != nil {
		return ExpiredPromos{}, unavailable("expiring promotional credits", err)
	}
	if res[0] == -1 {
		return ExpiredPromos{}, notAccount("expiring promotional credits of", account)
	}
	if res[1] > 0 {
		s.markDirty(account)
		s.markEvents(account)
	}
	e := ExpiredPromos{Grants: res[0], Taken: res[1]}
	if res[2] > 0 {
		e.Next = time.UnixMilli(res[2]).UTC()
	}
	return e, nil
}

// SweepPromos expires the grants due at now of every account in the
// sweeper's index (at most limit accounts; 0: 1000) and moves each account
// to its next expiry. It returns the accounts it visited. The billing
// process calls it every few seconds.
func (s *Store) SweepPromos(ctx context.Context, now time.Time, limit int64) (int, error) {
	if limit <= 0 {
		limit = 1000
	}
	due, err := s.rdb.ZRangeByScore(ctx, promoDueKey, &redis.ZRangeBy{Min: "-inf",
		Max: strconv.FormatInt(now.UnixMilli(), 10), Count: limit}).Result()
	if err != nil {
		return 0, unavailable("reading promotional expiries", err)
	}
	for _, a := range due {
		e, err := s.ExpirePromos(ctx, a, now)
		if errors.Is(err, ErrNoAccount) {
			s.rdb.ZRem(ctx, promoDueKey, a)
			continue
		}
		if err != nil {
			return 0, err
		}
		if e.Next.IsZero() {
			err = s.rdb.ZRem(ctx, promoDueKey, a).Err()
		} else {
			err = s.rdb.ZAdd(ctx, promoDueKey, redis.Z{Score: float64(e.Next.UnixMilli()), Member: a}).Err()
		}
		if err != nil {
			return 0, unavailable("moving promotional expiry", err)
		}
		// A Redeem may have written an earlier expiry (ZADD LT) between the
		// expiry and the move, which the move overwrote: index again from
		// the earliest grant not yet due.
		if err := s.reindexPromos(ctx, a, now); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// reindexPromos lowers account's place in the sweeper's index to its
// earliest grant expiring after now, if that is earlier.
func (s *Store) reindexPromos(ctx context.Context, account string, now time.Time) error {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, promoKey(account), &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf", Count: 1}).Result()
	if err != nil {
		return unavailable("reading promotional grants", err)
	}
	if len(zs) == 0 || zs[0].Score >= promoNever {
		return nil
	}
	if err := s.rdb.ZAddLT(ctx, promoDueKey, redis.Z{Score: zs[0].Score, Member: account}).Err(); err != nil {
		return unavailable("indexing promotional grant", err)
	}
	return nil
}

// PromoAccounts calls fn with every account that has promotional grants
// (SCAN over their grant sets, every master of a Cluster; the sweeper's
// backstop).
func (s *Store) PromoAccounts(ctx context.Context, fn func(account string) error) error {
	return s.scanAccounts(ctx, "{a:*}:promo", ":promo", func(accts []string) error {
		for _, a := range accts {
			if err := fn(a); err != nil {
				return err
			}
		}
		return nil
	})
}

// IndexPromos puts account back in the sweeper's index at its earliest grant
// expiry (the backstop for an index entry a race removed, and for restores).
func (s *Store) IndexPromos(ctx context.Context, account string) error {
	zs, err := s.rdb.ZRangeWithScores(ctx, promoKey(account), 0, 0).Result()
	if err != nil {
		return unavailable("reading promotional grants", err)
	}
	if len(zs) == 0 || zs[0].Score >= promoNever {
		return nil
	}
	return s.rdb.ZAddLT(ctx, promoDueKey, redis.Z{Score: zs[0].Score, Member: account}).Err()
}
