// Package testledger gives tests a throwaway redis-server with a
// metering.Store over it, accounts funded in one line, and the ledger
// invariant check (DESIGN.md §8, invariant 1) that every money test ends with.
package testledger

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// Env is one throwaway redis-server and a Store over it.
type Env struct {
	Srv *testredis.Server
	RDB *redis.Client
	St  *metering.Store
}

// New starts a redis-server for the test and a Store over it.
func New(t testing.TB, opts metering.Options) *Env {
	t.Helper()
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	return &Env{Srv: srv, RDB: rdb, St: metering.New(rdb, opts)}
}

// Replica is another Store (another proxy process) over the same Redis.
func (e *Env) Replica(t testing.TB, opts metering.Options) *metering.Store {
	t.Helper()
	return metering.New(e.Srv.Client(t), opts)
}

// Account creates id and, when fund is not zero, credits it once (a purchase).
func (e *Env) Account(t testing.TB, id string, fund int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.St.CreateAccount(ctx, id); err != nil {
		t.Fatalf("CreateAccount(%q): %v", id, err)
	}
	if fund != 0 {
		c, err := e.St.Credit(ctx, metering.Credit{Account: id, Amount: fund, Reference: "fund-" + id, Type: "purchase"})
		if err != nil || !c.Applied || c.BalanceAfter != fund {
			t.Fatalf("funding %q with %d: %+v, %v", id, fund, c, err)
		}
	}
}

// Acct reads an account.
func (e *Env) Acct(t testing.TB, id string) metering.Account {
	t.Helper()
	a, err := e.St.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	return a
}

// Entries reads an account's whole ledger.
func (e *Env) Entries(t testing.TB, id string) []metering.Entry {
	t.Helper()
	all, err := e.St.AllEntries(context.Background(), id)
	if err != nil {
		t.Fatalf("AllEntries(%q): %v", id, err)
	}
	return all
}

// Assert checks DESIGN.md §8 invariant 1 for account: the ledger's amounts
// sum to the balance (and each entry's balance_after is the running sum),
// purchased − consumed = balance, Σ credits = purchased, Σ usage debits =
// consumed, and no hold is negative.
func Assert(t testing.TB, st *metering.Store, account string) {
	t.Helper()
	ctx := context.Background()
	a, err := st.Account(ctx, account)
	if err != nil {
		t.Fatalf("ledger: Account(%q): %v", account, err)
	}
	entries, err := st.AllEntries(ctx, account)
	if err != nil {
		t.Fatalf("ledger: AllEntries(%q): %v", account, err)
	}
	var sum, credits, debits int64
	for i, e := range entries {
		sum += e.Amount
		if e.BalanceAfter != sum {
			t.Errorf("ledger %s: entry %d (%s %s %d) balance_after %d, running sum %d",
				account, i, e.ID, e.Type, e.Amount, e.BalanceAfter, sum)
		}
		if e.Type == "usage" {
			if e.Amount > 0 {
				t.Errorf("ledger %s: usage entry %s credits %d", account, e.ID, e.Amount)
			}
			debits -= e.Amount
		} else {
			credits += e.Amount
		}
	}
	if sum != a.Balance {
		t.Errorf("ledger %s: Σ ledger = %d, balance = %d", account, sum, a.Balance)
	}
	if a.Purchased-a.Consumed != a.Balance {
		t.Errorf("ledger %s: purchased %d − consumed %d = %d, balance %d",
			account, a.Purchased, a.Consumed, a.Purchased-a.Consumed, a.Balance)
	}
	if credits != a.Purchased {
		t.Errorf("ledger %s: Σ credit entries = %d, purchased = %d", account, credits, a.Purchased)
	}
	if debits != a.Consumed {
		t.Errorf("ledger %s: Σ usage debits = %d, consumed = %d", account, debits, a.Consumed)
	}
	if a.Reserved < 0 {
		t.Errorf("ledger %s: reserved %d < 0", account, a.Reserved)
	}
}

// WantInsufficient asserts err is a *metering.InsufficientError with these figures.
func WantInsufficient(t testing.TB, err error, needed, available int64, keyLimit bool) {
	t.Helper()
	if !errors.Is(err, metering.ErrInsufficient) {
		t.Fatalf("error = %v, want ErrInsufficient", err)
	}
	var ie *metering.InsufficientError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T is not an *InsufficientError", err)
	}
	if ie.Needed != needed || ie.Available != available || ie.KeyLimit != keyLimit {
		t.Errorf("InsufficientError = %+v, want needed %d available %d keyLimit %v", *ie, needed, available, keyLimit)
	}
	if errors.Is(err, metering.ErrUnavailable) || errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("insufficient error %v also matches another sentinel", err)
	}
}
