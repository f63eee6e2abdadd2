package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tollgate/tollgate/books"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

const adminUsage = `usage: tollgate admin [-config FILE] <command>

  account create <id>                       create an account
  account show <id>                         balances (credits)
  key create <account> [name] [limit]       issue an API key (shown once); limit in credits
  key list <account>                        list keys
  key revoke <account> <key id>             revoke a key
  credit <account> <credits> <reference>    grant credits once per reference (negative: adjust);
                                            the same reference as the admin API's is the same credit
  ledger <account> [limit]                  newest ledger entries (with DATABASE_URL: the journal
                                            and Redis together, as billing reads them)

  reconcile [--account ID]                  the books (PostgreSQL) against Redis; one line per
                                            mismatch, then accounts=N mismatches=M (exit 1 if M > 0)
  restore                                   rebuild a Redis that lost its data from the books;
                                            shipped=S (entries Redis still held of the accounts
                                            it lost, shipped before each is written back), then
                                            last unshipped=K (entries Redis holds past the books
                                            after the restore, not in the balance; listed)
  journal status                            how far journal shipping stands (lag, backlog)

Works against Redis directly (REDIS_URL or the config's redis section); the
last three also need the books (DATABASE_URL); when it is set, the others go
through the books too (accounts and keys reach them; ledger reads the journal).
`

// runAdmin performs control-plane operations in Redis, through the durable
// books when a database is configured (as the billing API does).
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin", stderr)
	cfgPath := fs.String("config", envOr("TOLLGATE_CONFIG", "configs/tollgate.yaml"), "configuration file")
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage+envHelp) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 && !booksVerb(rest) {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("admin: missing command")
	}
	l, err := load(*cfgPath, stderr)
	if err != nil {
		return err
	}
	rdb, err := redisClient(l.cfg.Redis, 5*time.Second)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := metering.New(rdb, metering.Options{HoldTTL: l.cfg.Proxy.HoldTTL.D(), KeyCacheTTL: -1})
	if booksVerb(rest) {
		return booksCommand(ctx, l.cfg, st, rest, stdout)
	}
	var as adminStore = st
	if databaseURL(l.cfg) != "" {
		// Through the books, as billing: accounts and keys reach them before
		// they are acknowledged, and the ledger is the journal and Redis
		// together (what retention trimmed from Redis is still listed).
		b, err := openBooks(ctx, l.cfg)
		if err != nil {
			return err
		}
		defer b.Close()
		as = b.NewStore(st)
	}
	return adminCommand(ctx, as, rest, stdout)
}

// adminStore is what the admin commands use: *metering.Store (Redis alone),
// or with durable books *books.Store (writes reach PostgreSQL too; the
// ledger reads the journal with Redis).
type adminStore interface {
	Account(ctx context.Context, id string) (metering.Account, error)
	CreateAccount(ctx context.Context, id string) (metering.Account, error)
	CreateKey(ctx context.Context, account, name string, limit int64) (metering.Key, string, error)
	Keys(ctx context.Context, account string) ([]metering.KeyUsage, error)
	RevokeKey(ctx context.Context, account, keyID string) error
	Credit(ctx context.Context, c metering.Credit) (metering.Credited, error)
	Ledger(ctx context.Context, account string, q metering.LedgerQuery) ([]metering.Entry, error)
}

var (
	_ adminStore = (*metering.Store)(nil)
	_ adminStore = (*books.Store)(nil)
)

func adminCommand(ctx context.Context, st adminStore, a []string, out io.Writer) error {
	need := func(n int) error {
		if len(a) < n {
			return fmt.Errorf("admin %s: missing arguments\n\n%s", strings.Join(a, " "), adminUsage)
		}
		return nil
	}
	printJSON := func(v any) error {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	switch a[0] + " " + a[1] {
	case "account create":
		if err := need(3); err != nil {
			return err
		}
		acct, err := st.CreateAccount(ctx, a[2])
		if err != nil {
			return err
		}
		return printJSON(accountView(acct))
	case "account show":
		if err := need(3); err != nil {
			return err
		}
		acct, err := st.Account(ctx, a[2])
		if err != nil {
			return err
		}
		return printJSON(accountView(acct))
	case "key create":
		if err := need(3); err != nil {
			return err
		}
		name, limit := "cli", int64(0)
		if len(a) > 3 {
			name = a[3]
		}
		if len(a) > 4 {
			var err error
			if limit, err = pricing.ParseCredits(a[4]); err != nil {
				return err
			}
		}
		k, secret, err := st.CreateKey(ctx, a[2], name, limit)
		if err != nil {
			return err
		}
		return printJSON(map[string]any{"id": k.ID, "key": secret, "name": k.Name, "account": k.Account})
	case "key list":
		if err := need(3); err != nil {
			return err
		}
		keys, err := st.Keys(ctx, a[2])
		if err != nil {
			return err
		}
		return printJSON(keys)
	case "key revoke":
		if err := need(4); err != nil {
			return err
		}
		if err := st.RevokeKey(ctx, a[2], a[3]); err != nil {
			return err
		}
		fmt.Fprintln(out, "revoked", a[3])
		return nil
	}
	switch a[0] {
	case "credit":
		if err := need(4); err != nil {
			return err
		}
		mc, err := pricing.ParseCredits(a[2])
		if err != nil {
			return err
		}
		// The same reference as the admin API's is the same credit: metering
		// applies every operator reference in one namespace of its own.
		typ := metering.Grant
		if mc < 0 {
			typ = metering.Adjustment
		}
		res, err := st.Credit(ctx, metering.Credit{Account: a[1], Amount: mc, Reference: a[3], Type: typ,
			Fields: map[string]string{"description": "admin CLI"}})
		if err != nil {
			return err
		}
		return printJSON(map[string]any{"applied": res.Applied, "balance": pricing.FormatCredits(res.BalanceAfter)})
	case "ledger":
		limit := int64(20)
		if len(a) > 2 {
			if _, err := fmt.Sscan(a[2], &limit); err != nil {
				return fmt.Errorf("limit: %w", err)
			}
		}
		entries, err := st.Ledger(ctx, a[1], metering.LedgerQuery{Limit: limit})
		if err != nil {
			return err
		}
		for _, e := range entries {
			fmt.Fprintf(out, "%s  %-13s %14s  balance %14s  %s\n", e.CreatedAt.Format(time.RFC3339), e.Type,
				pricing.FormatCredits(e.Amount), pricing.FormatCredits(e.BalanceAfter), e.Reference)
		}
		return nil
	}
	return fmt.Errorf("admin: unknown command %q\n\n%s", strings.Join(a, " "), adminUsage)
}

func accountView(a metering.Account) map[string]string {
	return map[string]string{
		"id": a.ID, "balance": pricing.FormatCredits(a.Balance), "reserved": pricing.FormatCredits(a.Reserved),
		"total_purchased": pricing.FormatCredits(a.Purchased), "total_granted": pricing.FormatCredits(a.Granted),
		"total_adjusted": pricing.FormatCredits(a.Adjusted), "total_consumed": pricing.FormatCredits(a.Consumed),
		"total_promotional": pricing.FormatCredits(a.Promoted), "promotional": pricing.FormatCredits(a.Promotional),
	}
}
