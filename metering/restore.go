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
// ("plan", "ar", "stripe", "pay:<payment>", "key:<id>"), Fields its content.
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
	case strings.HasPrefix(name, "pay:") && validStripeID(name[4:]):
		return paymentKey(account, name[4:])
	}
	return ""
}

// StateRecords reads an account's control-plane records — subscription,
// auto-recharge settings, Stripe customer, API keys (metadata and hash, never
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
	// Promoted is Σ promotional grants less their expiries; PromoGrants what
	// is left of each grant (ReplayPromo rebuilds them from the journal).
	Promoted    int64
	PromoGrants []PromoGrantLeft
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

// RestoreAccount writes an account back into a Redis that lost it: its
// totals, newest ledger entry, purchase history, applied references, keys
// (revoked ones stay revoked; a key's spend starts again from 0), and other
// records. It leaves an account that exists alone (restored false).
func (s *Store) RestoreAccount(ctx context.Context, img AccountImage) (restored bool, err error) {
	a := img.ID
	if !ValidAccountID(a) {
		return false, notAccount("restoring", a)
	}
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	doc := struct {
		Acct    []string   `json:"acct"`
		Last    []string   `json:"last"`
		History [][]string `json:"history"`
		Refs    []string   `json:"refs"`
		Keys    [][]string `json:"keys"`
		Records [][]string `json:"records"`
		Promo   [][]string `json:"promo"`
	}{
		Acct: []string{"balance", i64(img.Balance), "reserved", "0", "purchased", i64(img.Purchased),
			"granted", i64(img.Granted), "adjusted", i64(img.Adjusted), "consumed", i64(img.Consumed),
			"over_hold_calls", i64(img.OverHoldCalls), "over_hold_mc", i64(img.OverHold),
			"created_at", i64(img.CreatedAt.Unix()), "promoted", i64(img.Promoted)},
		Last: []string{}, History: [][]string{}, Refs: img.Refs, Keys: [][]string{}, Records: [][]string{},
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
	type governed struct {
		k    Key
		meta string
	}
	var rules []governed // keys with rules: their rules hash is written back after the script
	keys := []string{acctKey(a), ledgerKey(a), historyKey(a), refsKey(a), keysKey(a), keysKey(a) + ":hash", keysKey(a) + ":active"}
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
			active, limited := "0", "0"
			if !k.Revoked {
				active = "1"
				if k.CreditLimit > 0 || k.Governed() {
					limited = "1" // held call by call, where the rules are checked
				}
				if k.Governed() {
					rules = append(rules, governed{k, r.Fields["meta"]})
				}
				lookups = append(lookups, lookup{r.Fields["hash"], id, limited})
			}
			doc.Keys = append(doc.Keys, []string{id, r.Fields["meta"], r.Fields["hash"], active, i64(k.CreditLimit)})
			continue
		}
		key := stateKey(a, r.Name)
		if key == "" {
			continue
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
	keys = append(keys, promoKey(a), promoValKey(a)) // after the records
	js, err := json.Marshal(doc)
	if err != nil {
		return false, fmt.Errorf("restoring %q: %w", a, err)
	}
	n, err := restoreAccountScript.Run(ctx, s.rdb, keys, js).Int()
	if err != nil {
		return false, unavailable("restoring account", err)
	}
	// The global lookups, also when the account was there already (a restore
	// run again after one cut short).
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
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return false, unavailable("restoring account lookups", err)
		}
	}
	// A governed key's rules (expiry, models, budget, rates) live in their own
	// hash: written back from its metadata, as PATCH writes them. The budget's
	// spend in the current period starts again from 0 (usage entries do not
	// name their key).
	for _, g := range rules {
		if _, err := s.writeKeyRules(ctx, g.k, g.meta); err != nil {
			return false, fmt.Errorf("restoring the rules of key %q: %w", g.k.ID, err)
		}
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
