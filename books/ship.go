package books

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// Ledger is what the shipper needs of the Redis store. *metering.Store
// implements it.
type Ledger interface {
	TakeDirty(ctx context.Context, n int) ([]string, error)
	MarkDirty(ctx context.Context, accounts ...string) error
	ScanLedgers(ctx context.Context, fn func(accounts []string) error) error
	LedgersAfter(ctx context.Context, cursors []metering.LedgerCursor, n int64) ([][]metering.Entry, error)
	TrimLedger(ctx context.Context, account, below string) (int64, error)
}

var _ Ledger = (*metering.Store)(nil)

// ShipperOptions configure a Shipper. Zero values mean the defaults.
type ShipperOptions struct {
	// Batch is how many accounts one transaction ships. Default 256.
	Batch int
	// PerAccount is how many entries of one account are read per round.
	// Default 1000.
	PerAccount int64
	// Interval is how often the dirty marks are taken when there were none.
	// Default 100ms: an entry normally reaches the books within a second.
	Interval time.Duration
	// SweepEvery is how often every ledger is looked at (the backstop for
	// lost marks). Default 1m; the first sweep runs at start.
	SweepEvery time.Duration
	// Retention: entries in the books and older than this are trimmed from
	// Redis. Default 7 days. Negative: never trim.
	Retention time.Duration
	// TrimEvery is how often the trim runs. Default 10m.
	TrimEvery time.Duration
	Logger    *zap.Logger
	// Observer is told the outcome of each round of Run (nil: none).
	Observer ShipObserver
}

// ShipObserver is what Run tells of each round: the entries it shipped
// (committed, also when a later step of the round failed) and its error (nil
// when the round succeeded). telemetry implements it.
type ShipObserver interface {
	Shipped(entries int, err error)
}

