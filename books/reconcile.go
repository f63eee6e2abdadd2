package books

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Accounts is what reconcile and restore read of the Redis store beyond the
// Ledger. *metering.Store implements it.
type Accounts interface {
	Ledger
	BalanceAfter(ctx context.Context, account, after string) (int64, []metering.Entry, error)
	ScanAccounts(ctx context.Context, fn func(accounts []string) error) error
}

var _ Accounts = (*metering.Store)(nil)

// Mismatch is one disagreement between the books and Redis, or within the
// books.
type Mismatch struct {
	Account string
	Kind    string // balance, missing_in_redis, not_in_books, chain, duplicate, payment
	Detail  string
}

func (m Mismatch) String() string {
	return fmt.Sprintf("mismatch account=%s kind=%s %s", m.Account, m.Kind, m.Detail)
}

// ReconcileResult is what Reconcile found.
type ReconcileResult struct {
	Accounts   int // accounts in the books
	Mismatches []Mismatch
}

// Reconcile checks, for every account in the books (or only account, when
// not ""): that the journal's sum plus the entries Redis holds past the
// shipping cursor equals the Redis balance; that the journal's chain is
// whole (each entry's balance_after is the previous one's plus its amount:
// nothing missing); that no reference was applied twice; and that the
// journal's purchases match the payments recorded. Accounts in Redis that the
// books do not know are mismatches too.
func (b *Books) Reconcile(ctx context.Context, rs Accounts, account string) (ReconcileResult, error) {
	var res ReconcileResult
	add := func(a, kind, format string, args ...any) {
		res.Mismatches = append(res.Mismatches, Mismatch{Account: a, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
	// The books, as of one snapshot.
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return res, unavailable("reconciling", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		return res, unavailable("reconciling", err)
	}
	type book struct {
		sum, n   int64
		cursor   string
		cursorBA int64
		hasCur   bool
	}
	books := make(map[string]*book)
	rows, err := tx.Query(ctx, `SELECT a.id, coalesce(j.sum, 0), coalesce(j.n, 0), c.at IS NOT NULL,
			coalesce((extract(epoch from c.at) * 1000)::int8, 0), coalesce(c.seq, 0), coalesce(c.balance_after, 0)
		FROM accounts a
		LEFT JOIN (SELECT account, sum(amount) AS sum, count(*) AS n FROM journal GROUP BY account) j ON j.account = a.id
		LEFT JOIN ship_cursor c ON c.account = a.id
		WHERE $1 = '' OR a.id = $1`, account)
	if err != nil {
		return res, unavailable("reconciling", err)
	}
	for rows.Next() {
		var a string
		var bk book
		var id metering.EntryID
		if err := rows.Scan(&a, &bk.sum, &bk.n, &bk.hasCur, &id.Ms, &id.Seq, &bk.cursorBA); err != nil {
			rows.Close()
			return res, unavailable("reconciling", err)
		}
		if bk.hasCur {
			bk.cursor = id.String()
		}
		books[a] = &bk
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, unavailable("reconciling", err)
	}
	res.Accounts = len(books)

	// Chain breaks: an entry whose predecessor is missing (or altered).
	rows, err = tx.Query(ctx, `SELECT account, at, seq, amount, balance_after, prev FROM (
			SELECT account, at, seq, amount, balance_after,
				lag(balance_after, 1, 0::int8) OVER (PARTITION BY account ORDER BY at, seq) AS prev
			FROM journal WHERE $1 = '' OR account = $1) x
		WHERE prev + amount <> balance_after ORDER BY account, at, seq LIMIT 1000`, account)
	if err != nil {
		return res, unavailable("reconciling", err)
	}
	for rows.Next() {
		var a string
		var id metering.EntryID
		var amount, ba, prev int64
		var t time.Time
		if err := rows.Scan(&a, &t, &id.Seq, &amount, &ba, &prev); err != nil {
			rows.Close()
			return res, unavailable("reconciling", err)
		}
		id.Ms = t.UnixMilli()
		add(a, "chain", "entry=%s previous_balance=%d amount=%d balance_after=%d (a predecessor is missing)", id, prev, amount, ba)
	}
	rows.Close()
	// A reference applied twice (a request charged twice, a sale credited twice).
	rows, err = tx.Query(ctx, `SELECT account, type, ref, count(*) FROM journal
		WHERE ref <> '' AND ($1 = '' OR account = $1) GROUP BY account, type, ref HAVING count(*) > 1 LIMIT 1000`, account)
	if err != nil {
		return res, unavailable("reconciling", err)
	}
	for rows.Next() {
		var a, typ, ref string
		var n int64
		if err := rows.Scan(&a, &typ, &ref, &n); err != nil {
			rows.Close()
			return res, unavailable("reconciling", err)
		}
		add(a, "duplicate", "type=%s ref=%s entries=%d", typ, ref, n)
	}
	rows.Close()
	// Purchases against payments: each purchase entry has its payment with
	// the same credits, each payment its purchase (once shipped).
	rows, err = tx.Query(ctx, `SELECT coalesce(p.account, j.account), coalesce(p.ref, j.ref), p.credits, j.amount
		FROM (SELECT * FROM payments WHERE $1 = '' OR account = $1) p
		FULL JOIN (SELECT account, ref, amount FROM journal WHERE type IN ('purchase', 'auto_recharge')
			AND ($1 = '' OR account = $1)) j ON j.account = p.account AND j.ref = p.ref
		WHERE p.credits IS DISTINCT FROM j.amount LIMIT 10000`, account)
	if err != nil {
		return res, unavailable("reconciling", err)
	}
	type payGap struct {
		a, ref             string
		credits, journaled *int64
	}
	var gaps []payGap
	for rows.Next() {
		var g payGap
		if err := rows.Scan(&g.a, &g.ref, &g.credits, &g.journaled); err != nil {
			rows.Close()
			return res, unavailable("reconciling", err)
		}
		gaps = append(gaps, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, unavailable("reconciling", err)
	}
	_ = tx.Commit(ctx)

	// Redis: each account's balance and the entries past its cursor.
	unshippedRefs := make(map[string]map[string]int64)
	names := make([]string, 0, len(books))
	for a := range books {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		bk := books[a]
		if bk.hasCur && bk.sum != bk.cursorBA {
			add(a, "chain", "journal_sum=%d cursor_balance_after=%d", bk.sum, bk.cursorBA)
		}
		balance, after, err := rs.BalanceAfter(ctx, a, bk.cursor)
		if err != nil {
			if isNoAccount(err) {
				add(a, "missing_in_redis", "books=%d", bk.sum)
				continue
			}
			return res, err
		}
		var pending int64
		for _, e := range after {
			pending += e.Amount
			if e.Type == "purchase" || e.Type == "auto_recharge" {
				if unshippedRefs[a] == nil {
					unshippedRefs[a] = make(map[string]int64)
				}
				unshippedRefs[a][e.Reference] = e.Amount
			}
		}
		if bk.sum+pending != balance {
			add(a, "balance", "books=%d unshipped=%d (%d entries) redis=%d diff=%d", bk.sum, pending, len(after), balance, balance-bk.sum-pending)
		}
	}
	for _, g := range gaps {
		if g.journaled == nil && g.credits != nil && unshippedRefs[g.a][g.ref] == *g.credits {
			continue // its purchase is in Redis, not shipped yet
		}
		add(g.a, "payment", "ref=%s payment_credits=%s journal_credits=%s", g.ref, opt(g.credits), opt(g.journaled))
	}
	if account == "" {
		err := rs.ScanAccounts(ctx, func(accts []string) error {
			for _, a := range accts {
				if books[a] == nil {
					add(a, "not_in_books", "the account is in Redis only")
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	sort.SliceStable(res.Mismatches, func(i, j int) bool { return res.Mismatches[i].Account < res.Mismatches[j].Account })
	return res, nil
}

func opt(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// PrintReconcile writes one line per mismatch and, last, the summary.
func PrintReconcile(w io.Writer, r ReconcileResult) {
	for _, m := range r.Mismatches {
		fmt.Fprintln(w, m.String())
	}
	fmt.Fprintf(w, "accounts=%d mismatches=%d\n", r.Accounts, len(r.Mismatches))
}

func isNoAccount(err error) bool { return errors.Is(err, metering.ErrNoAccount) }
