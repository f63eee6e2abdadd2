package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/books"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/telemetry"
)

// databaseURL is database.url, or DATABASE_URL when the config has none.
func databaseURL(c *config.Config) string {
	if c.Database.URL != "" {
		return c.Database.URL
	}
	return os.Getenv("DATABASE_URL")
}

func openBooks(ctx context.Context, c *config.Config) (*books.Books, error) {
	url := databaseURL(c)
	if url == "" {
		return nil, errors.New("no database: set DATABASE_URL (or database.url)")
	}
	return books.Open(ctx, url, books.Options{MaxConns: c.Database.MaxConns})
}

// armEpoch tells a serving process's store that the books hold accounts (so
// that a Redis without its epoch marker is known to have lost its data), or
// says that there are no durable books.
func armEpoch(l *loaded, st *metering.Store) {
	if databaseURL(l.cfg) == "" {
		l.log.Warn("no database configured (DATABASE_URL): Tollgate keeps no durable books; balances, keys and the ledger live in Redis alone")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := openBooks(ctx, l.cfg)
	if err != nil {
		l.log.Error("durable books unreachable at start", zap.Error(err))
		return
	}
	defer b.Close()
	if has, err := b.HasAccounts(ctx); err == nil && has {
		st.ExpectEpoch()
	}
}

// startBooks wires the durable books into the billing process: migrations
// (database.migrate), the epoch marker, the journal shipper and the
// scheduled reconcile. It returns the store billing serves over (control-
// plane writes reach the books first) and a stop function.
func startBooks(l *loaded, st *metering.Store, bm *telemetry.Books) (billing.Store, billing.Books, func()) {
	if databaseURL(l.cfg) == "" {
		return st, nil, func() {}
	}
	log := l.log.Named("books")
	ctx, cancel := context.WithCancel(context.Background())
	b, err := openBooks(ctx, l.cfg)
	if err != nil {
		log.Error("durable books not available", zap.Error(err))
		cancel()
		return st, nil, func() {}
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if l.cfg.Database.Migrate {
		if err := b.Migrate(sctx, nil); err != nil {
			log.Error("migrating the books failed; run tollgate migrate", zap.Error(err))
		}
	}
	has, err := b.HasAccounts(sctx)
	switch {
	case err != nil:
		log.Error("reading the books", zap.Error(err))
	case has:
		st.ExpectEpoch()
		if err := st.CheckEpoch(sctx); errors.Is(err, metering.ErrStoreLost) {
			log.Error("REDIS LOST ITS DATA: the books hold accounts but Redis has no epoch marker; calls get 503 until `tollgate admin restore` has run")
		}
	default:
		if _, written, err := st.EnsureEpoch(sctx); err != nil {
			log.Warn("epoch marker not written yet", zap.Error(err))
		} else if written {
			log.Info("epoch marker written (new books)")
		}
	}
	so := books.ShipperOptions{Retention: l.cfg.Ledger.Retention.D(), Logger: l.log}
	if bm != nil {
		so.Observer = bm
	}
	sh := b.NewShipper(st, so)
	done := make(chan struct{}, 2)
	go func() { _ = sh.Run(ctx); done <- struct{}{} }()
	status := &booksStatus{b: b, st: st}
	go func() {
		reconcileLoop(ctx, b, st, l.cfg.Ledger.ReconcileEvery.D(), log, status, bm)
		done <- struct{}{}
	}()
	log.Info("durable books on: shipping the journal to PostgreSQL")
	return b.NewStore(st), status, func() {
		cancel()
		<-done
		<-done
		b.Close()
	}
}

func reconcileLoop(ctx context.Context, b *books.Books, st *metering.Store, every time.Duration, log *zap.Logger, status *booksStatus, bm *telemetry.Books) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := b.Reconcile(ctx, st, "")
		if err != nil {
			log.Warn("reconcile did not run", zap.Error(err))
			continue
		}
		status.reconciled(res)
		if bm != nil {
			bm.Reconciled(len(res.Mismatches))
		}
		for _, m := range res.Mismatches {
			log.Error("BOOKS MISMATCH", zap.String("account", m.Account), zap.String("kind", m.Kind), zap.String("detail", m.Detail))
		}
		if len(res.Mismatches) > 0 {
			log.Error("BOOKS DO NOT RECONCILE", zap.Int("accounts", res.Accounts), zap.Int("mismatches", len(res.Mismatches)))
		} else {
			log.Info("books reconciled", zap.Int("accounts", res.Accounts))
		}
	}
}

