package books

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/internal/testpg"
	"github.com/tollgate/tollgate/metering"
)

// env is a throwaway Redis (with a Store) and a throwaway PostgreSQL with
// the schema applied.
type env struct {
	*testledger.Env
	pg *testpg.Server
	b  *Books
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{Env: testledger.New(t, metering.Options{KeyCacheTTL: -1})}
	e.pg = testpg.Start(t)
	b, err := Open(context.Background(), e.pg.URL(), Options{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Migrate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	e.b = b
	return e
}

var callSeq atomic.Int64

// call charges account one call of cost mc for model (reserve + settle).
func (e *env) call(t testing.TB, st *metering.Store, account, model string, cost int64) {
	t.Helper()
	ctx := context.Background()
	id := fmt.Sprintf("req-%d", callSeq.Add(1))
	if _, err := st.Reserve(ctx, metering.HoldRequest{Account: account, HoldID: id, Fixed: cost, MinOutput: 0, MaxOutput: 0}); err != nil {
		t.Errorf("reserve: %v", err)
		return
	}
	if _, err := st.Settle(ctx, metering.Settlement{Account: account, HoldID: id, Cost: cost,
		Record: metering.Record{Model: model, Input: 10, Output: 5}}); err != nil {
		t.Errorf("settle: %v", err)
	}
}

// journal is what the books hold for account: entry ids in order, and the sum.
func (e *env) journal(t testing.TB, account string) (ids []string, sum int64) {
	t.Helper()
	rows, err := e.b.pool.Query(context.Background(),
		`SELECT (extract(epoch from at) * 1000)::int8, seq, amount FROM journal WHERE account = $1 ORDER BY at, seq`, account)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var ms, seq, amount int64
		if err := rows.Scan(&ms, &seq, &amount); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, metering.EntryID{Ms: ms, Seq: seq}.String())
		sum += amount
	}
	return ids, sum
}

// assertShipped checks that the journal holds exactly the account's Redis
// ledger: the same ids in the same order (none missing, none twice), and
// that its sum is the balance.
func (e *env) assertShipped(t testing.TB, account string) {
	t.Helper()
	entries := e.Entries(t, account)
	ids, sum := e.journal(t, account)
	if len(ids) != len(entries) {
		t.Fatalf("%s: journal has %d entries, Redis %d", account, len(ids), len(entries))
	}
	for i, en := range entries {
		if ids[i] != en.ID {
			t.Fatalf("%s: journal entry %d is %s, Redis %s", account, i, ids[i], en.ID)
		}
	}
	if bal := e.Acct(t, account).Balance; bal != sum {
		t.Fatalf("%s: journal sums to %d, balance %d", account, sum, bal)
	}
}

func errorsIsLost(err error) bool { return errors.Is(err, metering.ErrStoreLost) }

// account creates id through the books' Store (the account recorded first)
// and sells it fund mc (the payment recorded as billing records it).
func (e *env) account(t testing.TB, id string, fund int64) {
	t.Helper()
	ctx := context.Background()
	bs := e.b.NewStore(e.St)
	if _, err := bs.CreateAccount(ctx, id); err != nil {
		t.Fatal(err)
	}
	session := "fund-" + id
	if err := e.St.SaveCheckout(ctx, metering.Checkout{SessionID: session, Account: id, Pack: "test",
		Credits: fund, PriceMinor: 100, Currency: "usd"}); err != nil {
		t.Fatal(err)
	}
	if f, err := bs.FulfilCheckout(ctx, metering.Fulfilment{Account: id, SessionID: session, PaymentID: "pi_" + session,
		AmountMinor: 100, Currency: "usd"}); err != nil || !f.Applied {
		t.Fatalf("funding %s: %+v %v", id, f, err)
	}
}
