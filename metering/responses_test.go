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
	if err := e.st.RecordResponse(ctx, "acct-a", "resp_1", "openai", 0); err != nil {
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
			r, err := e.st.StoredResponse(ctx, tc.account, tc.id)
			p := r.Provider
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
	if err := e.st.RecordResponse(ctx, "acct-a", strings.Repeat("x", metering.MaxResponseIDLen+1), "openai", 0); err == nil {
		t.Fatal("an over-long id was recorded")
	}
	// The context a continuation reads again, recorded once the call
	// settled (provider ""), in either order with the owner's record.
	if r, _ := e.st.StoredResponse(ctx, "acct-a", "resp_1"); r.Context != 0 {
		t.Fatalf("context %d before it was recorded", r.Context)
	}
	if err := e.st.RecordResponse(ctx, "acct-a", "resp_1", "", 1234); err != nil {
		t.Fatal(err)
	}
	if r, err := e.st.StoredResponse(ctx, "acct-a", "resp_1"); err != nil || r != (metering.StoredResponse{Provider: "openai", Context: 1234}) {
		t.Fatalf("got %+v, %v", r, err)
	}
	if err := e.st.RecordResponse(ctx, "acct-a", "resp_3", "", 99); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.StoredResponse(ctx, "acct-a", "resp_3"); !errors.Is(err, metering.ErrNotFound) {
		t.Fatalf("a context without its owner's record: %v, want ErrNotFound", err)
	}
}
