package books

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// keyCall charges account one call of cost mc under key (reserve + settle)
// with hold id id, and returns the charge.
func keyCall(t testing.TB, st *metering.Store, account, key, id string, cost int64) metering.Charge {
	t.Helper()
	ctx := context.Background()
	if _, err := st.Reserve(ctx, metering.HoldRequest{Account: account, KeyID: key, HoldID: id, Model: "m", Fixed: cost}); err != nil {
		t.Fatalf("reserve %s: %v", id, err)
	}
	c, err := st.Settle(ctx, metering.Settlement{Account: account, KeyID: key, HoldID: id, Cost: cost,
		Record: metering.Record{Model: "m", Input: 10, Output: 5}})
	if err != nil {
		t.Fatalf("settle %s: %v", id, err)
	}
	return c
}

func keyOf(t testing.TB, st *metering.Store, account, id string) metering.KeyUsage {
	t.Helper()
	keys, err := st.Keys(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("no key %s in %+v", id, keys)
	return metering.KeyUsage{}
}

// TestRestoreKeySpendAndCostRecords: usage entries name their key and ship
// with it; after Redis is lost and restored, a key's spend towards its credit
// limit and its budget period come back from the journal (the budget does
// not restart at 0), and a charge retried after the restore is replayed from
// its restored cost record, never charged twice.
func TestRestoreKeySpendAndCostRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acct-k", 100_000_000)
	bs := e.b.NewStore(e.St)
	k, secret, err := bs.IssueKey(ctx, metering.NewKey{Account: "acct-k", Name: "budgeted", CreditLimit: 50_000_000,
		Settings: metering.KeySettings{Budget: 10_000_000, BudgetPeriod: metering.PeriodDay}})
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := bs.CreateKey(ctx, "acct-k", "plain", 0)
	if err != nil {
		t.Fatal(err)
	}
	var last metering.Charge
	for i := range 5 {
		last = keyCall(t, e.St, "acct-k", k.ID, fmt.Sprintf("kc-%d", i), 1_000_000+int64(i))
	}
	keyCall(t, e.St, "acct-k", plain.ID, "pc-0", 700)
	e.call(t, e.St, "acct-k", "m", 300) // no key
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	var keyed, named int64
	if err := e.b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE key_id = $1), count(key_id) FROM journal WHERE account = 'acct-k'`,
		k.ID).Scan(&keyed, &named); err != nil {
		t.Fatal(err)
	}
	if keyed != 5 || named != 6 {
		t.Fatalf("journal: %d entries of the key, %d naming a key; want 5 and 6", keyed, named)
	}
	before, beforePlain, acct := keyOf(t, e.St, "acct-k", k.ID), keyOf(t, e.St, "acct-k", plain.ID), e.Acct(t, "acct-k")
	if before.PeriodUsed != 5_000_010 || before.Used != 5_000_010 || beforePlain.Used != 700 {
		t.Fatalf("before the loss: %+v %+v", before, beforePlain)
	}

	e.Srv.Flush(t)
	res, err := e.b.Restore(ctx, e.St, io.Discard)
	if err != nil || res.Restored != 1 || res.Records != 7 {
		t.Fatalf("Restore = %+v, %v; want 1 restored, 7 cost records", res, err)
	}
	after, afterPlain := keyOf(t, e.St, "acct-k", k.ID), keyOf(t, e.St, "acct-k", plain.ID)
	if after.PeriodUsed != before.PeriodUsed || after.Used != before.Used || afterPlain.Used != beforePlain.Used {
		t.Fatalf("key spend after restore: %+v %+v, before %+v %+v", after, afterPlain, before, beforePlain)
	}
	if id, err := e.St.Authenticate(ctx, []byte(secret)); err != nil || !id.Limited {
		t.Fatalf("the budgeted key after restore: %+v %v", id, err)
	}
	// The last charge retried (a proxy that never got its answer): replayed.
	c, err := e.St.Settle(ctx, metering.Settlement{Account: "acct-k", KeyID: k.ID, HoldID: "kc-4", Cost: 1_000_004,
		Record: metering.Record{Model: "m", Input: 10, Output: 5}})
	if err != nil || !c.Replay || c.BalanceAfter != last.BalanceAfter || c.Charged != last.Charged {
		t.Fatalf("retried charge after restore: %+v %v, want a replay of %+v", c, err, last)
	}
	if got := e.Acct(t, "acct-k"); got.Balance != acct.Balance || got.Consumed != acct.Consumed {
		t.Fatalf("after the retried charge: %+v, before the loss %+v", got, acct)
	}
	// The budget holds on from where it was: 10,000,000 a day, 5,000,010
	// spent; a call of 5,000,000 more is refused.
	_, err = e.St.Reserve(ctx, metering.HoldRequest{Account: "acct-k", KeyID: k.ID, HoldID: "kc-over", Model: "m", Fixed: 5_000_000})
	var kre *metering.KeyRuleError
	if !errors.As(err, &kre) || kre.Rule != metering.RuleBudget {
		t.Fatalf("a call past the budget after restore: %v, want a budget refusal", err)
	}
	e.reconcileClean(t, 5*time.Second)
}

// failAfter fails every command once the restore script has run (a restore
// cut short right after it), as a lost connection would.
type failAfter struct{ tripped atomic.Bool }

var errCut = errors.New("test: connection cut")

func (f *failAfter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failAfter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.tripped.Load() {
			cmd.SetErr(errCut)
			return errCut
		}
		err := next(ctx, cmd)
		if name := cmd.Name(); err == nil && (name == "evalsha" || name == "eval") && restoreScript(cmd.Args()) {
			f.tripped.Store(true)
		}
		return err
	}
}

// restoreScript reports whether args are a call of restore_account.lua.
func restoreScript(args []any) bool {
	for _, a := range args {
		var s string
		switch v := a.(type) {
		case string:
			s = v
		case []byte:
			s = string(v)
		}
		if strings.HasPrefix(s, `{"acct":[`) {
			return true
		}
	}
	return false
}

func (f *failAfter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.tripped.Load() {
			for _, c := range cmds {
				c.SetErr(errCut)
			}
			return errCut
		}
		return next(ctx, cmds)
	}
}

// TestRestoreAllOrNothing: a restore cut short right after it wrote an
// account leaves that account whole — its governed key's rules and budget
// spend with it, never a key that works without its rules — and running the
// restore again finishes it (the key's lookup).
func TestRestoreAllOrNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acct-a", 100_000_000)
	bs := e.b.NewStore(e.St)
	k, secret, err := bs.IssueKey(ctx, metering.NewKey{Account: "acct-a", Name: "g",
		Settings: metering.KeySettings{Models: []string{"only-this"}, ModelIDs: []string{"only-this"},
			Budget: 3_000_000, BudgetPeriod: metering.PeriodMonth}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.Srv.Flush(t)

	cut := &failAfter{}
	rdb := e.Srv.Client(t)
	rdb.AddHook(cut)
	st := metering.New(rdb, metering.Options{KeyCacheTTL: -1})
	if _, err := e.b.Restore(ctx, st, io.Discard); !errors.Is(err, errCut) || !cut.tripped.Load() {
		t.Fatalf("cut restore: %v (tripped %v)", err, cut.tripped.Load())
	}
	// What the cut restore left: the account, whole.
	if n, _ := e.RDB.Exists(ctx, "{a:acct-a}:acct").Result(); n != 1 {
		t.Fatal("the account is not there after its script ran")
	}
	rules, err := e.RDB.HGetAll(ctx, "{a:acct-a}:kg:"+k.ID).Result()
	if err != nil || rules["models"] != ",only-this," || rules["budget"] != "3000000" || rules["bstart"] == "" {
		t.Fatalf("the governed key's rules after a cut restore: %v %v (an account back without them)", rules, err)
	}
	// Run again: the lookups are written, the key works, governed.
	if res, err := e.b.Restore(ctx, e.St, io.Discard); err != nil || res.Existing != 1 {
		t.Fatalf("second restore: %+v %v", res, err)
	}
	if id, err := e.St.Authenticate(ctx, []byte(secret)); err != nil || !id.Limited || id.KeyID != k.ID {
		t.Fatalf("key after the second restore: %+v %v", id, err)
	}
	_, err = e.St.Reserve(ctx, metering.HoldRequest{Account: "acct-a", KeyID: k.ID, HoldID: "g-1", Model: "m", Fixed: 10})
	var kre *metering.KeyRuleError
	if !errors.As(err, &kre) || kre.Rule != metering.RuleModel {
		t.Fatalf("a call to a model the key may not use: %v, want a model refusal", err)
	}
}

// TestRestoreCountsUnshipped: the entries Redis still holds of an account
// whose account hash it lost, while another shipper holds the account's lock
// (2 s: longer than restore ever retried), are shipped by restore once it has
// the lock and are in the balance written back — none is shipped later on
// top of a balance that lacks it — and after the lock is let go, a sweep and
// another call, reconcile finds no mismatch.
func TestRestoreCountsUnshipped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acct-u", 10_000_000)
	e.account(t, "acct-ok", 10_000_000)
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	sh := e.b.NewShipper(e.St, ShipperOptions{})
	if _, err := sh.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.call(t, e.St, "acct-u", "m", 1000)
	}
	want := e.Acct(t, "acct-u").Balance
	// Another shipper holds acct-u (its advisory lock) for 2 s.
	conn, err := e.b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('tollgate.ship:acct-u', 0))`); err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second)
		_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		released <- err
	}()
	// The account hash is lost (and with it the epoch); its ledger is not.
	if err := e.RDB.Del(ctx, "{a:acct-u}:acct", "{a:acct-ok}:acct", "tg:epoch").Err(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res, err := e.b.Restore(ctx, e.St, &out)
	if err != nil || res.Restored != 2 || res.Shipped != 3 || res.Unshipped != 0 {
		t.Fatalf("Restore = %+v, %v; want 2 restored, 3 shipped\n%s", res, err, out.String())
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if got := e.Acct(t, "acct-u"); got.Balance != want {
		t.Fatalf("acct-u restored with balance %d, it was %d", got.Balance, want)
	}
	e.assertShipped(t, "acct-u")
	e.call(t, e.St, "acct-u", "m", 1000)
	if _, err := sh.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := e.b.Reconcile(ctx, e.St, ""); err != nil || len(r.Mismatches) != 0 {
		t.Fatalf("reconcile after the restore: %v %v", r.Mismatches, err)
	}
	if got := e.Acct(t, "acct-u").Balance; got != want-1000 {
		t.Fatalf("acct-u balance %d after one more call, want %d", got, want-1000)
	}
}

// TestRestoreWhileShippersRun: Redis loses the account hashes of many
// accounts whose ledgers survive with entries not shipped yet, while two
// shippers keep running (sweeping every few ms): restore and the shippers
// contend for the accounts' locks, and every account comes back with its
// balance of before — no entry shipped between its image and its write —
// and reconcile finds no mismatch.
func TestRestoreWhileShippersRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const accounts = 20
	for i := range accounts {
		e.account(t, fmt.Sprintf("acct-r%02d", i), 10_000_000)
	}
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	want := make(map[string]int64)
	var lostKeys []string
	for i := range accounts {
		a := fmt.Sprintf("acct-r%02d", i)
		for c := range 1 + i%4 {
			e.call(t, e.St, a, "m", int64(100+c))
		}
		want[a] = e.Acct(t, a).Balance
		lostKeys = append(lostKeys, "{a:"+a+"}:acct")
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		sh := e.b.NewShipper(e.St, ShipperOptions{Batch: 3, Interval: time.Millisecond, SweepEvery: 5 * time.Millisecond})
		wg.Add(1)
		go func() { defer wg.Done(); _ = sh.Run(runCtx) }()
	}
	if err := e.RDB.Del(ctx, append(lostKeys, "tg:epoch")...).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := e.b.Restore(ctx, e.St, io.Discard)
	stop()
	wg.Wait()
	if err != nil || res.Restored != accounts {
		t.Fatalf("Restore = %+v, %v", res, err)
	}
	for a, bal := range want {
		if got := e.Acct(t, a).Balance; got != bal {
			t.Errorf("%s restored with balance %d, it was %d", a, got, bal)
		}
		e.assertShipped(t, a)
	}
	if r, err := e.b.Reconcile(ctx, e.St, ""); err != nil || len(r.Mismatches) != 0 {
		t.Fatalf("reconcile after the restore: %v %v", r.Mismatches, err)
	}
}

