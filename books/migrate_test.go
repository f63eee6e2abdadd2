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
