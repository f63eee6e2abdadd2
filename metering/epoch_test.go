package metering_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// TestWritesIntoALostRedisSayLost: after Redis lost its data, every script
// that finds its account missing reports ErrStoreLost (503, wait for the
// restore) — the per-call hold, the lease grant and an operator credit alike
// — never ErrNoAccount, which the proxy answers 401 invalid_api_key (a call
// whose key was still in a replica's key cache got that 4 ms after a flush).
func TestWritesIntoALostRedisSayLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	if _, _, err := e.st.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	e.account(t, "gone", 100_000)
	if err := e.RDB.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"reserve", func() error {
			_, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "gone", HoldID: "h1", Fixed: 10})
			return err
		}},
		{"lease grant", func() error {
			_, err := e.st.GrantLease(ctx, metering.LeaseGrant{Account: "gone", LeaseID: "lease:r1", Least: 10, Most: 100, TTL: time.Minute})
			return err
		}},
		{"credit", func() error {
			_, err := e.st.Credit(ctx, metering.Credit{Account: "gone", Amount: 1000, Reference: "after-the-flush"})
			return err
		}},
	} {
		err := tc.err()
		if !errors.Is(err, metering.ErrStoreLost) || errors.Is(err, metering.ErrNoAccount) {
			t.Errorf("%s into a lost Redis: %v; want ErrStoreLost", tc.name, err)
		}
	}
	// Nothing was created in the empty Redis.
	if n, _ := e.RDB.DBSize(ctx).Result(); n != 0 {
		keys, _ := e.RDB.Keys(ctx, "*").Result()
		t.Errorf("the lost Redis holds %d keys after the refused writes: %v", n, keys)
	}
}
