package metering_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

func TestCredit(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "buyer", 0)
	e.account(t, "other", 0)

	type step struct {
		c           metering.Credit
		wantApplied bool
		wantBalance int64
	}
	steps := []step{
		{metering.Credit{Account: "buyer", Amount: 2_374_050_000, Reference: "cs_1", Type: "purchase",
			Fields: map[string]string{"description": "Growth pack", "price_minor": "2499", "currency": "usd"}}, true, 2_374_050_000},
		// Same reference: never applied twice, whatever the amount says now.
		{metering.Credit{Account: "buyer", Amount: 2_374_050_000, Reference: "cs_1", Type: "purchase"}, false, 2_374_050_000},
		{metering.Credit{Account: "buyer", Amount: 999, Reference: "cs_1", Type: "grant"}, false, 2_374_050_000},
		{metering.Credit{Account: "buyer", Amount: 1000, Reference: "grant-1"}, true, 2_374_051_000},
		// A refund larger than the balance takes it below zero.
		{metering.Credit{Account: "buyer", Amount: -2_400_000_000, Reference: "re_1", Type: "refund"}, true, -25_949_000},
		{metering.Credit{Account: "buyer", Amount: -2_400_000_000, Reference: "re_1", Type: "refund"}, false, -25_949_000},
		// References are per account.
		{metering.Credit{Account: "other", Amount: 7, Reference: "cs_1"}, true, 7},
		{metering.Credit{Account: "buyer", Amount: 0, Reference: "zero"}, true, -25_949_000},
	}
	var wantEntries []metering.Credit
	for i, s := range steps {
		before := time.Now().Add(-time.Second)
		got, err := e.st.Credit(ctx, s.c)
		if err != nil {
			t.Fatalf("step %d: Credit(%+v): %v", i, s.c, err)
		}
		if got.Applied != s.wantApplied || got.BalanceAfter != s.wantBalance {
			t.Errorf("step %d: Credit(%+v) = %+v, want applied %v balance %d", i, s.c, got, s.wantApplied, s.wantBalance)
		}
		if got.Applied != (got.EntryID != "") {
			t.Errorf("step %d: applied %v with entry id %q", i, got.Applied, got.EntryID)
		}
		if a := e.acct(t, s.c.Account); a.Balance != s.wantBalance {
			t.Errorf("step %d: balance %d, want %d", i, a.Balance, s.wantBalance)
		}
		if got.Applied && s.c.Account == "buyer" {
			wantEntries = append(wantEntries, s.c)
			last := e.entries(t, "buyer")
			l := last[len(last)-1]
			if l.ID != got.EntryID {
				t.Errorf("step %d: newest entry %s, Credit said %s", i, l.ID, got.EntryID)
			}
			within(t, "entry CreatedAt", l.CreatedAt, before, time.Now().Add(time.Second))
		}
	}

	entries := e.entries(t, "buyer")
	if len(entries) != len(wantEntries) {
		t.Fatalf("%d ledger entries, want %d", len(entries), len(wantEntries))
	}
	var running int64
	for i, c := range wantEntries {
		en := entries[i]
		running += c.Amount
		wantType := c.Type
		if wantType == "" {
			wantType = "grant"
		}
		if en.Type != wantType || en.Amount != c.Amount || en.BalanceAfter != running || en.Reference != c.Reference {
			t.Errorf("entry %d = %+v, want type %s amount %d balance %d ref %s", i, en, wantType, c.Amount, running, c.Reference)
		}
		for k, v := range c.Fields {
			if en.Fields[k] != v {
				t.Errorf("entry %d field %s = %q, want %q", i, k, en.Fields[k], v)
			}
		}
	}

	a := e.acct(t, "buyer")
	if a.Balance != -25_949_000 || a.Purchased != -25_949_000 || a.Consumed != 0 {
		t.Errorf("buyer = %+v", a)
	}
	// A negative balance refuses every call, even a free one.
	_, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "buyer", HoldID: "h", Fixed: 0, PerOutput: 1, MinOutput: 0, MaxOutput: 10})
	wantInsufficient(t, err, 0, -25_949_000, false)

	if _, err := e.st.Credit(ctx, metering.Credit{Account: "nobody", Amount: 5, Reference: "r"}); !errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("Credit(unknown account) error = %v, want ErrNoAccount", err)
	}
	if _, err := e.st.Credit(ctx, metering.Credit{Account: "buyer", Amount: 5}); !errors.Is(err, metering.ErrNoReference) {
		t.Errorf("Credit(no reference) error = %v, want ErrNoReference", err)
	}
	if got := e.acct(t, "buyer"); got != a {
		t.Errorf("failed credits changed the account: %+v → %+v", a, got)
	}
	assertLedger(t, e.st, "buyer")
	assertLedger(t, e.st, "other")
}

