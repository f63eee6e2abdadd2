package metering_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// env is one throwaway redis-server and a Store over it.
type env struct {
	srv *testredis.Server
	rdb *redis.Client
	st  *metering.Store
}

func newEnv(t testing.TB, opts metering.Options) *env {
	t.Helper()
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	return &env{srv: srv, rdb: rdb, st: metering.New(rdb, opts)}
}

// replica is another Store (another proxy process) over the same Redis.
func (e *env) replica(t testing.TB, opts metering.Options) *metering.Store {
	t.Helper()
	return metering.New(e.srv.Client(t), opts)
}

// account creates id and, when fund is not zero, credits it once.
func (e *env) account(t testing.TB, id string, fund int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.CreateAccount(ctx, id); err != nil {
		t.Fatalf("CreateAccount(%q): %v", id, err)
	}
	if fund != 0 {
		c, err := e.st.Credit(ctx, metering.Credit{Account: id, Amount: fund, Reference: "fund-" + id, Type: "purchase"})
		if err != nil || !c.Applied || c.BalanceAfter != fund {
			t.Fatalf("funding %q with %d: %+v, %v", id, fund, c, err)
		}
	}
}

func (e *env) acct(t testing.TB, id string) metering.Account {
	t.Helper()
	a, err := e.st.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	return a
}

func (e *env) entries(t testing.TB, id string) []metering.Entry {
	t.Helper()
	all, err := e.st.AllEntries(context.Background(), id)
	if err != nil {
		t.Fatalf("AllEntries(%q): %v", id, err)
	}
	return all
}

// assertLedger checks DESIGN.md §8 invariant 1 for account: the ledger's
// amounts sum to the balance (and each entry's balance_after is the running
// sum), purchased − consumed = balance, Σ credits = purchased and
// Σ usage debits = consumed.
func assertLedger(t testing.TB, st *metering.Store, account string) {
	t.Helper()
	ctx := context.Background()
	a, err := st.Account(ctx, account)
	if err != nil {
		t.Fatalf("assertLedger: Account(%q): %v", account, err)
	}
	entries, err := st.AllEntries(ctx, account)
	if err != nil {
		t.Fatalf("assertLedger: AllEntries(%q): %v", account, err)
	}
	var sum, credits, debits int64
	for i, e := range entries {
		sum += e.Amount
		if e.BalanceAfter != sum {
			t.Errorf("assertLedger %s: entry %d (%s %s %d) balance_after %d, running sum %d",
				account, i, e.ID, e.Type, e.Amount, e.BalanceAfter, sum)
		}
		if e.Type == "usage" {
			if e.Amount > 0 {
				t.Errorf("assertLedger %s: usage entry %s credits %d", account, e.ID, e.Amount)
			}
			debits -= e.Amount
		} else {
			credits += e.Amount
		}
	}
	if sum != a.Balance {
		t.Errorf("assertLedger %s: Σ ledger = %d, balance = %d", account, sum, a.Balance)
	}
	if a.Purchased-a.Consumed != a.Balance {
		t.Errorf("assertLedger %s: purchased %d − consumed %d = %d, balance %d",
			account, a.Purchased, a.Consumed, a.Purchased-a.Consumed, a.Balance)
	}
	if credits != a.Purchased {
		t.Errorf("assertLedger %s: Σ credit entries = %d, purchased = %d", account, credits, a.Purchased)
	}
	if debits != a.Consumed {
		t.Errorf("assertLedger %s: Σ usage debits = %d, consumed = %d", account, debits, a.Consumed)
	}
	if a.Reserved < 0 {
		t.Errorf("assertLedger %s: reserved %d < 0", account, a.Reserved)
	}
}

// wantInsufficient asserts err is an *InsufficientError with these figures.
func wantInsufficient(t testing.TB, err error, needed, available int64, keyLimit bool) {
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

func within(t testing.TB, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.Before(lo) || got.After(hi) {
		t.Errorf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}
