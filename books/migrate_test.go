package books

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testpg"
)

func openBooks(t *testing.T, url string) *Books {
	t.Helper()
	b, err := Open(context.Background(), url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestMigrateIdempotent: migrate creates the schema in an empty database, a
// second run (and two at once) changes nothing and succeeds, and the
// journal's partitions exist for this month and the next two.
func TestMigrateIdempotent(t *testing.T) {
	pg := testpg.Start(t)
	b := openBooks(t, pg.URL())
	ctx := context.Background()
	var out bytes.Buffer
	if err := b.Migrate(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "00001_books.sql") {
		t.Fatalf("first migrate did not apply the schema:\n%s", out.String())
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- b.Migrate(ctx, nil) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("second migrate: %v", err)
		}
	}
	m := time.Now().UTC()
	for i := range partitionsAhead + 1 {
		name := "journal_" + time.Date(m.Year(), m.Month()+time.Month(i), 1, 0, 0, 0, 0, time.UTC).Format("2006_01")
		var ok bool
		if err := b.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil || !ok {
			t.Fatalf("partition %s missing (%v)", name, err)
		}
	}
	if has, err := b.HasAccounts(ctx); err != nil || has {
		t.Fatalf("HasAccounts on empty books = %v, %v", has, err)
	}
}

// TestMigrateFillsCacheWrites: on books that hold usage counted before
// usage_daily had cache writes (migrated to 00001, journal rows with cache
// writes in two months, two pages of accounts), migrating up fills every
// row's cache writes with the journal's sums, without holding the journal's
// ACCESS EXCLUSIVE lock while it writes (00002 changes the catalog only) and
// in a transaction per slice (a month and a hundred accounts), not one.
func TestMigrateFillsCacheWrites(t *testing.T) {
	pg := testpg.Start(t)
	b := openBooks(t, pg.URL())
	ctx := context.Background()
	if err := b.migrateTo(ctx, nil, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsurePartitions(ctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	const accounts = 120
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := b.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO accounts (id) SELECT 'acct-' || i FROM generate_series(1, $1) i`, accounts)
	// Per account, this month and 35 days ago, two models: usage entries
	// with cache writes, and a grant whose fields must not count.
	exec(`INSERT INTO journal (account, at, seq, type, amount, balance_after, created_at, model, fields)
		SELECT 'acct-' || i, now() - d * interval '1 day', s, CASE WHEN s = 9 THEN 'grant' ELSE 'usage' END, -10, 0, now(),
			CASE WHEN s % 2 = 0 THEN 'm-a' ELSE 'm-b' END,
			jsonb_build_object('input_tokens', '5', 'cache_write_tokens', (i * s)::text, 'cache_write_1h_tokens', (s + d)::text)
		FROM generate_series(1, $1) i, generate_series(0, 9) s, unnest(ARRAY[0, 35]) d`, accounts)
	// usage_daily as the shipper of 00001 counted it: no cache writes.
	exec(`INSERT INTO usage_daily (account, day, model, calls, input_tokens, credits)
		SELECT account, (at AT TIME ZONE 'UTC')::date, model, count(*), sum((fields->>'input_tokens')::int8), sum(-amount)
		FROM journal WHERE type = 'usage' GROUP BY 1, 2, 3`)
	// Each write of usage_daily notes its transaction and whether it holds
	// the journal's ACCESS EXCLUSIVE lock.
	exec(`CREATE TABLE probe (tx int8, exclusive int8)`)
	exec(`CREATE FUNCTION probe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
		INSERT INTO probe SELECT txid_current(), count(*) FROM pg_locks WHERE locktype = 'relation'
			AND relation = 'journal'::regclass AND mode = 'AccessExclusiveLock' AND pid = pg_backend_pid();
		RETURN NULL; END $$`)
	exec(`CREATE TRIGGER probe AFTER UPDATE ON usage_daily FOR EACH STATEMENT EXECUTE FUNCTION probe()`)

	// A shipper is shipping acct-7 (its lock held): the fill waits for it,
	// and what it ships after the columns exist (cache writes counted by
	// the shipper itself) ends in the sums once, neither lost nor twice.
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('tollgate.ship:acct-7', 0))`); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	migrated := make(chan error, 1)
	go func() { migrated <- b.Migrate(ctx, &out) }()
	for waiting := false; !waiting; {
		select {
		case err := <-migrated:
			t.Fatalf("migrate ended (%v) while a shipper held acct-7: the fill did not wait for it", err)
		case <-time.After(20 * time.Millisecond):
		}
		if err := b.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `WITH ins AS (INSERT INTO journal (account, at, seq, type, amount, balance_after, created_at, model, fields)
			VALUES ('acct-7', now(), 100, 'usage', -10, 0, now(), 'm-a', '{"cache_write_tokens": "1000", "cache_write_1h_tokens": "7"}')
			RETURNING account, at, model)
		INSERT INTO usage_daily AS u (account, day, model, calls, cache_write_tokens, cache_write_1h_tokens)
		SELECT account, (at AT TIME ZONE 'UTC')::date, model, 1, 1000, 7 FROM ins
		ON CONFLICT (account, day, model) DO UPDATE SET calls = u.calls + 1,
			cache_write_tokens = u.cache_write_tokens + 1000, cache_write_1h_tokens = u.cache_write_1h_tokens + 7`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	if err := <-migrated; err != nil {
		t.Fatal(err)
	}
	want, want1h := int64(1000), int64(7)
	if !strings.Contains(out.String(), "00002_") || !strings.Contains(out.String(), "00003_") {
		t.Fatalf("migrate applied:\n%s", out.String())
	}
	var rows, wrong, total, total1h int64
	if err := b.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE (u.cache_write_tokens, u.cache_write_1h_tokens) <> (j.w, j.w1h)),
			sum(u.cache_write_tokens), sum(u.cache_write_1h_tokens)
		FROM usage_daily u JOIN (SELECT account, (at AT TIME ZONE 'UTC')::date AS day, model,
			sum((fields->>'cache_write_tokens')::int8) AS w, sum((fields->>'cache_write_1h_tokens')::int8) AS w1h
			FROM journal WHERE type = 'usage' GROUP BY 1, 2, 3) j USING (account, day, model)`).Scan(&rows, &wrong, &total, &total1h); err != nil {
		t.Fatal(err)
	}
	// Σ over accounts i, s in 0…8 (9 is the grant), both days.
	for i := int64(1); i <= accounts; i++ {
		for s := int64(0); s < 9; s++ {
			want += 2 * i * s
			want1h += s + s + 35
		}
	}
	if rows != accounts*2*2 || wrong != 0 || total != want || total1h != want1h {
		t.Fatalf("usage_daily: %d rows (want %d), %d wrong, cache writes %d/%d, want %d/%d", rows, accounts*4, wrong, total, total1h, want, want1h)
	}
	var writes, txs, exclusive int64
	if err := b.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT tx), coalesce(sum(exclusive), 0) FROM probe`).Scan(&writes, &txs, &exclusive); err != nil {
		t.Fatal(err)
	}
	// Two months (three when 35 days ago is two months back) × two pages of accounts.
	if exclusive != 0 || txs < 4 || txs != writes {
		t.Fatalf("the fill: %d writes in %d transactions, %d of them holding the journal's ACCESS EXCLUSIVE lock; want ≥ 4 transactions of one write, none holding it", writes, txs, exclusive)
	}
}
