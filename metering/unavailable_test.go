package metering_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// With Redis gone every operation fails fast with ErrUnavailable, so that the
// proxy answers 503 instead of serving a call without a hold.
func TestRedisDown(t *testing.T) {
	e := newEnv(t, metering.Options{})
	rdb := redis.NewClient(&redis.Options{
		Addr: e.srv.Addr, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 4,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	st := metering.New(rdb, metering.Options{})
	ctx := context.Background()
	if err := st.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAccount(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credit(ctx, metering.Credit{Account: "acme", Amount: 100_000, Reference: "fund"}); err != nil {
		t.Fatal(err)
	}
	k, secret, err := st.CreateKey(ctx, "acme", "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "inflight", Fixed: 1000}); err != nil {
		t.Fatal(err)
	}

	e.srv.Stop()

	ops := map[string]func() error{
		"Ping":          func() error { return st.Ping(ctx) },
		"LoadScripts":   func() error { return st.LoadScripts(ctx) },
		"CreateAccount": func() error { _, err := st.CreateAccount(ctx, "new"); return err },
		"EnsureAccount": func() error { _, err := st.EnsureAccount(ctx, "new"); return err },
		"Account":       func() error { _, err := st.Account(ctx, "acme"); return err },
		"Reserve": func() error {
			_, err := st.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "h2", Fixed: 1000})
			return err
		},
		"Settle": func() error {
			_, err := st.Settle(ctx, metering.Settlement{Account: "acme", HoldID: "inflight", Cost: 10, Record: metering.Record{RequestID: "inflight"}})
			return err
		},
		"Release": func() error { return st.Release(ctx, "acme", "", "inflight", nil) },
		"Credit": func() error {
			_, err := st.Credit(ctx, metering.Credit{Account: "acme", Amount: 5, Reference: "evt_down"})
			return err
		},
		// Never seen by this store: no cache entry can answer for it.
		"Authenticate": func() error { _, err := st.Authenticate(ctx, []byte(secret)); return err },
		"CreateKey":    func() error { _, _, err := st.CreateKey(ctx, "acme", "k2", 0); return err },
		"RevokeKey":    func() error { return st.RevokeKey(ctx, "acme", k.ID) },
		"Keys":         func() error { _, err := st.Keys(ctx, "acme"); return err },
		"Ledger":       func() error { _, err := st.Ledger(ctx, "acme", metering.LedgerQuery{}); return err },
		"AllEntries":   func() error { _, err := st.AllEntries(ctx, "acme"); return err },
		"Generation":   func() error { _, err := st.Generation(ctx, "acme", "x"); return err },
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := op()
			if !errors.Is(err, metering.ErrUnavailable) {
				t.Errorf("error = %v, want ErrUnavailable", err)
			}
			for _, other := range []error{metering.ErrInsufficient, metering.ErrBadKey, metering.ErrNoAccount, metering.ErrNotFound} {
				if errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v to fail", d)
			}
		})
	}

	// Back up (empty: nothing persisted). The scripts are gone from Redis's
	// cache; the store must fall back to EVAL.
	e.srv.Restart(t)
	var ok bool
	for range 50 {
		if st.Ping(ctx) == nil {
			ok = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !ok {
		t.Fatal("store did not reconnect")
	}
	if _, err := st.Account(ctx, "acme"); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("Account after an empty restart error = %v, want ErrNoAccount", err)
	}
	if _, err := st.CreateAccount(ctx, "acme"); err != nil {
		t.Fatalf("CreateAccount after restart: %v", err)
	}
	if _, err := st.Credit(ctx, metering.Credit{Account: "acme", Amount: 500, Reference: "r"}); err != nil {
		t.Fatal(err)
	}
	h, err := st.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "h", Fixed: 400})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Settle(ctx, metering.Settlement{Account: "acme", HoldID: h.ID, Cost: 300, Record: metering.Record{RequestID: "h"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Release(ctx, "acme", "", "none", nil); err != nil {
		t.Fatal(err)
	}
	assertLedger(t, st, "acme")
}

// A cancelled or timed-out context is also reported as ErrUnavailable: the
// call is refused, never served without a hold.
func TestContextDeadline(t *testing.T) {
	e := newEnv(t, metering.Options{})
	e.account(t, "acme", 1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "h", Fixed: 1}); !errors.Is(err, metering.ErrUnavailable) {
		t.Errorf("Reserve(cancelled ctx) error = %v, want ErrUnavailable", err)
	}
	if a := e.acct(t, "acme"); a.Reserved != 0 {
		t.Errorf("reserved %d", a.Reserved)
	}
	assertLedger(t, e.st, "acme")
}

// An error Redis answers for the command itself (here a wrong type under an
// account's hold key) is not unavailability: retrying would fail the same way,
// so callers must not treat it as an outage to wait out. A server that is
// busy or loading is.
func TestRefusalIsNotUnavailability(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "acme", 100_000)
	if err := e.rdb.Set(ctx, "{a:acme}:hval", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "r", Fixed: 10})
	if err == nil || errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("Reserve over a corrupt key: %v; want an error that is not ErrUnavailable", err)
	}
	_, err = e.st.Settle(ctx, metering.Settlement{Account: "acme", HoldID: "r", Cost: 10})
	if err == nil || errors.Is(err, metering.ErrUnavailable) {
		t.Fatalf("Settle over a corrupt key: %v; want an error that is not ErrUnavailable", err)
	}
}