func TestCreditConcurrentSameReference(t *testing.T) {
	e := newEnv(t, metering.Options{})
	e.account(t, "webhook", 0)
	ctx := context.Background()
	// A webhook delivered many times at once credits once.
	const n = 50
	applied := make(chan bool, n)
	for range n {
		go func() {
			c, err := e.st.Credit(ctx, metering.Credit{Account: "webhook", Amount: 949_050_000, Reference: "evt_123", Type: "purchase"})
			if err != nil {
				t.Error(err)
			}
			applied <- c.Applied
		}()
	}
	count := 0
	for range n {
		if <-applied {
			count++
		}
	}
	if count != 1 {
		t.Errorf("credit applied %d times, want once", count)
	}
	if a := e.acct(t, "webhook"); a.Balance != 949_050_000 {
		t.Errorf("balance %d", a.Balance)
	}
	assertLedger(t, e.st, "webhook")
}

func TestLedgerPagination(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "pager", 0)
	for i := int64(1); i <= 5; i++ {
		if _, err := e.st.Credit(ctx, metering.Credit{Account: "pager", Amount: i, Reference: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	amounts := func(es []metering.Entry) []int64 {
		var out []int64
		for _, e := range es {
			out = append(out, e.Amount)
		}
		return out
	}
	eq := func(a, b []int64) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	page1, err := e.st.Ledger(ctx, "pager", metering.LedgerQuery{Limit: 2})
	if err != nil || !eq(amounts(page1), []int64{5, 4}) {
		t.Fatalf("newest page = %v, %v; want [5 4]", amounts(page1), err)
	}
	page2, err := e.st.Ledger(ctx, "pager", metering.LedgerQuery{Limit: 2, Before: page1[1].ID})
	if err != nil || !eq(amounts(page2), []int64{3, 2}) {
		t.Errorf("second page = %v, %v; want [3 2]", amounts(page2), err)
	}
	all, err := e.st.Ledger(ctx, "pager", metering.LedgerQuery{})
	if err != nil || !eq(amounts(all), []int64{5, 4, 3, 2, 1}) {
		t.Errorf("default page = %v, %v", amounts(all), err)
	}
	fwd, err := e.st.Ledger(ctx, "pager", metering.LedgerQuery{After: all[4].ID, Limit: 3})
	if err != nil || !eq(amounts(fwd), []int64{2, 3, 4}) {
		t.Errorf("after page = %v, %v; want [2 3 4]", amounts(fwd), err)
	}
	if _, err := e.st.Ledger(ctx, "pager", metering.LedgerQuery{Before: "not-an-id"}); !errors.Is(err, metering.ErrNotFound) {
		t.Errorf("bad cursor error = %v, want ErrNotFound", err)
	}
	if es, err := e.st.Ledger(ctx, "nobody", metering.LedgerQuery{}); err != nil || len(es) != 0 {
		t.Errorf("Ledger(unknown) = %v, %v", es, err)
	}
	assertLedger(t, e.st, "pager")
}
