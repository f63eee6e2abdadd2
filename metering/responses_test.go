package metering_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// TestResponseRecords: a stored response's record is found for the account
// that created it only, with its provider, and expires with RecordTTL.
func TestResponseRecords(t *testing.T) {
	e := newEnv(t, metering.Options{RecordTTL: time.Hour})
	ctx := context.Background()
	if err := e.st.RecordResponse(ctx, "acct-a", "resp_1", "openai"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, account, id, want string
	}{
		{"owner", "acct-a", "resp_1", "openai"},
		{"other account", "acct-b", "resp_1", ""},
		{"unknown id", "acct-a", "resp_2", ""},
		{"empty id", "acct-a", "", ""},
		{"too long", "acct-a", strings.Repeat("x", metering.MaxResponseIDLen+1), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := e.st.ResponseProvider(ctx, tc.account, tc.id)
			if tc.want == "" {
				if !errors.Is(err, metering.ErrNotFound) {
					t.Fatalf("got %q, %v; want ErrNotFound", p, err)
				}
				return
			}
			if err != nil || p != tc.want {
				t.Fatalf("got %q, %v; want %q", p, err, tc.want)
			}
		})
	}
	ttl := e.rdb.TTL(ctx, "{a:acct-a}:resp:resp_1").Val()
	if ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL %v, want RecordTTL (1h)", ttl)
	}
	if err := e.st.RecordResponse(ctx, "acct-a", strings.Repeat("x", metering.MaxResponseIDLen+1), "openai"); err == nil {
		t.Fatal("an over-long id was recorded")
	}
}
