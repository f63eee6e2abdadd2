package metering_test

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// dumpRedis returns every key name and every stored value, whatever its type.
func dumpRedis(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		out = append(out, k)
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			out = append(out, rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				out = append(out, f, v)
			}
		case "set":
			out = append(out, rdb.SMembers(ctx, k).Val()...)
		case "zset":
			out = append(out, rdb.ZRange(ctx, k, 0, -1).Val()...)
		case "list":
			out = append(out, rdb.LRange(ctx, k, 0, -1).Val()...)
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					s, _ := v.(string)
					out = append(out, f, s)
				}
			}
		default:
			t.Fatalf("key %q has unexpected type %q", k, typ)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCreateKeyStoresNoSecret(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "acme", 1_000_000)
	var secrets []string
	before := time.Now().Add(-time.Second)
	for _, limit := range []int64{0, 5000, 0} {
		k, secret, err := e.st.CreateKey(ctx, "acme", "ci", limit)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, metering.KeyPrefix) || metering.KeyPrefix != "tg-" || len(secret) < len("tg-")+32 {
			t.Errorf("secret %q: want tg- and at least 32 random characters", secret)
		}
		if k.ID == "" || k.Account != "acme" || k.Name != "ci" || k.CreditLimit != limit || k.Revoked {
			t.Errorf("key = %+v", k)
		}
		within(t, "key CreatedAt", k.CreatedAt, before, time.Now().Add(time.Second))
		hint := strings.TrimSuffix(k.Hint, "…")
		if !strings.HasPrefix(secret, hint) || len(hint) > len(metering.KeyPrefix)+8 {
			t.Errorf("hint %q must be a short prefix of the secret", k.Hint)
		}
		for _, s := range secrets {
			if s == secret {
				t.Fatal("two keys share a secret")
			}
		}
		secrets = append(secrets, secret)
		// Use the key, so that every code path that touches Redis has run.
		id, err := e.st.Authenticate(ctx, []byte(secret))
		if err != nil || id != (metering.Identity{Account: "acme", KeyID: k.ID, Limited: limit > 0}) {
			t.Errorf("Authenticate = %+v, %v", id, err)
		}
	}
	dump := dumpRedis(t, e.rdb)
	for _, secret := range secrets {
		body := strings.TrimPrefix(secret, metering.KeyPrefix)
		for _, v := range dump {
			if strings.Contains(v, body) || strings.Contains(v, body[:16]) {
				t.Errorf("Redis holds the secret (or a large part of it): %q", v)
			}
		}
	}
	assertLedger(t, e.st, "acme")
}

func TestAuthenticate(t *testing.T) {
	e := newEnv(t, metering.Options{KeyCacheTTL: 50 * time.Millisecond})
	ctx := context.Background()
	e.account(t, "acme", 0)
	e.account(t, "globex", 0)
	k1, s1, err := e.st.CreateKey(ctx, "acme", "one", 0)
	if err != nil {
		t.Fatal(err)
	}
	k2, s2, err := e.st.CreateKey(ctx, "globex", "two", 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		secret string
		want   metering.Identity
		err    error
	}{
		{s1, metering.Identity{Account: "acme", KeyID: k1.ID}, nil},
		{s2, metering.Identity{Account: "globex", KeyID: k2.ID}, nil},
		{s1 + "x", metering.Identity{}, metering.ErrBadKey},
		{s1[:len(s1)-1], metering.Identity{}, metering.ErrBadKey},
		{strings.ToUpper(s1), metering.Identity{}, metering.ErrBadKey},
		{"", metering.Identity{}, metering.ErrBadKey},
		{"tg-", metering.Identity{}, metering.ErrBadKey},
		{k1.ID, metering.Identity{}, metering.ErrBadKey},
	}
	for round := 0; round < 2; round++ { // the second round is served from the cache
		for _, tt := range tests {
			id, err := e.st.Authenticate(ctx, []byte(tt.secret))
			if id != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Errorf("round %d: Authenticate(%q) = %+v, %v; want %+v, %v", round, tt.secret, id, err, tt.want, tt.err)
			}
		}
	}
}

