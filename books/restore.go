package books

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate/tollgate/metering"
)

// Restorer is what restore needs of the Redis store. *metering.Store
// implements it.
type Restorer interface {
	Accounts
	RestoreAccount(ctx context.Context, img metering.AccountImage) (bool, error)
	RestoreCostRecords(ctx context.Context, account string, recs []metering.CostRecord) error
	RecordTTL() time.Duration
	RestorePromoCode(ctx context.Context, p metering.PromoCode, takers []string) (bool, error)
	EnsureEpoch(ctx context.Context) (string, bool, error)
}

var _ Restorer = (*metering.Store)(nil)

// Restored is what Restore did.
type Restored struct {
	Accounts int // accounts in the books
	Restored int // written back into Redis
	Existing int // already in Redis, left alone
	Shipped  int // entries Redis still held of the accounts restored, shipped under their lock first
	// Unshipped counts the entries Redis holds of a restored account past
	// the books' cursor once it is back: entries the restored balance does
	// not include (listed). Shipping under the lock leaves none; entries
	// Redis lost before they shipped are gone with it and cannot be counted.
	Unshipped int
	Records   int // cost records of charged calls written back
}

// restoreLockWait bounds how long restore waits for another shipper to let
// go of an account (a shipper holds one for a transaction: milliseconds).
// A variable for the tests.
var restoreLockWait = 30 * time.Second

// ErrRestoreLocked is returned by Restore when another process held an
// account's shipping lock for longer than it waits (30 s); running the
// restore again finishes it.
var ErrRestoreLocked = errors.New("books: an account to restore is held by another shipper")

