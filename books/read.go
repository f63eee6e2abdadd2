package books

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/metering"
)

// Reading an account's ledger when Redis keeps only its recent part (the
// shipper trims entries that are in the journal and older than the
// retention): the journal holds everything shipped, Redis what is not
// shipped yet, and a page is the union of both, each entry once.

// Ledger lists an account's entries newest first (or, with q.After, oldest
// first), as metering.Store.Ledger does, from the journal and Redis
// together: an entry trimmed from Redis is still listed. Should the database
// not answer, the page is Redis's alone (what it still holds), so that a
// PostgreSQL outage never takes the billing pages down.
func (s *Store) Ledger(ctx context.Context, account string, q metering.LedgerQuery) ([]metering.Entry, error) {
	if q.Limit <= 0 {
		q.Limit = 20
	}
	q.Limit = min(q.Limit, 1000)
	hot, err := s.Store.Ledger(ctx, account, q)
	if err != nil {
		return nil, err
	}
	cold, err := s.b.journalPage(ctx, account, q)
	if errors.Is(err, ErrUnavailable) {
		return hot, nil
	}
	if err != nil {
		return nil, err
	}
	return mergeEntries(hot, cold, q.After != "", int(q.Limit)), nil
}

// mergeEntries merges two pages of the same order (ascending or not) into
// one of at most limit entries, each id once.
func mergeEntries(a, b []metering.Entry, ascending bool, limit int) []metering.Entry {
	return mergeByID(a, b, func(e metering.Entry) string { return e.ID }, ascending, limit)
}

// mergeByID merges two pages of records named by entry ids (the ledger's,
// the audit log's), in the same order, into one of at most limit, each id
// once; a record whose id does not parse is left out.
func mergeByID[T any](a, b []T, idOf func(T) string, ascending bool, limit int) []T {
	type keyed struct {
		id metering.EntryID
		v  T
	}
	seen := make(map[string]bool, len(a)+len(b))
	all := make([]keyed, 0, len(a)+len(b))
	for _, page := range [][]T{a, b} {
		for _, v := range page {
			s := idOf(v)
			if seen[s] {
				continue
			}
			id, err := metering.ParseEntryID(s)
			if err != nil {
				continue
			}
			seen[s] = true
			all = append(all, keyed{id, v})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if ascending {
			return all[i].id.Less(all[j].id)
		}
		return all[j].id.Less(all[i].id)
	})
	out := make([]T, 0, min(len(all), limit))
	for i := 0; i < len(all) && i < limit; i++ {
		out = append(out, all[i].v)
	}
	return out
}

// journalCols are the columns an Entry is read from.
const journalCols = `(extract(epoch from at) * 1000)::int8, seq, type, amount, balance_after, ref, created_at, fields`

// scanEntry reads one row of journalCols.
func scanEntry(scan func(...any) error) (metering.Entry, error) {
	var e metering.Entry
	var id metering.EntryID
	var fields []byte
	if err := scan(&id.Ms, &id.Seq, &e.Type, &e.Amount, &e.BalanceAfter, &e.Reference, &e.CreatedAt, &fields); err != nil {
		return e, err
	}
	e.ID = id.String()
	e.CreatedAt = e.CreatedAt.UTC()
	if err := json.Unmarshal(fields, &e.Fields); err != nil {
		return e, err
	}
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	return e, nil
}

// journalPage is one page of an account's journal in the order and bounds
// of q (q.Before or q.After an entry id).
func (b *Books) journalPage(ctx context.Context, account string, q metering.LedgerQuery) ([]metering.Entry, error) {
	var (
		sql  string
		args = []any{account, q.Limit}
	)
	bound := func(s string) (time.Time, int64, error) {
		id, err := metering.ParseEntryID(s)
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("reading journal: bad cursor: %w", err)
		}
		return time.UnixMilli(id.Ms).UTC(), id.Seq, nil
	}
	switch {
	case q.After != "":
		at, seq, err := bound(q.After)
		if err != nil {
			return nil, err
		}
		sql = `SELECT ` + journalCols + ` FROM journal WHERE account = $1 AND (at, seq) > ($3, $4) ORDER BY at, seq LIMIT $2`
		args = append(args, at, seq)
	case q.Before != "":
		at, seq, err := bound(q.Before)
		if err != nil {
			return nil, err
		}
		sql = `SELECT ` + journalCols + ` FROM journal WHERE account = $1 AND (at, seq) < ($3, $4) ORDER BY at DESC, seq DESC LIMIT $2`
		args = append(args, at, seq)
	default:
		sql = `SELECT ` + journalCols + ` FROM journal WHERE account = $1 ORDER BY at DESC, seq DESC LIMIT $2`
	}
	rows, err := b.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, unavailable("reading journal", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metering.Entry, error) { return scanEntry(r.Scan) })
	if err != nil {
		return nil, unavailable("reading journal", err)
	}
	return out, nil
}

