package books

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// JournalStatus is how far shipping stands.
type JournalStatus struct {
	Accounts      int64         // accounts in the books
	Entries       int64         // entries in the journal
	Unshipped     int64         // entries in Redis not in the journal yet
	Lag           time.Duration // age of the oldest unshipped entry (0: none)
	LastShipped   time.Time     // when the last batch was committed
	LaggingTop    string        // account with the oldest unshipped entry
	RedisAccounts int64         // accounts with a ledger in Redis
}

// Status reads the journal's state and, from Redis, what is not shipped yet.
func (b *Books) Status(ctx context.Context, l Ledger) (JournalStatus, error) {
	var st JournalStatus
	var last *time.Time
	if err := b.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts), coalesce((SELECT sum(entries) FROM ship_cursor), 0),
		(SELECT max(shipped_at) FROM ship_cursor)`).Scan(&st.Accounts, &st.Entries, &last); err != nil {
		return st, unavailable("reading journal status", err)
	}
	if last != nil {
		st.LastShipped = *last
	}
	cursors, err := b.cursors(ctx)
	if err != nil {
		return st, err
	}
	now := time.Now()
	err = l.ScanLedgers(ctx, func(accts []string) error {
		st.RedisAccounts += int64(len(accts))
		req := make([]metering.LedgerCursor, len(accts))
		for i, a := range accts {
			req[i] = metering.LedgerCursor{Account: a, After: cursors[a]}
		}
		pages, err := l.LedgersAfter(ctx, req, 100_000)
		if err != nil {
			return err
		}
		for i, p := range pages {
			st.Unshipped += int64(len(p))
			if len(p) > 0 {
				if age := now.Sub(p[0].CreatedAt); age > st.Lag {
					st.Lag, st.LaggingTop = age, accts[i]
				}
			}
		}
		return nil
	})
	return st, err
}

// cursors returns every account's shipping cursor as an entry id.
func (b *Books) cursors(ctx context.Context) (map[string]string, error) {
	return b.cursorsOf(ctx, nil)
}

// cursorsOf returns the shipping cursors of accts (nil: of every account;
// an account without one is absent).
func (b *Books) cursorsOf(ctx context.Context, accts []string) (map[string]string, error) {
	rows, err := b.pool.Query(ctx, `SELECT account, (extract(epoch from at) * 1000)::int8, seq FROM ship_cursor
		WHERE $1::text[] IS NULL OR account = ANY($1)`, accts)
	if err != nil {
		return nil, unavailable("reading cursors", err)
	}
	defer rows.Close()
	out := make(map[string]string, len(accts))
	for rows.Next() {
		var a string
		var id metering.EntryID
		if err := rows.Scan(&a, &id.Ms, &id.Seq); err != nil {
			return nil, unavailable("reading cursors", err)
		}
		out[a] = id.String()
	}
	return out, rows.Err()
}
