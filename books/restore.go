package books

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Restorer is what restore needs of the Redis store. *metering.Store
// implements it.
type Restorer interface {
	Accounts
	RestoreAccount(ctx context.Context, img metering.AccountImage) (bool, error)
	RestorePromoCode(ctx context.Context, p metering.PromoCode, takers []string) (bool, error)
	EnsureEpoch(ctx context.Context) (string, bool, error)
}

var _ Restorer = (*metering.Store)(nil)

// Restored is what Restore did.
type Restored struct {
	Accounts  int // accounts in the books
	Restored  int // written back into Redis
	Existing  int // already in Redis, left alone
	Unshipped int // entries written in Redis and never shipped, that the books lack
}

// Restore rebuilds Redis from the books after it lost its data: first it
// ships whatever Redis still holds (nothing is dropped that can be kept),
// then it writes back every account of the books that Redis lacks — totals
// and balance from the journal, the newest entry (so that the stream's ids
// continue after the cursor), the purchase history, the references applied,
// API keys (revoked ones revoked), subscription, settings, Stripe customer
// and payments — then the epoch marker, so that proxies serve again. It
// writes one line per entry it knows was lost (in Redis, not shippable) and
// returns the counts.
func (b *Books) Restore(ctx context.Context, rs Restorer, w io.Writer) (Restored, error) {
	var res Restored
	sh := b.NewShipper(rs, ShipperOptions{})
	if err := b.EnsurePartitions(ctx, time.Now(), partitionsAhead); err != nil {
		return res, err
	}
	if _, err := sh.Sweep(ctx); err != nil {
		fmt.Fprintf(w, "warning: shipping what Redis still holds failed: %v\n", err)
	}
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
		imgs, err := b.images(ctx, page)
		if err != nil {
			return res, err
		}
		cursors, err := b.cursors(ctx)
		if err != nil {
			return res, err
		}
		for _, a := range page {
			// Entries Redis still holds past the cursor could not be shipped
			// just now: they are what is lost.
			if _, left, err := rs.BalanceAfter(ctx, a, cursors[a]); err == nil || isNoAccount(err) {
				for _, e := range left {
					res.Unshipped++
					fmt.Fprintf(w, "unshipped account=%s entry=%s type=%s amount=%d ref=%s\n", a, e.ID, e.Type, e.Amount, e.Reference)
				}
			}
			ok, err := rs.RestoreAccount(ctx, *imgs[a])
			if err != nil {
				return res, fmt.Errorf("restoring %s: %w", a, err)
			}
			if ok {
				res.Restored++
			} else {
				res.Existing++
				fmt.Fprintf(w, "exists account=%s (left as it is)\n", a)
			}
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
func (b *Books) images(ctx context.Context, accts []string) (map[string]*metering.AccountImage, error) {
	imgs := make(map[string]*metering.AccountImage, len(accts))
	q := func(op, sql string, scan func(func(...any) error) error) error {
		rows, err := b.pool.Query(ctx, sql, accts)
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