// exportChunk is how many journal rows an export reads per query: the
// connection goes back to the pool between chunks, so that a slow client
// never holds one while it reads.
const exportChunk = 2000

// UsageCalls calls fn with each of an account's calls charged from from
// (inclusive) to to (exclusive), oldest first, from the journal: what the
// account has in Redis and not yet in the books is shipped first (unless
// another shipper holds it this moment: then it arrives within a second).
// It reads exportChunk rows at a time (keyset pagination on the journal's
// primary key) and calls fn between reads, holding no connection.
func (s *Store) UsageCalls(ctx context.Context, account string, from, to time.Time, fn func(metering.CallUsage) error) error {
	if err := s.shipFirst(ctx, account); err != nil {
		return err
	}
	at, seq := from, int64(-1) // the first row is at from, seq ≥ 0
	for {
		rows, err := s.b.pool.Query(ctx, `SELECT `+journalCols+` FROM journal
			WHERE account = $1 AND type = 'usage' AND (at, seq) > ($2, $3) AND at < $4 ORDER BY at, seq LIMIT $5`,
			account, at, seq, to, exportChunk)
		if err != nil {
			return unavailable("exporting usage", err)
		}
		chunk, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metering.Entry, error) { return scanEntry(r.Scan) })
		if err != nil {
			return unavailable("exporting usage", err)
		}
		for _, e := range chunk {
			if u, ok := metering.UsageOf(e); ok {
				if err := fn(u); err != nil {
					return err
				}
			}
		}
		if len(chunk) < exportChunk {
			return nil
		}
		id, err := metering.ParseEntryID(chunk[len(chunk)-1].ID)
		if err != nil {
			return fmt.Errorf("exporting usage: %w", err)
		}
		at, seq = time.UnixMilli(id.Ms).UTC(), id.Seq
	}
}