// TestRestoreLockedTooLong: an account whose shipping lock another process
// holds for longer than restore waits fails the restore with
// ErrRestoreLocked, having written nothing of that page; run again once the
// lock is let go, the restore finishes, the entries Redis held in the
// balance.
func TestRestoreLockedTooLong(t *testing.T) {
	defer func(d time.Duration) { restoreLockWait = d }(restoreLockWait)
	restoreLockWait = 200 * time.Millisecond
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acct-l", 10_000_000)
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.call(t, e.St, "acct-l", "m", 1000)
	want := e.Acct(t, "acct-l").Balance
	conn, err := e.b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('tollgate.ship:acct-l', 0))`); err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.Del(ctx, "{a:acct-l}:acct", "tg:epoch").Err(); err != nil {
		t.Fatal(err)
	}
	if res, err := e.b.Restore(ctx, e.St, io.Discard); !errors.Is(err, ErrRestoreLocked) || res.Restored != 0 {
		t.Fatalf("Restore while the lock is held = %+v, %v; want ErrRestoreLocked", res, err)
	}
	if n, _ := e.RDB.Exists(ctx, "{a:acct-l}:acct").Result(); n != 0 {
		t.Fatal("the account was written without its lock")
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	if res, err := e.b.Restore(ctx, e.St, io.Discard); err != nil || res.Restored != 1 {
		t.Fatalf("Restore again = %+v, %v", res, err)
	}
	if got := e.Acct(t, "acct-l").Balance; got != want {
		t.Fatalf("balance %d after the restore, it was %d", got, want)
	}
	e.reconcileClean(t, 0)
}