func (o *ShipperOptions) init() {
	if o.Batch <= 0 {
		o.Batch = 256
	}
	if o.PerAccount <= 0 {
		o.PerAccount = 1000
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Minute
	}
	if o.Retention == 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.TrimEvery <= 0 {
		o.TrimEvery = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Shipper copies ledger entries from Redis into the journal, exactly once.
type Shipper struct {
	b    *Books
	l    Ledger
	opts ShipperOptions
	log  *zap.Logger
}

// NewShipper returns a shipper from l into b.
func (b *Books) NewShipper(l Ledger, o ShipperOptions) *Shipper {
	o.init()
	return &Shipper{b: b, l: l, opts: o, log: o.Logger.Named("shipper")}
}

// Run ships until ctx ends: the marked accounts every Interval, every ledger
// every SweepEvery (and at start), the trim every TrimEvery. Failures
// (Redis or PostgreSQL away) are logged and retried; nothing is lost, the
// backlog ships when both answer.
func (s *Shipper) Run(ctx context.Context) error {
	sweep := time.Now().Add(-s.opts.SweepEvery) // at start
	trim := time.Now()
	parts := time.Time{}
	failing := false
	for ctx.Err() == nil {
		var err error
		busy, shipped := false, 0
		if time.Since(parts) > time.Hour {
			if err = s.b.EnsurePartitions(ctx, time.Now(), partitionsAhead); err == nil {
				parts = time.Now()
			}
		}
		if err == nil && time.Since(sweep) >= s.opts.SweepEvery {
			var n int
			if n, err = s.Sweep(ctx); err == nil {
				sweep = time.Now()
			}
			shipped += n
		}
		if err == nil {
			var n int
			n, err = s.ShipMarked(ctx)
			busy, shipped = n > 0, shipped+n
		}
		if err == nil && s.opts.Retention > 0 && time.Since(trim) >= s.opts.TrimEvery {
			if _, err = s.Trim(ctx, time.Now()); err == nil {
				trim = time.Now()
			}
		}
		if s.opts.Observer != nil && ctx.Err() == nil {
			s.opts.Observer.Shipped(shipped, err)
		}
		if err != nil && ctx.Err() == nil {
			if !failing {
				s.log.Error("journal shipping failing; retrying (the backlog ships when the stores answer)", zap.Error(err))
			}
			failing = true
		} else if failing && err == nil {
			s.log.Info("journal shipping resumed")
			failing = false
			sweep = time.Time{} // catch up everything at once
		}
		if busy {
			continue
		}
		wait := s.opts.Interval
		if failing {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// ShipMarked ships the accounts marked in Redis, and returns how many
// entries it shipped.
func (s *Shipper) ShipMarked(ctx context.Context) (int, error) {
	total := 0
	for {
		accts, err := s.l.TakeDirty(ctx, s.opts.Batch)
		if err != nil || len(accts) == 0 {
			return total, err
		}
		n, err := s.Ship(ctx, accts)
		total += n
		if err != nil {
			// Give the marks back: another round (or process) ships them.
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.l.MarkDirty(mctx, accts...)
			cancel()
			return total, err
		}
		if len(accts) < s.opts.Batch {
			return total, nil
		}
	}
}

// Sweep ships every account with a ledger in Redis.
func (s *Shipper) Sweep(ctx context.Context) (int, error) {
	total := 0
	err := s.l.ScanLedgers(ctx, func(accts []string) error {
		for len(accts) > 0 {
			n := min(len(accts), s.opts.Batch)
			k, err := s.Ship(ctx, accts[:n])
			total += k
			if err != nil {
				return err
			}
			accts = accts[n:]
		}
		return nil
	})
	return total, err
}

// Ship copies every entry of accounts not in the books yet, and returns how
// many it copied. Accounts another shipper is shipping right now are marked
// again and skipped.
func (s *Shipper) Ship(ctx context.Context, accounts []string) (int, error) {
	total := 0
	for len(accounts) > 0 {
		n, more, err := s.shipOnce(ctx, accounts)
		total += n
		if err != nil {
			return total, err
		}
		accounts = more // those that filled a page: there may be more
	}
	return total, nil
}

// row is one journal row to copy.
type row struct {
	account string
	e       metering.Entry
	id      metering.EntryID
}

var journalColumns = []string{"account", "at", "seq", "type", "amount", "balance_after", "ref", "created_at", "model", "fields", "key_id"}

// shipOnce ships one page of entries per account in one transaction and
// returns the accounts whose page was full.
func (s *Shipper) shipOnce(ctx context.Context, accounts []string) (int, []string, error) {
	accounts = dedupe(accounts)
	tx, err := s.b.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit: a no-op

	// One shipper per account at a time; the others skip it (and mark it
	// again so that it is not forgotten).
	rows, err := tx.Query(ctx, `SELECT a FROM unnest($1::text[]) AS a
		WHERE pg_try_advisory_xact_lock(`+shipLockKey+`)`, accounts)
	if err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	if len(locked) < len(accounts) {
		skipped := minus(accounts, locked)
		_ = s.l.MarkDirty(ctx, skipped...)
	}
	if len(locked) == 0 {
		return 0, nil, nil
	}
	n, more, err := s.shipLocked(ctx, tx, locked)
	if err != nil {
		return 0, nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	return n, more, nil
}

// shipLockKey is the advisory lock of the account a (a SQL expression): who
// holds it in a transaction is the only one shipping a.
const shipLockKey = `hashtextextended('tollgate.ship:' || a, 0)`

// shipLocked ships, in tx, one page of entries of each of locked (whose
// advisory locks tx holds) and returns how many it shipped and the accounts
// whose page was full. It does not commit.
func (s *Shipper) shipLocked(ctx context.Context, tx pgx.Tx, locked []string) (int, []string, error) {
	cursors := make(map[string]metering.EntryID, len(locked))
	rows, err := tx.Query(ctx, `SELECT account, at, seq FROM ship_cursor WHERE account = ANY($1)`, locked)
	if err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	for rows.Next() {
		var a string
		var at time.Time
		var seq int64
		if err := rows.Scan(&a, &at, &seq); err != nil {
			rows.Close()
			return 0, nil, unavailable("shipping", err)
		}
		cursors[a] = metering.EntryID{Ms: at.UnixMilli(), Seq: seq}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	req := make([]metering.LedgerCursor, len(locked))
	for i, a := range locked {
		req[i] = metering.LedgerCursor{Account: a}
		if c, ok := cursors[a]; ok {
			req[i].After = c.String()
		}
	}
	pages, err := s.l.LedgersAfter(ctx, req, s.opts.PerAccount)
	if err != nil {
		return 0, nil, err
	}
	var batch []row
	var more []string
	type tip struct {
		id      metering.EntryID
		balance int64
		n       int64
	}
	tips := make(map[string]tip)
	for i, page := range pages {
		a := locked[i]
		if int64(len(page)) >= s.opts.PerAccount {
			more = append(more, a)
		}
		for _, e := range page {
			id, err := metering.ParseEntryID(e.ID)
			if err != nil {
				return 0, nil, fmt.Errorf("shipping %s: %w", a, err)
			}
			batch = append(batch, row{account: a, e: e, id: id})
			t := tips[a]
			tips[a] = tip{id: id, balance: e.BalanceAfter, n: t.n + 1}
		}
	}
	if len(batch) == 0 {
		return 0, nil, nil
	}
	// Emptied first: a transaction that ships several pages (restore) must
	// not stage a page twice.
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS journal_stage
		(LIKE journal INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM journal_stage`); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"journal_stage"}, journalColumns, pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
		r := &batch[i]
		var key *string // NULL: the entry names no key
		if k := r.e.Fields["key_id"]; k != "" {
			key = &k
		}
		return []any{r.account, time.UnixMilli(r.id.Ms).UTC(), r.id.Seq, r.e.Type, r.e.Amount, r.e.BalanceAfter,
			r.e.Reference, r.e.CreatedAt, r.e.Fields["model"], r.e.Fields, key}, nil
	}))
	if err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	// The rows really inserted (ON CONFLICT: a row shipped before is not
	// inserted, nor counted, again) feed usage_daily in the same statement.
	if _, err := tx.Exec(ctx, `WITH ins AS (
			INSERT INTO journal (account, at, seq, type, amount, balance_after, ref, created_at, model, fields, key_id)
			SELECT account, at, seq, type, amount, balance_after, ref, created_at, model, fields, key_id FROM journal_stage
			ON CONFLICT DO NOTHING
			RETURNING account, at, type, model, amount, fields)
		INSERT INTO usage_daily AS u (account, day, model, calls, input_tokens, cached_input_tokens,
			output_tokens, reasoning_tokens, credits, cache_write_tokens, cache_write_1h_tokens)
		SELECT account, (at AT TIME ZONE 'UTC')::date, model, count(*),
			coalesce(sum((fields->>'input_tokens')::int8), 0), coalesce(sum((fields->>'cached_input_tokens')::int8), 0),
			coalesce(sum((fields->>'output_tokens')::int8), 0), coalesce(sum((fields->>'reasoning_tokens')::int8), 0),
			sum(-amount), coalesce(sum((fields->>'cache_write_tokens')::int8), 0),
			coalesce(sum((fields->>'cache_write_1h_tokens')::int8), 0)
		FROM ins WHERE type = 'usage' GROUP BY 1, 2, 3
		ON CONFLICT (account, day, model) DO UPDATE SET calls = u.calls + excluded.calls,
			input_tokens = u.input_tokens + excluded.input_tokens,
			cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
			cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
			cache_write_1h_tokens = u.cache_write_1h_tokens + excluded.cache_write_1h_tokens,
			output_tokens = u.output_tokens + excluded.output_tokens,
			reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
			credits = u.credits + excluded.credits`); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	accts := make([]string, 0, len(tips))
	ats := make([]time.Time, 0, len(tips))
	seqs := make([]int64, 0, len(tips))
	bals := make([]int64, 0, len(tips))
	ns := make([]int64, 0, len(tips))
	for a, t := range tips {
		accts = append(accts, a)
		ats = append(ats, time.UnixMilli(t.id.Ms).UTC())
		seqs = append(seqs, t.id.Seq)
		bals = append(bals, t.balance)
		ns = append(ns, t.n)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO accounts (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, accts); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ship_cursor AS c (account, at, seq, balance_after, entries)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int8[], $4::int8[], $5::int8[])
		ON CONFLICT (account) DO UPDATE SET at = excluded.at, seq = excluded.seq,
			balance_after = excluded.balance_after, entries = c.entries + excluded.entries, shipped_at = now()`,
		accts, ats, seqs, bals, ns); err != nil {
		return 0, nil, unavailable("shipping", err)
	}
	return len(batch), more, nil
}

// Trim removes from Redis the ledger entries that are in the books and
// older than the retention, and returns how many went.
func (s *Shipper) Trim(ctx context.Context, now time.Time) (int64, error) {
	limit := now.Add(-s.opts.Retention).UnixMilli()
	var total int64
	after := ""
	for {
		rows, err := s.b.pool.Query(ctx, `SELECT account, at, seq FROM ship_cursor WHERE account > $1 ORDER BY account LIMIT 1000`, after)
		if err != nil {
			return total, unavailable("trimming", err)
		}
		type cur struct {
			a  string
			id metering.EntryID
		}
		var page []cur
		for rows.Next() {
			var c cur
			var at time.Time
			if err := rows.Scan(&c.a, &at, &c.id.Seq); err != nil {
				rows.Close()
				return total, unavailable("trimming", err)
			}
			c.id.Ms = at.UnixMilli()
			page = append(page, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, unavailable("trimming", err)
		}
		for _, c := range page {
			below := c.id // the shipped entries before the cursor…
			if limit < below.Ms {
				below = metering.EntryID{Ms: limit} // …that are past retention
			}
			n, err := s.l.TrimLedger(ctx, c.a, below.String())
			if err != nil {
				return total, err
			}
			total += n
		}
		if len(page) < 1000 {
			return total, nil
		}
		after = page[len(page)-1].a
	}
}

func dedupe(a []string) []string {
	out := append([]string(nil), a...)
	sort.Strings(out)
	j := 0
	for i, s := range out {
		if i == 0 || s != out[j-1] {
			out[j] = s
			j++
		}
	}
	return out[:j]
}

func minus(all, some []string) []string {
	in := make(map[string]bool, len(some))
	for _, s := range some {
		in[s] = true
	}
	var out []string
	for _, s := range all {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}
