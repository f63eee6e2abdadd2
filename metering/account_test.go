package metering_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

func TestCreateAccount(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()

	before := time.Now().Add(-time.Second)
	a, err := e.st.CreateAccount(ctx, "acct-1")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Second)
	if a.ID != "acct-1" || a.Balance != 0 || a.Reserved != 0 || a.Purchased != 0 || a.Granted != 0 || a.Adjusted != 0 || a.Consumed != 0 || a.Available() != 0 {
		t.Errorf("new account = %+v, want zero balances", a)
	}
	within(t, "CreatedAt", a.CreatedAt, before, after)
	if got := e.acct(t, "acct-1"); got != a {
		t.Errorf("Account = %+v, CreateAccount returned %+v", got, a)
	}

	if _, err := e.st.CreateAccount(ctx, "acct-1"); !errors.Is(err, metering.ErrAccountExists) {
		t.Errorf("second CreateAccount error = %v, want ErrAccountExists", err)
	}

	// EnsureAccount never resets an existing account.
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "acct-1", Amount: 5000, Reference: "r1"}); err != nil {
		t.Fatal(err)
	}
	created, err := e.st.EnsureAccount(ctx, "acct-1")
	if err != nil || created {
		t.Errorf("EnsureAccount(existing) = %v, %v; want false, nil", created, err)
	}
	if got := e.acct(t, "acct-1"); got.Balance != 5000 || got.Granted != 5000 || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("after EnsureAccount: %+v, want balance 5000 and the original created_at", got)
	}
	if _, err := e.st.CreateAccount(ctx, "acct-1"); !errors.Is(err, metering.ErrAccountExists) {
		t.Errorf("CreateAccount(funded) error = %v, want ErrAccountExists", err)
	}
	if got := e.acct(t, "acct-1"); got.Balance != 5000 {
		t.Errorf("CreateAccount on an existing account changed its balance to %d", got.Balance)
	}

	for i, want := range []bool{true, false, false} {
		created, err := e.st.EnsureAccount(ctx, "acct-2")
		if err != nil || created != want {
			t.Errorf("EnsureAccount(acct-2) #%d = %v, %v; want %v", i, created, err, want)
		}
	}
	if got := e.acct(t, "acct-2"); got.Balance != 0 || got.ID != "acct-2" {
		t.Errorf("acct-2 = %+v", got)
	}

	if _, err := e.st.Account(ctx, "missing"); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("Account(missing) error = %v, want ErrNoAccount", err)
	}
	assertLedger(t, e.st, "acct-1")
}

func TestAccountIDs(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	valid := []string{"a", "acct_1", "user@example.com", "org:42|team-7", "A.B-C_D", strings.Repeat("x", 128)}
	invalid := []string{"", "a}b", "a{b", "{a}", "a b", "a\nb", "a*", "ü", "a/b", "a\x00", strings.Repeat("x", 129)}
	for _, id := range valid {
		if !metering.ValidAccountID(id) {
			t.Errorf("ValidAccountID(%q) = false", id)
		}
		if _, err := e.st.CreateAccount(ctx, id); err != nil {
			t.Errorf("CreateAccount(%q): %v", id, err)
		}
		if a, err := e.st.Account(ctx, id); err != nil || a.ID != id {
			t.Errorf("Account(%q) = %+v, %v", id, a, err)
		}
	}
	keysBefore := e.rdb.DBSize(ctx).Val()
	for _, id := range invalid {
		if metering.ValidAccountID(id) {
			t.Errorf("ValidAccountID(%q) = true", id)
		}
		if _, err := e.st.CreateAccount(ctx, id); !errors.Is(err, metering.ErrNoAccount) {
			t.Errorf("CreateAccount(%q) error = %v, want ErrNoAccount", id, err)
		}
		if _, err := e.st.EnsureAccount(ctx, id); !errors.Is(err, metering.ErrNoAccount) {
			t.Errorf("EnsureAccount(%q) error = %v, want ErrNoAccount", id, err)
		}
		if _, err := e.st.Account(ctx, id); !errors.Is(err, metering.ErrNoAccount) {
			t.Errorf("Account(%q) error = %v, want ErrNoAccount", id, err)
		}
		if _, err := e.st.Credit(ctx, metering.Credit{Account: id, Amount: 1, Reference: "x"}); !errors.Is(err, metering.ErrNoAccount) {
			t.Errorf("Credit(%q) error = %v, want ErrNoAccount", id, err)
		}
	}
	if n := e.rdb.DBSize(ctx).Val(); n != keysBefore {
		t.Errorf("invalid ids wrote %d keys to Redis", n-keysBefore)
	}
}
