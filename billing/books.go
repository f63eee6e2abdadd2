package billing

import (
	"context"
	"net/http"
	"time"
)

// Books is what the operator sees of the durable books (the PostgreSQL
// journal): how far shipping stands and the last reconciliation. Optional:
// without it GET /admin/v1/books answers 404 books_not_configured and the
// console says the books are not configured.
type Books interface {
	BooksStatus(ctx context.Context) (BooksStatus, error)
}

// BooksStatus is the journal's shipping state and the last reconciliation.
type BooksStatus struct {
	Accounts    int64         // accounts in the books
	Entries     int64         // entries in the journal
	Unshipped   int64         // ledger entries in Redis not in the journal yet
	Lag         time.Duration // age of the oldest unshipped entry (0: none)
	LastShipped time.Time     // zero: nothing shipped yet
	// The last scheduled reconciliation; ReconciledAt zero: none yet.
	ReconciledAt       time.Time
	ReconciledAccounts int
	Mismatches         int
}

type booksJSON struct {
	Object             string  `json:"object"`
	Accounts           int64   `json:"accounts"`
	Entries            int64   `json:"entries"`
	Unshipped          int64   `json:"unshipped"`
	LagSeconds         float64 `json:"lag_seconds"`
	LastShipped        *string `json:"last_shipped"`
	ReconciledAt       *string `json:"reconciled_at"`
	ReconciledAccounts int     `json:"reconciled_accounts"`
	Mismatches         int     `json:"mismatches"`
}

func timeOrNull(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

// GET /admin/v1/books
func (s *Server) adminBooks(w http.ResponseWriter, r *http.Request) error {
	if s.books == nil {
		return notFound("books_not_configured", "the durable books (database.url) are not configured")
	}
	st, err := s.books.BooksStatus(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, booksJSON{Object: "books_status", Accounts: st.Accounts, Entries: st.Entries,
		Unshipped: st.Unshipped, LagSeconds: st.Lag.Round(time.Millisecond).Seconds(), LastShipped: timeOrNull(st.LastShipped),
		ReconciledAt: timeOrNull(st.ReconciledAt), ReconciledAccounts: st.ReconciledAccounts, Mismatches: st.Mismatches})
	return nil
}