func TestRevokeKey(t *testing.T) {
	const cacheTTL = 50 * time.Millisecond
	e := newEnv(t, metering.Options{KeyCacheTTL: cacheTTL})
	other := e.replica(t, metering.Options{KeyCacheTTL: cacheTTL}) // a second proxy process
	ctx := context.Background()
	e.account(t, "acme", 0)
	k, secret, err := e.st.CreateKey(ctx, "acme", "leaked", 0)
	if err != nil {
		t.Fatal(err)
	}
	keep, keepSecret, err := e.st.CreateKey(ctx, "acme", "keep", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Both processes have the key cached.
	for _, st := range []*metering.Store{e.st, other} {
		if _, err := st.Authenticate(ctx, []byte(secret)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.RevokeKey(ctx, "acme", k.ID); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	// The revoking process refuses it at once.
	if _, err := e.st.Authenticate(ctx, []byte(secret)); !errors.Is(err, metering.ErrBadKey) {
		t.Errorf("Authenticate after revoke (same store) error = %v, want ErrBadKey", err)
	}
	// The other one within its cache TTL (plus scheduling slack).
	deadline := revokedAt.Add(cacheTTL + 100*time.Millisecond)
	for {
		_, err := other.Authenticate(ctx, []byte(secret))
		if errors.Is(err, metering.ErrBadKey) {
			break
		}
		if err != nil {
			t.Fatalf("second store: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("second store still accepts the key %v after revocation (cache TTL %v)", time.Since(revokedAt), cacheTTL)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A store without a cache sees it immediately.
	uncached := e.replica(t, metering.Options{KeyCacheTTL: -1})
	if _, err := uncached.Authenticate(ctx, []byte(secret)); !errors.Is(err, metering.ErrBadKey) {
		t.Errorf("uncached Authenticate error = %v", err)
	}
	// The other key is untouched.
	if id, err := other.Authenticate(ctx, []byte(keepSecret)); err != nil || id.KeyID != keep.ID {
		t.Errorf("kept key: %+v, %v", id, err)
	}
	if err := e.st.RevokeKey(ctx, "acme", "key_nope"); !errors.Is(err, metering.ErrNoKey) {
		t.Errorf("RevokeKey(unknown) error = %v, want ErrNoKey", err)
	}
	if err := e.st.RevokeKey(ctx, "globex", k.ID); !errors.Is(err, metering.ErrNoKey) {
		t.Errorf("RevokeKey(another account's key) error = %v, want ErrNoKey", err)
	}
	keys, err := e.st.Keys(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	for _, ku := range keys {
		revoked[ku.ID] = ku.Revoked
	}
	if len(keys) != 2 || !revoked[k.ID] || revoked[keep.ID] {
		t.Errorf("Keys after revoke = %+v", keys)
	}
	if n, err := e.st.ActiveKeys(ctx, "acme"); err != nil || n != 1 {
		t.Errorf("ActiveKeys = %d, %v; want 1", n, err)
	}
}

func TestKeysList(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "acme", 1_000_000)
	if ks, err := e.st.Keys(ctx, "acme"); err != nil || len(ks) != 0 {
		t.Errorf("Keys(no keys) = %v, %v", ks, err)
	}
	spend := map[string]int64{}
	var ids []string
	for i, cost := range []int64{1234, 0, 99_999} {
		k, _, err := e.st.CreateKey(ctx, "acme", "k", int64(i)*1_000_000)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
		for j := 0; j < 2; j++ { // two calls per key
			hold := k.ID + "-" + string(rune('a'+j))
			if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: k.ID, HoldID: hold, Fixed: 100_000}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.st.Settle(ctx, metering.Settlement{Account: "acme", KeyID: k.ID, HoldID: hold, Cost: cost, Record: metering.Record{RequestID: hold}}); err != nil {
				t.Fatal(err)
			}
			spend[k.ID] += cost
		}
	}
	keys, err := e.st.Keys(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(ids) {
		t.Fatalf("Keys = %d keys, want %d", len(keys), len(ids))
	}
	if !sort.SliceIsSorted(keys, func(i, j int) bool {
		if !keys[i].CreatedAt.Equal(keys[j].CreatedAt) {
			return keys[i].CreatedAt.Before(keys[j].CreatedAt)
		}
		return keys[i].ID < keys[j].ID
	}) {
		t.Errorf("Keys not oldest first: %+v", keys)
	}
	for _, k := range keys {
		if k.Used != spend[k.ID] || k.Account != "acme" {
			t.Errorf("key %s: used %d, want %d", k.ID, k.Used, spend[k.ID])
		}
	}
	if _, _, err := e.st.CreateKey(ctx, "ghost", "k", 0); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("CreateKey(unknown account) error = %v, want ErrNoAccount", err)
	}
	if _, _, err := e.st.CreateKey(ctx, "acme", "k", -1); err == nil {
		t.Error("CreateKey(negative limit) succeeded")
	}
	assertLedger(t, e.st, "acme")
}

// TestIssueKeyCap: the active keys are counted and the key added in one
// script, so that concurrent requests never get past MaxActive; revoked keys
// do not count, and MaxActive 0 is no cap.
func TestIssueKeyCap(t *testing.T) {
	e := newEnv(t, metering.Options{KeyCacheTTL: -1})
	ctx := context.Background()
	for _, tt := range []struct {
		name      string
		maxActive int
		existing  int // keys created (uncapped) before, the first of them revoked
		want      int // of 12 concurrent requests, how many get a key
	}{
		{"cap 3", 3, 0, 3},
		{"cap 3, one of two existing revoked", 3, 2, 2},
		{"cap 1", 1, 0, 1},
		{"already at the cap", 2, 3, 0},
		{"no cap", 0, 0, 12},
	} {
		t.Run(tt.name, func(t *testing.T) {
			account := strings.NewReplacer(" ", "-", ",", "").Replace(tt.name)
			e.account(t, account, 0)
			for i := range tt.existing {
				k, _, err := e.st.CreateKey(ctx, account, "old", 0)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					if err := e.st.RevokeKey(ctx, account, k.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
			const callers = 12
			type answer struct {
				secret string
				err    error
			}
			answers := make(chan answer, callers)
			start := make(chan struct{})
			for i := range callers {
				go func() {
					<-start
					_, secret, err := e.st.IssueKey(ctx, metering.NewKey{Account: account, Name: "k", CreditLimit: int64(i), MaxActive: tt.maxActive})
					answers <- answer{secret, err}
				}()
			}
			close(start)
			created := 0
			for range callers {
				a := <-answers
				switch {
				case a.err == nil:
					created++
					if _, err := e.st.Authenticate(ctx, []byte(a.secret)); err != nil {
						t.Errorf("an issued key does not authenticate: %v", err)
					}
				case !errors.Is(a.err, metering.ErrTooManyKeys):
					t.Errorf("IssueKey error = %v, want ErrTooManyKeys", a.err)
				}
			}
			active, err := e.st.ActiveKeys(ctx, account)
			if err != nil {
				t.Fatal(err)
			}
			wantActive := tt.want + max(tt.existing-1, 0)
			if created != tt.want || active != wantActive {
				t.Fatalf("%d created, %d active; want %d, %d", created, active, tt.want, wantActive)
			}
		})
	}
	if _, _, err := e.st.IssueKey(ctx, metering.NewKey{Account: "nobody", Name: "k", MaxActive: 3}); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("IssueKey(unknown account) error = %v, want ErrNoAccount", err)
	}
	if _, _, err := e.st.IssueKey(ctx, metering.NewKey{Account: "a{b}", Name: "k"}); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("IssueKey(invalid account) error = %v, want ErrNoAccount", err)
	}
}

// Keys created before the active-key set existed are counted from their
// metadata once (revoked ones not), and from the set afterwards.
func TestIssueKeyCapCountsKeysFromBefore(t *testing.T) {
	e := newEnv(t, metering.Options{KeyCacheTTL: -1})
	ctx := context.Background()
	e.account(t, "acme", 0)
	a, _, err := e.st.CreateKey(ctx, "acme", "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.CreateKey(ctx, "acme", "b", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.st.RevokeKey(ctx, "acme", a.ID); err != nil {
		t.Fatal(err)
	}
	// What an earlier version left: the keys' metadata, no set.
	if err := e.rdb.Del(ctx, "{a:acme}:keys:active").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HDel(ctx, "{a:acme}:acct", "keys_indexed").Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "c", MaxActive: 2}); err != nil {
		t.Fatalf("a second active key under a cap of 2: %v", err)
	}
	if _, _, err := e.st.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "d", MaxActive: 2}); !errors.Is(err, metering.ErrTooManyKeys) {
		t.Fatalf("a third active key under a cap of 2: %v, want ErrTooManyKeys", err)
	}
	if n, err := e.rdb.SCard(ctx, "{a:acme}:keys:active").Result(); err != nil || n != 2 {
		t.Fatalf("active set holds %d keys (%v), want 2", n, err)
	}
}
