package billing

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// fakeBooks stands in for the durable books (cmd/tollgate wires the real
// ones, tested end to end in cmd/tollgate's TestDurableBooksContract).
type fakeBooks struct{ st BooksStatus }

func (f fakeBooks) BooksStatus(context.Context) (BooksStatus, error) { return f.st, nil }

func TestAdminBooksStatus(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		books Books
	}{{"without books", nil}, {"with books", fakeBooks{BooksStatus{Accounts: 3, Entries: 120, Unshipped: 2,
		Lag: 1500 * time.Millisecond, LastShipped: at, ReconciledAt: at.Add(time.Minute), ReconciledAccounts: 3, Mismatches: 1}}}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{adjustOpts: func(o *Options) { o.Books = tc.books }})
			r := e.admin("GET", "/admin/v1/books", nil)
			cfg := e.do("GET", "/console/config.json", "", nil)
			if tc.books == nil {
				e.expect(r, 404, "books_not_configured")
				if v := cfg.get("books"); v != nil {
					t.Errorf("console config books = %v, want null", v)
				}
				return
			}
			e.expect(r, 200, "")
			for path, want := range map[string]any{"object": "books_status", "accounts": 3, "entries": 120, "unshipped": 2,
				"lag_seconds": 1.5, "last_shipped": "2026-12-03T10:00:00Z", "reconciled_at": "2026-12-03T10:01:00Z",
				"reconciled_accounts": 3, "mismatches": 1} {
				if got := r.get(path); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s = %v, want %v (%s)", path, got, want, r.raw)
				}
			}
			if v := cfg.get("books"); v != "/admin/v1/books" {
				t.Errorf("console config books = %v, want the route", v)
			}
			e.expect(e.do("GET", "/admin/v1/books", "wrong-token", nil), 401, "")
		})
	}
}