// UsageDays is an account's charged calls from from (inclusive) to to
// (exclusive) per UTC day of their charge and model, oldest day first and
// models in name order (the same calls as UsageCalls): the whole days from
// usage_daily (a row per day and model, whatever the calls), the part of a
// day at either end from the journal. One query; the rows (at most a
// year of days × models) are read before fn is called, so that no
// connection waits for the client.
func (s *Store) UsageDays(ctx context.Context, account string, from, to time.Time, fn func(metering.DayUsage) error) error {
	if err := s.shipFirst(ctx, account); err != nil {
		return err
	}
	from, to = from.UTC(), to.UTC()
	// [from, first) and [last, to) are partial days; [first, last) whole
	// ones (none when from and to fall in one day: then first = last = to).
	first := from.Truncate(24 * time.Hour)
	if first.Before(from) {
		first = first.Add(24 * time.Hour)
	}
	last := to.Truncate(24 * time.Hour)
	if !first.Before(last) {
		first, last = to, to
	}
	n := func(f string) string { return `greatest(coalesce((fields->>'` + f + `')::int8, 0), 0)` }
	journal := `SELECT (at AT TIME ZONE 'UTC')::date AS day, model, count(*) AS calls,
			coalesce(sum(` + n("input_tokens") + ` + ` + n("cached_input_tokens") + ` + ` + n("cache_write_tokens") + ` + ` + n("cache_write_1h_tokens") + `), 0) AS input,
			coalesce(sum(` + n("output_tokens") + `), 0) AS output, coalesce(sum(-amount), 0) AS credits
		FROM journal WHERE account = $1 AND type = 'usage' AND at >= %s AND at < %s GROUP BY 1, 2`
	rows, err := s.b.pool.Query(ctx, `SELECT to_char(day, 'YYYY-MM-DD'), model, calls, input, output, credits FROM (
			`+fmt.Sprintf(journal, "$2", "$3")+`
			UNION ALL
			SELECT day, model, calls, input_tokens + cached_input_tokens + cache_write_tokens + cache_write_1h_tokens,
				output_tokens, credits
			FROM usage_daily WHERE account = $1 AND day >= $5::date AND day < $6::date AND calls > 0
			UNION ALL
			`+fmt.Sprintf(journal, "$4", "$7")+`) d
		ORDER BY day, model COLLATE "C"`,
		account, from, first, last, first.Format(time.DateOnly), last.Format(time.DateOnly), to)
	if err != nil {
		return unavailable("exporting usage", err)
	}
	days, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metering.DayUsage, error) {
		var d metering.DayUsage
		err := r.Scan(&d.Date, &d.Model, &d.Requests, &d.Input, &d.Output, &d.Credits)
		return d, err
	})
	if err != nil {
		return unavailable("exporting usage", err)
	}
	for _, d := range days {
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// shipFirst ships what Redis holds of account and the books lack.
func (s *Store) shipFirst(ctx context.Context, account string) error {
	if !metering.ValidAccountID(account) {
		_, err := s.Store.Account(ctx, account) // its error
		return err
	}
	_, err := s.b.NewShipper(s.Store, ShipperOptions{}).Ship(ctx, []string{account})
	return err
}

// DailyUsage is an account's charged calls per UTC day and model for the
// days from..to (inclusive, by their UTC dates), as metering.Store.DailyUsage
// answers from its Redis day counters, from the books' usage_daily (which a
// Redis that lost its data does not take with it). What Redis holds and the
// books lack is shipped first. Should the database not answer, the Redis
// counters answer.
func (s *Store) DailyUsage(ctx context.Context, account string, from, to time.Time) ([]metering.DayUsage, error) {
	out, err := s.dailyUsage(ctx, account, from, to)
	if errors.Is(err, ErrUnavailable) {
		return s.Store.DailyUsage(ctx, account, from, to) // the database is away: Redis's counters
	}
	return out, err
}

func (s *Store) dailyUsage(ctx context.Context, account string, from, to time.Time) ([]metering.DayUsage, error) {
	if err := s.shipFirst(ctx, account); err != nil {
		return nil, err
	}
	day := func(t time.Time) string { return t.UTC().Format(time.DateOnly) }
	rows, err := s.b.pool.Query(ctx, `SELECT to_char(day, 'YYYY-MM-DD'), model, calls,
			input_tokens + cached_input_tokens + cache_write_tokens + cache_write_1h_tokens, output_tokens, credits
		FROM usage_daily WHERE account = $1 AND day BETWEEN $2::date AND $3::date ORDER BY day, model COLLATE "C"`,
		account, day(from), day(to))
	if err != nil {
		return nil, unavailable("reading daily usage", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metering.DayUsage, error) {
		var d metering.DayUsage
		err := r.Scan(&d.Date, &d.Model, &d.Requests, &d.Input, &d.Output, &d.Credits)
		return d, err
	})
	if err != nil {
		return nil, unavailable("reading daily usage", err)
	}
	return out, nil
}

// Audit lists an account's newest audit entries, newest first, at most
// limit, from audit_log and Redis together (each entry once, by id): what
// Redis trimmed or lost is still listed. Should the database not answer,
// the list is Redis's alone.
func (s *Store) Audit(ctx context.Context, account string, limit int64) ([]metering.AuditEntry, error) {
	hot, err := s.Store.Audit(ctx, account, limit)
	if err != nil {
		return nil, err
	}
	rows, err := s.b.pool.Query(ctx, `SELECT id, actor, action, target, created_at FROM audit_log WHERE account = $1
		ORDER BY split_part(id, '-', 1)::int8 DESC, split_part(id, '-', 2)::int8 DESC LIMIT $2`, account, limit)
	if err != nil {
		return hot, nil // the books away: Redis's
	}
	defer rows.Close()
	cold := make([]metering.AuditEntry, 0, limit)
	for rows.Next() {
		e := metering.AuditEntry{Account: account}
		if err := rows.Scan(&e.ID, &e.Actor, &e.Action, &e.Target, &e.CreatedAt); err != nil {
			return nil, unavailable("reading the audit log", err)
		}
		e.CreatedAt = e.CreatedAt.UTC()
		cold = append(cold, e)
	}
	if rows.Err() != nil {
		return hot, nil
	}
	out := mergeByID(hot, cold, func(e metering.AuditEntry) string { return e.ID }, false, int(limit))
	return out, nil
}
