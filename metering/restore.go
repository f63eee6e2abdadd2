package metering

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/restore_account.lua
	restoreAccountSrc    string
	restoreAccountScript = redis.NewScript(restoreAccountSrc)
)

// StateRecord is one of an account's control-plane records as Redis holds
// it, opaque to whoever keeps a copy (package books): Name says which
// ("plan", "ar", "stripe", "members", "mbudget", "pay:<payment>", "key:<id>"), Fields its content.
// RestoreAccount puts it back as it was.
type StateRecord struct {
	Name   string            `json:"name"`
	Fields map[string]string `json:"fields"`
}

// stateKey maps a record name to its key; "" for names that are not records.
func stateKey(account, name string) string {
	switch {
	case name == "plan":
		return planKey(account)
	case name == "ar":
		return rechargeKey(account)
	case name == "stripe":
		return stripeKey(account)
	case name == "members":
		return membersKey(account)
	case name == "mbudget":
		return memberBudgetKey(account)
	case strings.HasPrefix(name, "pay:") && validStripeID(name[4:]):
		return paymentKey(account, name[4:])
	case strings.HasPrefix(name, checkoutRecord) && validStripeID(name[len(checkoutRecord):]):
		return checkoutKey(account, name[len(checkoutRecord):])
	}
	return ""
}

// checkoutRecord prefixes the books' record of a checkout sold but perhaps
// not paid yet ("co:<session>"; CheckoutRecord): a restore brings back those
// still within CheckoutTTL, so that a payment made after it is credited.
const checkoutRecord = "co:"

// CheckoutRecord is c as a record of the books: its name and the fields
// SaveCheckout writes.
func CheckoutRecord(c Checkout) StateRecord {
	return StateRecord{Name: checkoutRecord + c.SessionID, Fields: map[string]string{
		"pack": c.Pack, "credits_mc": strconv.FormatInt(c.Credits, 10), "price_minor": strconv.FormatInt(c.PriceMinor, 10),
		"currency": c.Currency, "created_at": strconv.FormatInt(c.CreatedAt.UnixMilli(), 10)}}
}

