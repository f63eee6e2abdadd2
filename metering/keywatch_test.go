package metering_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// waitKeyWatchers waits until n Stores listen on KeysChangedChannel (a
// message published before a Store subscribed reaches it not; what it
// cached before is cleared when it subscribes).
func waitKeyWatchers(t testing.TB, rdb *redis.Client, n int64) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m, err := rdb.PubSubNumSub(ctx, metering.KeysChangedChannel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if m[metering.KeysChangedChannel] >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Stores subscribed to %s, want %d", m[metering.KeysChangedChannel], metering.KeysChangedChannel, n)
		}
	}
}

// TestKeyChangesReachOtherStores: a change to a key made through one Store
// reaches another Store's key cache at once (its TTL is a minute: only the
// published change can explain it): revoked, the key is refused; given its
// first rule, or a member budget over it, it is limited (its calls held one
// by one in Redis).
func TestKeyChangesReachOtherStores(t *testing.T) {
	for _, c := range []struct {
		name    string
		change  func(ctx context.Context, st *metering.Store, k metering.Key) error
		wantErr error
		limited bool
	}{
		{"revoked", func(ctx context.Context, st *metering.Store, k metering.Key) error {
			return st.RevokeKey(ctx, k.Account, k.ID)
		}, metering.ErrBadKey, false},
		{"first budget", func(ctx context.Context, st *metering.Store, k metering.Key) error {
			_, err := st.SetKeySettings(ctx, k.Account, k.ID, nil, metering.KeySettings{Budget: 1000, BudgetPeriod: metering.PeriodDay})
			return err
		}, nil, true},
		{"first rpm", func(ctx context.Context, st *metering.Store, k metering.Key) error {
			_, err := st.SetKeySettings(ctx, k.Account, k.ID, nil, metering.KeySettings{RPM: 5})
			return err
		}, nil, true},
		{"member budget", func(ctx context.Context, st *metering.Store, k metering.Key) error {
			return st.SetMemberBudget(ctx, k.Account, "bob", 1000, metering.PeriodMonth)
		}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, metering.Options{KeyCacheTTL: time.Minute})
			other := e.replica(t, metering.Options{KeyCacheTTL: time.Minute})
			waitKeyWatchers(t, e.rdb, 2)
			e.account(t, "acme", 1000)
			ctx := context.Background()
			if _, err := e.st.ChangeMember(ctx, metering.MemberChange{Account: "acme", User: "bob", Role: metering.RoleMember, ByOwner: true}); err != nil {
				t.Fatal(err)
			}
			k, secret, err := e.st.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "k", CreatedBy: "bob"})
			if err != nil {
				t.Fatal(err)
			}
			// Cached in the other Store: a plain key, on the lease path.
			for range 2 {
				if id, err := other.Authenticate(ctx, []byte(secret)); err != nil || id.Limited || id.KeyID != k.ID {
					t.Fatalf("before the change: %+v, %v", id, err)
				}
			}
			// Lookups from many goroutines while the change is made and
			// published (the cache's eviction against its puts, under -race).
			stop := make(chan struct{})
			var wg sync.WaitGroup
			halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
			defer halt()
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := other.Authenticate(ctx, []byte(secret)); err != nil && !errors.Is(err, metering.ErrBadKey) {
							t.Error(err)
							return
						}
					}
				}()
			}
			err = c.change(ctx, e.st, k)
			if err != nil {
				t.Fatal(err)
			}
			// The message is on its way: the next lookups see the change
			// (none is cached past it, whatever the order).
			deadline := time.Now().Add(10 * time.Second)
			for {
				id, err := other.Authenticate(ctx, []byte(secret))
				if errors.Is(err, c.wantErr) && (c.wantErr != nil || id.Limited == c.limited) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the change the other Store still says %+v, %v", id, err)
				}
				time.Sleep(time.Millisecond)
			}
			halt()
			// Once the change is seen, it stays seen: nothing read before it
			// was cached after it.
			if id, err := other.Authenticate(ctx, []byte(secret)); !errors.Is(err, c.wantErr) || (c.wantErr == nil && id.Limited != c.limited) {
				t.Fatalf("after the burst of lookups the other Store says %+v, %v", id, err)
			}
		})
	}
}
