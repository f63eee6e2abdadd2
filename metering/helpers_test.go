package metering_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// env is internal/testledger's Env under the short names these tests use.
type env struct {
	*testledger.Env
	srv *testredis.Server
	rdb *redis.Client
	st  *metering.Store
}

func newEnv(t testing.TB, opts metering.Options) *env {
	t.Helper()
	e := testledger.New(t, opts)
	return &env{Env: e, srv: e.Srv, rdb: e.RDB, st: e.St}
}

func (e *env) replica(t testing.TB, opts metering.Options) *metering.Store { return e.Replica(t, opts) }
func (e *env) account(t testing.TB, id string, fund int64)                 { e.Account(t, id, fund) }
func (e *env) acct(t testing.TB, id string) metering.Account               { return e.Acct(t, id) }
func (e *env) entries(t testing.TB, id string) []metering.Entry            { return e.Entries(t, id) }
func (e *env) sell(t testing.TB, account, session string, mc int64) metering.Fulfilled {
	return e.Sell(t, account, session, mc)
}

func assertLedger(t testing.TB, st *metering.Store, account string) {
	t.Helper()
	testledger.Assert(t, st, account)
}

func wantInsufficient(t testing.TB, err error, needed, available int64, keyLimit bool) {
	t.Helper()
	testledger.WantInsufficient(t, err, needed, available, keyLimit)
}

func within(t testing.TB, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.Before(lo) || got.After(hi) {
		t.Errorf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}