// StateRecords reads an account's control-plane records — subscription,
// auto-recharge settings, Stripe customer, members, API keys (metadata and hash, never
// the secret) and the payments named — for the books. Missing records are
// left out.
func (s *Store) StateRecords(ctx context.Context, account string, payments ...string) ([]StateRecord, error) {
	if !ValidAccountID(account) {
		return nil, notAccount("reading records of", account)
	}
	pipe := s.rdb.Pipeline()
	plan := pipe.HGetAll(ctx, planKey(account))
	ar := pipe.HGetAll(ctx, rechargeKey(account))
	cus := pipe.HGetAll(ctx, stripeKey(account))
	keys := pipe.HGetAll(ctx, keysKey(account))
	hashes := pipe.HGetAll(ctx, keysKey(account)+":hash")
	members := pipe.HGetAll(ctx, membersKey(account))
	budgets := pipe.HGetAll(ctx, memberBudgetKey(account))
	low := pipe.HGet(ctx, acctKey(account), "low_balance")
	pays := make([]*redis.MapStringStringCmd, 0, len(payments))
	var payIDs []string
	for _, p := range payments {
		if p != "" && validStripeID(p) {
			pays = append(pays, pipe.HGetAll(ctx, paymentKey(account, p)))
			payIDs = append(payIDs, p)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return nil, unavailable("reading records", err)
	}
	var out []StateRecord
	if m := plan.Val(); len(m) > 0 {
		out = append(out, StateRecord{Name: "plan", Fields: m})
	}
	if m := ar.Val(); len(m) > 0 {
		out = append(out, StateRecord{Name: "ar", Fields: m})
	}
	if m := cus.Val(); len(m) > 0 {
		out = append(out, StateRecord{Name: "stripe", Fields: m})
	}
	if m := members.Val(); len(m) > 0 {
		out = append(out, StateRecord{Name: "members", Fields: m})
	}
	if m := budgets.Val(); len(m) > 0 {
		out = append(out, StateRecord{Name: "mbudget", Fields: m})
	}
	if v := low.Val(); v != "" {
		// The low-balance alert's threshold (events.go), a field of the account hash.
		out = append(out, StateRecord{Name: "alerts", Fields: map[string]string{"low_balance": v}})
	}
	for id, meta := range keys.Val() {
		out = append(out, StateRecord{Name: "key:" + id, Fields: map[string]string{"meta": meta, "hash": hashes.Val()[id]}})
	}
	for i, c := range pays {
		if m := c.Val(); len(m) > 0 {
			out = append(out, StateRecord{Name: "pay:" + payIDs[i], Fields: m})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// AccountImage is an account as the books know it, for RestoreAccount.
type AccountImage struct {
	ID        string
	CreatedAt time.Time
	// Totals, each the sum of its entry types in the journal (see Books in
	// the package doc): Balance = Purchased + Granted + Adjusted − Consumed.
	Balance, Purchased, Granted, Adjusted, Consumed int64
	OverHoldCalls, OverHold                         int64
	// Last is the newest journal entry, written back with its id so that new
	// entries follow it (nil: the account never had one).
	Last *Entry
	// History is the purchase history (purchases, auto-recharges, refunds,
	// disputes, won disputes), oldest first.
	History []Entry
	// Refs are the references applied (every credit's and reversal's), so
	// that a webhook or operator credit seen before is never applied again.
	Refs    []string
	Records []StateRecord
	// KeySpend is what each key spent, from the usage entries that name it
	// (entries from before they named their key are not in it): its spend
	// towards its credit limit, and towards a budget in the current period.
	KeySpend map[string]KeySpend
	// AsOf is when KeySpend's periods were taken (zero: now).
	AsOf time.Time
	// Promoted is Σ promotional grants less their expiries; PromoGrants what
	// is left of each grant (ReplayPromo rebuilds them from the journal).
	Promoted    int64
	PromoGrants []PromoGrantLeft
}

// KeySpend is a key's spend (mc): in all, and since the start of the day,
// week and month (KeyPeriodStart) that held at AccountImage.AsOf.
type KeySpend struct {
	Used, Day, Week, Month int64
}

// CostRecord is a charged call's cost record (the idempotency record of its
// charge), as the books know it from the call's usage entry: a settle or
// lease flush of the same call after a restore finds it settled and
// replays the answer instead of charging again.
type CostRecord struct {
	RequestID    string // the entry's reference (the hold id)
	Entry        string // the usage entry's id
	Charged      int64  // mc (the entry's amount, negated)
	BalanceAfter int64
	OverHold     int64
	Capped       string // "1" when the charge was cut to what was available
	At           time.Time
}

// RecordTTL is how long cost records are kept (Options.RecordTTL): a
// restore writes back those of calls charged within it.
func (s *Store) RecordTTL() time.Duration { return s.opts.RecordTTL }

// RestoreCostRecords writes back charged calls' cost records, each expiring
// RecordTTL after its charge (those already past it are skipped). Restore
// writes them before the account itself (RestoreAccount), so that an account
// is never back without them; on an account that is in Redis they change
// nothing a settle reads differently.
func (s *Store) RestoreCostRecords(ctx context.Context, account string, recs []CostRecord) error {
	if !ValidAccountID(account) {
		return notAccount("restoring cost records of", account)
	}
	now := time.Now()
	pipe := s.rdb.Pipeline()
	for _, r := range recs {
		ttl := r.At.Add(s.opts.RecordTTL).Sub(now)
		if r.RequestID == "" || ttl < time.Second {
			continue
		}
		capped := r.Capped
		if capped == "" {
			capped = "0"
		}
		k := genKey(account, r.RequestID)
		pipe.HSet(ctx, k, "settled", 1, "charged", r.Charged, "balance_after", r.BalanceAfter,
			"over_hold", r.OverHold, "capped", capped, "entry", r.Entry)
		pipe.Expire(ctx, k, ttl)
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("restoring cost records", err)
	}
	return nil
}

func entryArgs(e *Entry) []string {
	out := []string{e.ID, "type", e.Type, "amount", strconv.FormatInt(e.Amount, 10),
		"balance_after", strconv.FormatInt(e.BalanceAfter, 10), "ref", e.Reference,
		"created_at", strconv.FormatInt(e.CreatedAt.UnixMilli(), 10)}
	for _, k := range sortedKeys(e.Fields) {
		out = append(out, k, e.Fields[k])
	}
	return out
}

// RestoreAccount writes an account back into a Redis that lost it, in one
// script call (all of it or nothing): its totals, newest ledger entry,
// purchase history, applied references, keys (revoked ones stay revoked) with
// their spend and, for governed keys, their rules and the budget period's
// spend, and its other records. It leaves an account that exists alone
// (restored false). The global lookups (API keys, Stripe customer, payments)
// are written afterwards, also when the account was there already (a restore
// run again after one cut short): a key is never usable before its account
// and its rules are back.
func (s *Store) RestoreAccount(ctx context.Context, img AccountImage) (restored bool, err error) {
	a := img.ID
	if !ValidAccountID(a) {
		return false, notAccount("restoring", a)
	}
	asOf := img.AsOf
	if asOf.IsZero() {
		asOf = time.Now()
	}
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	doc := struct {
		Acct    []string   `json:"acct"`
		Last    []string   `json:"last"`
		History [][]string `json:"history"`
		Refs    []string   `json:"refs"`
		Keys    [][]string `json:"keys"`
		Records [][]string `json:"records"`
		Rules   [][]string `json:"rules"`
		Promo   [][]string `json:"promo"`
	}{
		Acct: []string{"balance", i64(img.Balance), "reserved", "0", "purchased", i64(img.Purchased),
			"granted", i64(img.Granted), "adjusted", i64(img.Adjusted), "consumed", i64(img.Consumed),
			"over_hold_calls", i64(img.OverHoldCalls), "over_hold_mc", i64(img.OverHold),
			"created_at", i64(img.CreatedAt.Unix()), "promoted", i64(img.Promoted)},
		Last: []string{}, History: [][]string{}, Refs: img.Refs, Keys: [][]string{}, Records: [][]string{}, Rules: [][]string{},
		Promo: [][]string{},
	}
	var promo int64
	for _, g := range img.PromoGrants {
		score := int64(promoNever)
		if !g.ExpiresAt.IsZero() {
			score = g.ExpiresAt.UnixMilli()
		}
		doc.Promo = append(doc.Promo, []string{g.ID, i64(score), i64(g.Left)})
		promo += g.Left
	}
	doc.Acct = append(doc.Acct, "promo", i64(promo))
	if doc.Refs == nil {
		doc.Refs = []string{}
	}
	if img.Last != nil {
		doc.Last = entryArgs(img.Last)
	}
	for i := range img.History {
		doc.History = append(doc.History, entryArgs(&img.History[i]))
	}
	type lookup struct{ hash, id, limited string }
	var lookups []lookup
	var customer string
	var payments []string
	keys := []string{acctKey(a), ledgerKey(a), historyKey(a), refsKey(a), keysKey(a), keysKey(a) + ":hash", keysKey(a) + ":active"}
	type expiry struct {
		key string
		at  time.Time
	}
	var expiring []expiry          // checkouts: they expire as SaveCheckout's do
	var ruleKeys []string          // after the records' keys
	var budgeted map[string]string // member budgets: their keys are held call by call
	for _, r := range img.Records {
		if r.Name == "mbudget" {
			budgeted = r.Fields
		}
	}
	for _, r := range img.Records {
		if r.Name == "alerts" {
			if v := r.Fields["low_balance"]; v != "" {
				doc.Acct = append(doc.Acct, "low_balance", v)
			}
			continue
		}
		if id, ok := strings.CutPrefix(r.Name, "key:"); ok {
			var k Key
			if json.Unmarshal([]byte(r.Fields["meta"]), &k) != nil || r.Fields["hash"] == "" {
				continue
			}
			spend := img.KeySpend[id]
			active, limited := "0", "0"
			if !k.Revoked {
				active = "1"
				if k.CreditLimit > 0 || k.Governed() || (k.CreatedBy != "" && budgeted[k.CreatedBy] != "") {
					limited = "1" // held call by call, where the rules are checked
				}
				if k.Governed() {
					// Its rules hash, as PATCH writes it, and the budget
					// period's spend.
					rule := []string{}
					for i, v := range keyRuleValues(k.KeySettings) {
						if v != "" {
							rule = append(rule, keyRuleFields[i], v)
						}
					}
					if k.Budget > 0 {
						used := map[string]int64{PeriodDay: spend.Day, PeriodWeek: spend.Week, PeriodMonth: spend.Month}[k.BudgetPeriod]
						rule = append(rule, "bstart", i64(KeyPeriodStart(k.BudgetPeriod, asOf).Unix()), "bused", i64(used))
					}
					doc.Rules = append(doc.Rules, rule)
					ruleKeys = append(ruleKeys, keyRulesKey(a, id))
				}
				lookups = append(lookups, lookup{r.Fields["hash"], id, limited})
			}
			doc.Keys = append(doc.Keys, []string{id, r.Fields["meta"], r.Fields["hash"], active, i64(k.CreditLimit), i64(spend.Used), k.CreatedBy})
			continue
		}
		key := stateKey(a, r.Name)
		if key == "" {
			continue
		}
		if strings.HasPrefix(r.Name, checkoutRecord) {
			ms, _ := strconv.ParseInt(r.Fields["created_at"], 10, 64)
			until := time.UnixMilli(ms).Add(CheckoutTTL)
			if !until.After(time.Now()) {
				continue // expired, as it would have in Redis
			}
			expiring = append(expiring, expiry{key, until})
		}
		var flat []string
		for _, f := range sortedKeys(r.Fields) {
			flat = append(flat, f, r.Fields[f])
		}
		if r.Name == "stripe" {
			customer = r.Fields["customer"]
		}
		if strings.HasPrefix(r.Name, "pay:") {
			payments = append(payments, r.Name[4:])
		}
		keys = append(keys, key)
		doc.Records = append(doc.Records, flat)
	}
	// Each budgeted member's spend in its budget period: what the keys it
	// created (revoked ones too) spent since the period began.
	memberUsed := map[string]int64{}
	for _, r := range img.Records {
		id, ok := strings.CutPrefix(r.Name, "key:")
		if !ok {
			continue
		}
		var k Key
		if json.Unmarshal([]byte(r.Fields["meta"]), &k) != nil || k.CreatedBy == "" || budgeted[k.CreatedBy] == "" {
			continue
		}
		_, period, _ := strings.Cut(budgeted[k.CreatedBy], ":")
		spend := img.KeySpend[id]
		memberUsed[k.CreatedBy] += map[string]int64{PeriodDay: spend.Day, PeriodWeek: spend.Week, PeriodMonth: spend.Month}[period]
	}
	for _, u := range sortedKeys(budgeted) {
		_, period, _ := strings.Cut(budgeted[u], ":")
		doc.Acct = append(doc.Acct, "m:"+u+":bstart", i64(KeyPeriodStart(period, asOf).Unix()), "m:"+u+":bused", i64(memberUsed[u]))
	}
	keys = append(keys, ruleKeys...)
	keys = append(keys, promoKey(a), promoValKey(a)) // after the records and the rules
	js, err := json.Marshal(doc)
	if err != nil {
		return false, fmt.Errorf("restoring %q: %w", a, err)
	}
	n, err := restoreAccountScript.Run(ctx, s.rdb, keys, js).Int()
	if err != nil {
		return false, unavailable("restoring account", err)
	}
	pipe := s.rdb.Pipeline()
	for _, l := range lookups {
		pipe.HSet(ctx, keyLookupKey(l.hash), "account", a, "id", l.id, "hash_of", "sha256", "limited", l.limited)
	}
	if customer != "" {
		pipe.SetNX(ctx, customerLookupKey(customer), a, 0)
	}
	for _, p := range payments {
		pipe.Set(ctx, paymentLookupKey(p), a, 0)
	}
	for _, x := range expiring {
		pipe.PExpireAt(ctx, x.key, x.at)
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return false, unavailable("restoring account lookups", err)
		}
	}
	for _, l := range lookups {
		s.keys.forget(l.hash)
	}
	if len(img.PromoGrants) > 0 {
		if err := s.IndexPromos(ctx, a); err != nil {
			return false, unavailable("restoring promotional expiries", err)
		}
	}
	return n == 1, nil
}

// ReplayPromo rebuilds what is left of each promotional grant from an
// account's entries, oldest first: the promo_grant and promo_expired entries
// and every entry whose "promo" field says what it took from the grants
// (earliest expiry first, as promo.lua takes) or whose "promo_grants" field
// says what it gave back to which grant (a won dispute). An expiry takes its
// amount from its grant. Other entries are ignored.
func ReplayPromo(entries []Entry) []PromoGrantLeft {
	var grants []PromoGrantLeft
	score := func(g PromoGrantLeft) int64 {
		if g.ExpiresAt.IsZero() {
			return promoNever
		}
		return g.ExpiresAt.UnixMilli()
	}
	for _, e := range entries {
		switch e.Type {
		case PromoGrant:
			g := PromoGrantLeft{ID: e.Reference, Left: e.Amount}
			if ms, err := strconv.ParseInt(e.Fields["expires_at"], 10, 64); err == nil && ms > 0 {
				g.ExpiresAt = time.UnixMilli(ms).UTC()
			}
			grants = append(grants, g)
			sort.SliceStable(grants, func(i, j int) bool {
				si, sj := score(grants[i]), score(grants[j])
				return si < sj || si == sj && grants[i].ID < grants[j].ID
			})
		case PromoExpired:
			// An expiry takes what it says (holds may defer a part of it).
			for i := range grants {
				if grants[i].ID == e.Fields["grant"] {
					grants[i].Left += e.Amount
					if grants[i].Left <= 0 {
						grants = append(grants[:i], grants[i+1:]...)
					}
					break
				}
			}
		default:
			// A won dispute gives the promotional part of its dispute back
			// to the grants it came from ("grant=mc@expiry;…").
			for _, part := range strings.Split(e.Fields["promo_grants"], ";") {
				id, rest, ok1 := strings.Cut(part, "=")
				mcs, exps, ok2 := strings.Cut(rest, "@")
				mc, err1 := strconv.ParseInt(mcs, 10, 64)
				exp, err2 := strconv.ParseInt(exps, 10, 64)
				if !ok1 || !ok2 || err1 != nil || err2 != nil || mc <= 0 {
					continue
				}
				i := slices.IndexFunc(grants, func(g PromoGrantLeft) bool { return g.ID == id })
				if i < 0 {
					g := PromoGrantLeft{ID: id}
					if exp < promoNever {
						g.ExpiresAt = time.UnixMilli(exp).UTC()
					}
					grants = append(grants, g)
					i = len(grants) - 1
				}
				grants[i].Left += mc
				sort.SliceStable(grants, func(i, j int) bool {
					si, sj := score(grants[i]), score(grants[j])
					return si < sj || si == sj && grants[i].ID < grants[j].ID
				})
			}
			take, _ := strconv.ParseInt(e.Fields["promo"], 10, 64)
			for take > 0 && len(grants) > 0 {
				t := min(take, grants[0].Left)
				grants[0].Left -= t
				take -= t
				if grants[0].Left == 0 {
					grants = grants[1:]
				}
			}
		}
	}
	return grants
}