// Restore rebuilds Redis from the books after it lost its data: first it
// ships whatever Redis still holds (nothing is dropped that can be kept),
// then it writes back every account of the books that Redis lacks, holding
// the account's shipping lock from before it ships the entries Redis still
// holds of it (a ledger that survived its account hash) until the account is
// back, so that no shipper moves anything between the image and the write:
// the cost records of its calls charged in the last day (costRecordWindow:
// so that a charge retried after the restore is replayed, never charged
// twice), then, in one step, totals and balance from the journal, the newest
// entry (so that the stream's ids continue after the cursor), the purchase
// history, the references applied, API keys (revoked ones revoked) with their
// spend and rules (a budget's spend in the current period from the usage
// entries that name the key), subscription, settings, Stripe customer and
// payments — then the epoch marker, so that proxies serve again. An account
// Redis still has is left as it is (its keys' lookups are written again: a
// restore cut short is finished by running it again).
//
// Nothing Redis still holds is lost: what it held of a lost account is in
// the journal before the account's image is read. An account another process
// holds for longer than 30 s fails the restore with ErrRestoreLocked (run it
// again).
func (b *Books) Restore(ctx context.Context, rs Restorer, w io.Writer) (Restored, error) {
	var res Restored
	sh := b.NewShipper(rs, ShipperOptions{})
	if err := b.EnsurePartitions(ctx, time.Now(), partitionsAhead); err != nil {
		return res, err
	}
	if _, err := sh.Sweep(ctx); err != nil {
		fmt.Fprintf(w, "warning: shipping what Redis still holds failed: %v\n", err)
	}
	asOf := time.Now()
	after := ""
	for {
		var page []string
		rows, err := b.pool.Query(ctx, `SELECT id FROM accounts WHERE id > $1 ORDER BY id LIMIT 500`, after)
		if err != nil {
			return res, unavailable("restoring", err)
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return res, unavailable("restoring", err)
			}
			page = append(page, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return res, unavailable("restoring", err)
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1]
		res.Accounts += len(page)
		if err := b.restorePage(ctx, sh, rs, page, asOf, w, &res); err != nil {
			return res, err
		}
	}
	if err := b.restorePromoCodes(ctx, rs, w); err != nil {
		return res, err
	}
	if _, _, err := rs.EnsureEpoch(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// restorePage restores the accounts of page (sorted) that Redis lost, in one
// transaction that holds their shipping locks throughout.
func (b *Books) restorePage(ctx context.Context, sh *Shipper, rs Restorer, page []string, asOf time.Time, w io.Writer, res *Restored) error {
	lost, err := b.lostAccounts(ctx, rs, page)
	if err != nil {
		return err
	}
	tx, err := b.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return unavailable("restoring", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit: a no-op
	if len(lost) > 0 {
		var names []string
		for _, a := range page {
			if lost[a] {
				names = append(names, a)
			}
		}
		// Waits for a shipper's transaction that holds one to end; in the
		// order of the ids (two restores at once never deadlock; shippers
		// only try).
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = '%dms'`, restoreLockWait.Milliseconds())); err != nil {
			return unavailable("restoring", err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+shipLockKey+`) FROM unnest($1::text[]) WITH ORDINALITY AS u(a, i) ORDER BY i`, names); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55P03" { // lock_not_available
				return fmt.Errorf("restoring %d accounts from %s: held for over %s; run the restore again: %w: %w",
					len(names), names[0], restoreLockWait, ErrRestoreLocked, err)
			}
			return unavailable("restoring", err)
		}
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = 0`); err != nil {
			return unavailable("restoring", err)
		}
		for pending := names; len(pending) > 0; {
			n, more, err := sh.shipLocked(ctx, tx, pending)
			if err != nil {
				return fmt.Errorf("shipping what Redis holds of the accounts it lost: %w", err)
			}
			res.Shipped += n
			pending = more
		}
	}
	// Entries written after this (new calls, webhooks, the promo sweeper
	// once the accounts are back) are not the restore's to count.
	writing := time.Now()
	imgs, err := b.images(ctx, tx, page, asOf)
	if err != nil {
		return err
	}
	for _, a := range page {
		if lost[a] {
			n, err := b.restoreCostRecords(ctx, tx, rs, a, asOf)
			if err != nil {
				return fmt.Errorf("restoring %s: %w", a, err)
			}
			res.Records += n
		}
		ok, err := rs.RestoreAccount(ctx, *imgs[a])
		if err != nil {
			return fmt.Errorf("restoring %s: %w", a, err)
		}
		if ok {
			res.Restored++
		} else {
			res.Existing++
			fmt.Fprintf(w, "exists account=%s (left as it is)\n", a)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return unavailable("restoring", err)
	}
	return b.countUnshipped(ctx, rs, lost, writing, w, res)
}

// countUnshipped checks the accounts just restored: what Redis held of each,
// written before the restore wrote them (before), past the books' cursor is
// not in its restored balance; each such entry is listed and counted.
func (b *Books) countUnshipped(ctx context.Context, rs Restorer, lost map[string]bool, before time.Time, w io.Writer, res *Restored) error {
	if len(lost) == 0 {
		return nil
	}
	accts := make([]string, 0, len(lost))
	for a := range lost {
		accts = append(accts, a)
	}
	sort.Strings(accts)
	cursors, err := b.cursorsOf(ctx, accts)
	if err != nil {
		return err
	}
	req := make([]metering.LedgerCursor, len(accts))
	for i, a := range accts {
		req[i] = metering.LedgerCursor{Account: a, After: cursors[a]}
	}
	pages, err := rs.LedgersAfter(ctx, req, 10_000)
	if err != nil {
		return err
	}
	for i, p := range pages {
		for _, e := range p {
			if id, err := metering.ParseEntryID(e.ID); err == nil && id.Ms >= before.UnixMilli() {
				continue // written after the restore began writing: not lost
			}
			res.Unshipped++
			fmt.Fprintf(w, "unshipped account=%s entry=%s type=%s amount=%d ref=%s\n", accts[i], e.ID, e.Type, e.Amount, e.Reference)
		}
	}
	return nil
}

// lostAccounts returns which of accts Redis has no account hash for.
func (b *Books) lostAccounts(ctx context.Context, rs Restorer, accts []string) (map[string]bool, error) {
	cursors, err := b.cursorsOf(ctx, accts)
	if err != nil {
		return nil, err
	}
	lost := make(map[string]bool)
	for _, a := range accts {
		_, _, err := rs.BalanceAfter(ctx, a, cursors[a])
		switch {
		case isNoAccount(err):
			lost[a] = true
		case err != nil:
			return nil, err
		}
	}
	return lost, nil
}

// querier is what reads need of a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// costRecordWindow bounds how far back restore writes cost records. What
// they guard against is a charge applied just before the loss whose answer
// was lost, retried after the restore (charges that never reached Redis have
// no record to find): those are seconds old, not days. A day of records is
// written in a minute or two even at 10 M calls a day; RecordTTL's 30 days
// would make a restore take an hour.
const costRecordWindow = 24 * time.Hour

// restoreCostRecords writes back the cost records of account's calls
// charged within costRecordWindow (and the record TTL), a thousand at a
// time, and returns how many.
func (b *Books) restoreCostRecords(ctx context.Context, q querier, rs Restorer, account string, asOf time.Time) (int, error) {
	rows, err := q.Query(ctx, `SELECT ref, (extract(epoch from at) * 1000)::int8, seq, amount, balance_after,
			coalesce((fields->>'over_hold')::int8, 0), coalesce(fields->>'capped', '0')
		FROM journal WHERE account = $1 AND type = 'usage' AND ref <> '' AND at >= $2 ORDER BY at, seq`,
		account, asOf.Add(-min(rs.RecordTTL(), costRecordWindow)))
	if err != nil {
		return 0, unavailable("reading cost records", err)
	}
	defer rows.Close()
	n := 0
	batch := make([]metering.CostRecord, 0, 1000)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rs.RestoreCostRecords(ctx, account, batch)
		n += len(batch)
		batch = batch[:0]
		return err
	}
	for rows.Next() {
		var r metering.CostRecord
		var id metering.EntryID
		var amount int64
		if err := rows.Scan(&r.RequestID, &id.Ms, &id.Seq, &amount, &r.BalanceAfter, &r.OverHold, &r.Capped); err != nil {
			return n, unavailable("reading cost records", err)
		}
		r.Entry, r.Charged, r.At = id.String(), -amount, time.UnixMilli(id.Ms)
		if batch = append(batch, r); len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, unavailable("reading cost records", err)
	}
	return n, flush()
}

// restorePromoCodes writes back every promotional code Redis lacks, with the
// accounts that redeemed it (its promo_grant entries in the journal), so
// that its redemptions stay counted.
func (b *Books) restorePromoCodes(ctx context.Context, rs Restorer, w io.Writer) error {
	rows, err := b.pool.Query(ctx, `SELECT c.code, c.credits, c.max_redemptions, c.expires_at, c.grant_ttl_ms,
			coalesce(array_agg(DISTINCT j.account) FILTER (WHERE j.account IS NOT NULL), '{}')
		FROM promo_codes c LEFT JOIN journal j ON j.type = 'promo_grant' AND j.ref = 'promo:' || c.code
		GROUP BY c.code ORDER BY c.code`)
	if err != nil {
		return unavailable("restoring promotional codes", err)
	}
	type code struct {
		p      metering.PromoCode
		takers []string
	}
	var codes []code
	for rows.Next() {
		var c code
		var exp *time.Time
		var ttl int64
		if err := rows.Scan(&c.p.Code, &c.p.Credits, &c.p.MaxRedemptions, &exp, &ttl, &c.takers); err != nil {
			rows.Close()
			return unavailable("restoring promotional codes", err)
		}
		if exp != nil {
			c.p.ExpiresAt = *exp
		}
		c.p.GrantExpiresIn = time.Duration(ttl) * time.Millisecond
		codes = append(codes, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return unavailable("restoring promotional codes", err)
	}
	for _, c := range codes {
		ok, err := rs.RestorePromoCode(ctx, c.p, c.takers)
		if err != nil {
			return fmt.Errorf("restoring promotional code %s: %w", c.p.Code, err)
		}
		if ok {
			fmt.Fprintf(w, "restored promo_code=%s redeemed=%d\n", c.p.Code, len(c.takers))
		}
	}
	return nil
}

// images builds the accounts' images from the books.
func (b *Books) images(ctx context.Context, db querier, accts []string, asOf time.Time) (map[string]*metering.AccountImage, error) {
	imgs := make(map[string]*metering.AccountImage, len(accts))
	q := func(op, sql string, scan func(func(...any) error) error, args ...any) error {
		rows, err := db.Query(ctx, sql, append([]any{accts}, args...)...)
		if err != nil {
			return unavailable(op, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows.Scan); err != nil {
				return unavailable(op, err)
			}
		}
		return rows.Err()
	}
	err := q("reading accounts", `SELECT id, created_at FROM accounts WHERE id = ANY($1)`, func(scan func(...any) error) error {
		var img metering.AccountImage
		if err := scan(&img.ID, &img.CreatedAt); err != nil {
			return err
		}
		img.AsOf, img.KeySpend = asOf, map[string]metering.KeySpend{}
		imgs[img.ID] = &img
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = q("reading totals", `SELECT account, type, sum(amount), coalesce(sum((fields->>'over_hold')::int8), 0),
			count(*) FILTER (WHERE (fields->>'over_hold')::int8 > 0)
		FROM journal WHERE account = ANY($1) GROUP BY account, type`, func(scan func(...any) error) error {
		var a, typ string
		var sum, over, overCalls int64
		if err := scan(&a, &typ, &sum, &over, &overCalls); err != nil {
			return err
		}
		img := imgs[a]
		if img == nil {
			return nil
		}
		img.Balance += sum
		switch typ {
		case metering.Grant:
			img.Granted += sum
		case metering.Adjustment:
			img.Adjusted += sum
		case metering.PromoGrant, metering.PromoExpired:
			img.Promoted += sum
		case "usage":
			img.Consumed -= sum
			img.OverHold += over
			img.OverHoldCalls += overCalls
		default: // purchases and their reversals
			img.Purchased += sum
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	entry := func(scan func(...any) error) (string, metering.Entry, error) {
		var a string
		var e metering.Entry
		var at time.Time
		var seq int64
		var fields []byte
		if err := scan(&a, &at, &seq, &e.Type, &e.Amount, &e.BalanceAfter, &e.Reference, &e.CreatedAt, &fields); err != nil {
			return "", e, err
		}
		e.ID = metering.EntryID{Ms: at.UnixMilli(), Seq: seq}.String()
		if err := json.Unmarshal(fields, &e.Fields); err != nil {
			return "", e, err
		}
		return a, e, nil
	}
	const cols = `account, at, seq, type, amount, balance_after, ref, created_at, fields`
	err = q("reading last entries", `SELECT DISTINCT ON (account) `+cols+` FROM journal WHERE account = ANY($1)
		ORDER BY account, at DESC, seq DESC`, func(scan func(...any) error) error {
		a, e, err := entry(scan)
		if err == nil && imgs[a] != nil {
			imgs[a].Last = &e
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	err = q("reading purchase history", `SELECT `+cols+` FROM journal WHERE account = ANY($1)
		AND type IN ('purchase', 'auto_recharge', 'refund', 'dispute', 'dispute_won') ORDER BY account, at, seq`,
		func(scan func(...any) error) error {
			a, e, err := entry(scan)
			if err == nil && imgs[a] != nil {
				imgs[a].History = append(imgs[a].History, e)
			}
			return err
		})
	if err != nil {
		return nil, err
	}
	promo := map[string][]metering.Entry{}
	err = q("reading promotional entries", `SELECT `+cols+` FROM journal WHERE account = ANY($1)
		AND (type IN ('promo_grant', 'promo_expired') OR fields ? 'promo' OR fields ? 'promo_grants') ORDER BY account, at, seq`,
		func(scan func(...any) error) error {
			a, e, err := entry(scan)
			if err == nil {
				promo[a] = append(promo[a], e)
			}
			return err
		})
	if err != nil {
		return nil, err
	}
	for a, es := range promo {
		if imgs[a] != nil {
			imgs[a].PromoGrants = metering.ReplayPromo(es)
		}
	}
	err = q("reading references", `SELECT DISTINCT account, ref FROM journal WHERE account = ANY($1) AND type <> 'usage' AND ref <> ''`,
		func(scan func(...any) error) error {
			var a, ref string
			if err := scan(&a, &ref); err != nil {
				return err
			}
			if imgs[a] != nil {
				imgs[a].Refs = append(imgs[a].Refs, ref)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	// Each key's spend, in all and in the budget periods that hold at asOf,
	// from the usage entries that name it.
	err = q("reading key spend", `SELECT account, key_id, sum(-amount),
			coalesce(sum(-amount) FILTER (WHERE at >= $2), 0), coalesce(sum(-amount) FILTER (WHERE at >= $3), 0),
			coalesce(sum(-amount) FILTER (WHERE at >= $4), 0)
		FROM journal WHERE account = ANY($1) AND type = 'usage' AND key_id IS NOT NULL GROUP BY account, key_id`,
		func(scan func(...any) error) error {
			var a, k string
			var ks metering.KeySpend
			if err := scan(&a, &k, &ks.Used, &ks.Day, &ks.Week, &ks.Month); err != nil {
				return err
			}
			if imgs[a] != nil {
				imgs[a].KeySpend[k] = ks
			}
			return nil
		}, metering.KeyPeriodStart(metering.PeriodDay, asOf), metering.KeyPeriodStart(metering.PeriodWeek, asOf),
		metering.KeyPeriodStart(metering.PeriodMonth, asOf))
	if err != nil {
		return nil, err
	}
	err = q("reading records", `SELECT account, name, fields FROM account_records WHERE account = ANY($1) ORDER BY account, name`,
		func(scan func(...any) error) error {
			var a string
			var r metering.StateRecord
			var fields []byte
			if err := scan(&a, &r.Name, &fields); err != nil {
				return err
			}
			if err := json.Unmarshal(fields, &r.Fields); err != nil {
				return err
			}
			if imgs[a] != nil {
				imgs[a].Records = append(imgs[a].Records, r)
			}
			return nil
		})
	return imgs, err
}