const migrateUsage = `usage: tollgate migrate [-config FILE]

Creates or updates the durable books' schema in PostgreSQL (DATABASE_URL or
database.url). Idempotent.
`

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	cfgPath := fs.String("config", envOr("TOLLGATE_CONFIG", "configs/tollgate.yaml"), "configuration file")
	fs.Usage = func() { fmt.Fprint(stderr, migrateUsage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := load(*cfgPath, stderr)
	if err != nil {
		return err
	}
	b, err := openBooks(ctx, l.cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	return b.Migrate(ctx, stdout)
}

// booksVerb reports whether an admin command is one of the books'.
func booksVerb(a []string) bool {
	return len(a) > 0 && (a[0] == "reconcile" || a[0] == "restore" || a[0] == "journal")
}

// booksCommand runs `admin reconcile [--account ID]`, `admin restore` and
// `admin journal status`.
func booksCommand(ctx context.Context, cfg *config.Config, st *metering.Store, a []string, out io.Writer) error {
	b, err := openBooks(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	switch a[0] {
	case "reconcile":
		account := ""
		for i := 1; i < len(a); i++ {
			switch {
			case (a[i] == "--account" || a[i] == "-account") && i+1 < len(a):
				account = a[i+1]
				i++
			default:
				return fmt.Errorf("admin reconcile: unknown argument %q", a[i])
			}
		}
		res, err := b.Reconcile(ctx, st, account)
		if err != nil {
			return err
		}
		books.PrintReconcile(out, res)
		if n := len(res.Mismatches); n > 0 {
			return fmt.Errorf("reconcile: %d mismatches", n)
		}
		return nil
	case "restore":
		res, err := b.Restore(ctx, st, out)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "accounts=%d restored=%d existing=%d cost_records=%d\n", res.Accounts, res.Restored, res.Existing, res.Records)
		fmt.Fprintf(out, "shipped=%d\n", res.Shipped)
		fmt.Fprintf(out, "unshipped=%d\n", res.Unshipped) // last: the contract's line
		return nil
	case "journal":
		if len(a) < 2 || a[1] != "status" {
			return errors.New("admin journal: want `journal status`")
		}
		s, err := b.Status(ctx, st)
		if err != nil {
			return err
		}
		last := "never"
		if !s.LastShipped.IsZero() {
			last = s.LastShipped.UTC().Format(time.RFC3339Nano)
		}
		fmt.Fprintf(out, "accounts=%d redis_accounts=%d journal_entries=%d unshipped=%d lag=%s last_shipped=%s\n",
			s.Accounts, s.RedisAccounts, s.Entries, s.Unshipped, s.Lag.Round(time.Millisecond), last)
		if s.LaggingTop != "" {
			fmt.Fprintf(out, "oldest_unshipped_account=%s\n", s.LaggingTop)
		}
		return nil
	}
	return fmt.Errorf("admin: unknown command %q", a[0])
}

// booksStatus is billing's view of the books (GET /admin/v1/books, the
// operator console): the journal's shipping state, read on demand, and the
// last scheduled reconciliation, kept here. Safe for concurrent use.
type booksStatus struct {
	b  *books.Books
	st *metering.Store

	mu   sync.Mutex
	last billing.BooksStatus // only the Reconciled* and Mismatches fields
}

func (s *booksStatus) reconciled(r books.ReconcileResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last.ReconciledAt, s.last.ReconciledAccounts, s.last.Mismatches = time.Now(), r.Accounts, len(r.Mismatches)
}

// BooksStatus implements billing.Books.
func (s *booksStatus) BooksStatus(ctx context.Context) (billing.BooksStatus, error) {
	js, err := s.b.Status(ctx, s.st)
	if err != nil {
		return billing.BooksStatus{}, err
	}
	s.mu.Lock()
	out := s.last
	s.mu.Unlock()
	out.Accounts, out.Entries, out.Unshipped, out.Lag, out.LastShipped = js.Accounts, js.Entries, js.Unshipped, js.Lag, js.LastShipped
	return out, nil
}
