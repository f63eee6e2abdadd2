package proxy_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/metering"
)

// TestKeyChangeReachesTheOtherReplica: two replicas whose key caches keep a
// lookup for a minute; a key the second replica has served (and cached, as a
// plain key on its lease) is changed through the first replica's Store. The
// second refuses or governs the key's next calls at once — within seconds,
// far inside the minute: only the published change can explain it.
func TestKeyChangeReachesTheOtherReplica(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(ctx context.Context, st *metering.Store, keyID string) error
		status int
		code   string
	}{
		{"revoked", func(ctx context.Context, st *metering.Store, keyID string) error {
			return st.RevokeKey(ctx, "acme", keyID)
		}, http.StatusUnauthorized, "invalid_api_key"},
		{"first budget", func(ctx context.Context, st *metering.Store, keyID string) error {
			_, err := st.SetKeySettings(ctx, "acme", keyID, nil, metering.KeySettings{Budget: 1, BudgetPeriod: metering.PeriodDay})
			return err
		}, http.StatusPaymentRequired, "key_budget_exhausted"},
		{"member budget", func(ctx context.Context, st *metering.Store, _ string) error {
			return st.SetMemberBudget(ctx, "acme", "bob", 1, metering.PeriodDay)
		}, http.StatusPaymentRequired, "member_budget_exhausted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{keyCacheTTL: time.Minute})
			second, secondLease := e.replica("second")
			waitKeyWatchers(t, e, 2)
			ctx := context.Background()
			e.account("acme", 1_000_000)
			if _, err := e.store.ChangeMember(ctx, metering.MemberChange{Account: "acme", User: "bob", Role: metering.RoleMember, ByOwner: true}); err != nil {
				t.Fatal(err)
			}
			k, key, err := e.store.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "bob's", CreatedBy: "bob"})
			if err != nil {
				t.Fatal(err)
			}
			if r := e.doAt(second, http.MethodPost, "/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusOK {
				t.Fatalf("before the change: %d %s", r.status, r.body)
			}
			if err := c.change(ctx, e.store, k.ID); err != nil {
				t.Fatal(err)
			}
			// The change is a message on its way: calls until it arrives
			// (none, most often) are served; then every call is refused.
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := e.doAt(second, http.MethodPost, "/v1/chat/completions", key, limitBody(10, "tokens=10"))
				if r.status == c.status && r.errorCode(t) == c.code {
					break
				}
				if r.status != http.StatusOK || time.Now().After(deadline) {
					t.Fatalf("after the change the second replica answers %d %s, want %d %s", r.status, r.body, c.status, c.code)
				}
			}
			for range 3 {
				if r := e.doAt(second, http.MethodPost, "/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != c.status {
					t.Fatalf("a later call: %d %s, want %d", r.status, r.body, c.status)
				}
			}
			e.settleAll(secondLease)
			testledger.Assert(t, e.store, "acme")
		})
	}
}

// waitKeyWatchers waits until n Stores listen for key changes
// (metering.KeysChangedChannel).
func waitKeyWatchers(t *testing.T, e *env, n int64) {
	t.Helper()
	rdb := e.redis.Client(t)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m, err := rdb.PubSubNumSub(context.Background(), metering.KeysChangedChannel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if m[metering.KeysChangedChannel] >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Stores listen for key changes, want %d", m[metering.KeysChangedChannel], n)
		}
	}
}
