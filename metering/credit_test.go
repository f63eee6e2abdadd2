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
		{metering.Credit{Account: "buyer", Amount: 2_374_050_000, Reference: "g-1", Type: metering.Grant,
			Fields: map[string]string{"description": "Launch credits", "source": "admin"}}, true, 2_374_050_000},
		// Same reference: never applied twice, whatever the amount or type says now.
		{metering.Credit{Account: "buyer", Amount: 2_374_050_000, Reference: "g-1"}, false, 2_374_050_000},
		{metering.Credit{Account: "buyer", Amount: -999, Reference: "g-1", Type: metering.Adjustment}, false, 2_374_050_000},
		{metering.Credit{Account: "buyer", Amount: 1000, Reference: "grant-1"}, true, 2_374_051_000},
		// An adjustment larger than the balance takes it below zero.
		{metering.Credit{Account: "buyer", Amount: -2_400_000_000, Reference: "adj-1", Type: metering.Adjustment}, true, -25_949_000},
		{metering.Credit{Account: "buyer", Amount: -2_400_000_000, Reference: "adj-1", Type: metering.Adjustment}, false, -25_949_000},
		// References are per account.
		{metering.Credit{Account: "other", Amount: 7, Reference: "g-1"}, true, 7},
		{metering.Credit{Account: "buyer", Amount: 0, Reference: "zero"}, true, -25_949_000},
		{metering.Credit{Account: "buyer", Amount: 49, Reference: "adj-2", Type: metering.Adjustment}, true, -25_948_951},
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
			wantType = metering.Grant
		}
		// Operators' references live in a namespace of their own.
		if en.Type != wantType || en.Amount != c.Amount || en.BalanceAfter != running || en.Reference != "admin:"+c.Reference {
			t.Errorf("entry %d = %+v, want type %s amount %d balance %d ref admin:%s", i, en, wantType, c.Amount, running, c.Reference)
		}
		for k, v := range c.Fields {
			if en.Fields[k] != v {
				t.Errorf("entry %d field %s = %q, want %q", i, k, en.Fields[k], v)
			}
		}
	}

	a := e.acct(t, "buyer")
	if a.Balance != -25_948_951 || a.Purchased != 0 || a.Granted != 2_374_051_000 || a.Adjusted != -2_399_999_951 || a.Consumed != 0 {
		t.Errorf("buyer = %+v", a)
	}
	// A negative balance refuses every call, even a free one.
	_, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "buyer", HoldID: "h", Fixed: 0, PerOutput: 1, MinOutput: 0, MaxOutput: 10})
	wantInsufficient(t, err, 0, -25_948_951, false)

	for _, tt := range []struct {
		name string
		c    metering.Credit
		want error // nil: any error
	}{
		{"unknown account", metering.Credit{Account: "nobody", Amount: 5, Reference: "r"}, metering.ErrNoAccount},
		{"no reference", metering.Credit{Account: "buyer", Amount: 5}, metering.ErrNoReference},
		{"negative grant", metering.Credit{Account: "buyer", Amount: -5, Reference: "neg", Type: metering.Grant}, nil},
		// Purchases and their reversals come from the sale's record, never from a Credit.
		{"purchase", metering.Credit{Account: "buyer", Amount: 5, Reference: "p", Type: "purchase"}, nil},
		{"auto_recharge", metering.Credit{Account: "buyer", Amount: 5, Reference: "ar", Type: "auto_recharge"}, nil},
		{"refund", metering.Credit{Account: "buyer", Amount: -5, Reference: "rf", Type: "refund"}, nil},
		{"dispute", metering.Credit{Account: "buyer", Amount: -5, Reference: "dp", Type: "dispute"}, nil},
		{"usage", metering.Credit{Account: "buyer", Amount: -5, Reference: "u", Type: "usage"}, nil},
		{"reserved field", metering.Credit{Account: "buyer", Amount: 5, Reference: "f", Fields: map[string]string{"amount": "9"}}, nil},
	} {
		_, err := e.st.Credit(ctx, tt.c)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("Credit(%s) error = %v, want %v", tt.name, err, tt.want)
		}
	}
	if got := e.acct(t, "buyer"); got != a {
		t.Errorf("failed credits changed the account: %+v → %+v", a, got)
	}
	assertLedger(t, e.st, "buyer")
	assertLedger(t, e.st, "other")
}

// TestBooksByKind: each kind of ledger entry moves its own total, and an
// operator's credit under a reference that reads like a sale's or a
// reversal's ("checkout:<session>", "refund:…") blocks neither.
func TestBooksByKind(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "books", 0)
	credit := func(mc int64, ref, typ string) func(t *testing.T) {
		return func(t *testing.T) {
			c, err := e.st.Credit(ctx, metering.Credit{Account: "books", Amount: mc, Reference: ref, Type: typ})
			if err != nil || !c.Applied {
				t.Fatalf("Credit(%d, %s, %s) = %+v, %v", mc, ref, typ, c, err)
			}
		}
	}
	reverse := func(r metering.Reversal) func(t *testing.T) {
		return func(t *testing.T) {
			r.Account, r.PaymentID = "books", "pi_cs_b"
			res, err := e.st.ReversePurchase(ctx, r)
			if err != nil || !res.Applied {
				t.Fatalf("ReversePurchase(%+v) = %+v, %v", r, res, err)
			}
		}
	}
	steps := []struct {
		name                                   string
		do                                     func(t *testing.T)
		purchased, granted, adjusted, consumed int64 // after the step
	}{
		{"grant under the checkout's reference", credit(10_000, metering.CheckoutReference("cs_b"), metering.Grant), 0, 10_000, 0, 0},
		{"the checkout is paid", func(t *testing.T) { e.sell(t, "books", "cs_b", 2_000_000) }, 2_000_000, 10_000, 0, 0},
		{"grant under the refund's reference", credit(5000, "refund:ch_b:50", metering.Grant), 2_000_000, 15_000, 0, 0},
		{"half refunded", reverse(metering.Reversal{Kind: metering.Refund, Reference: "refund:ch_b:50", Minor: 50}),
			1_000_000, 15_000, 0, 0},
		{"negative adjustment", credit(-300, "adj-1", metering.Adjustment), 1_000_000, 15_000, -300, 0},
		{"a quarter disputed", reverse(metering.Reversal{Kind: metering.Dispute, Reference: "dispute:dp_b", Linked: "dispute_won:dp_b", Minor: 25}),
			500_000, 15_000, -300, 0},
		{"the dispute won", reverse(metering.Reversal{Kind: metering.DisputeWon, Reference: "dispute_won:dp_b", Linked: "dispute:dp_b"}),
			1_000_000, 15_000, -300, 0},
		{"usage", func(t *testing.T) {
			if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "books", HoldID: "call-1", Fixed: 1234}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.st.Settle(ctx, metering.Settlement{Account: "books", HoldID: "call-1", Cost: 1234,
				Record: metering.Record{RequestID: "call-1", Model: "m", Status: 200}}); err != nil {
				t.Fatal(err)
			}
		}, 1_000_000, 15_000, -300, 1234},
		{"positive adjustment", credit(50, "adj-2", metering.Adjustment), 1_000_000, 15_000, -250, 1234},
	}
	for _, st := range steps {
		st.do(t)
		a := e.acct(t, "books")
		if a.Purchased != st.purchased || a.Granted != st.granted || a.Adjusted != st.adjusted || a.Consumed != st.consumed ||
			a.Balance != st.purchased+st.granted+st.adjusted-st.consumed {
			t.Errorf("after %s: %+v, want purchased %d granted %d adjusted %d consumed %d", st.name, a,
				st.purchased, st.granted, st.adjusted, st.consumed)
		}
		assertLedger(t, e.st, "books")
	}
	// A reversal can never be applied under an operator's reference.
	_, err := e.st.ReversePurchase(ctx, metering.Reversal{Account: "books", PaymentID: "pi_cs_b", Kind: metering.Refund,
		Reference: metering.OperatorReference("refund:ch_b:100"), Minor: 100})
	if err == nil {
		t.Error("a refund under an operator's reference was accepted")
	}
}

func TestCreditConcurrentSameReference(t *testing.T) {
	e := newEnv(t, metering.Options{})
	e.account(t, "webhook", 0)
	ctx := context.Background()
	// An operator's retried grant, sent many times at once, credits once.
	const n = 50
	applied := make(chan bool, n)
	for range n {
		go func() {
			c, err := e.st.Credit(ctx, metering.Credit{Account: "webhook", Amount: 949_050_000, Reference: "evt_123"})
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

// A credit the CLI applied before operator references had their own
// namespace (stored under the reference as typed) is not applied again.
func TestCreditLegacyReferenceIsNotAppliedAgain(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "acme", 0)
	// What the old CLI left: the raw reference, and its grant.
	if err := e.rdb.SAdd(ctx, "{a:acme}:refs", "grant-1").Err(); err != nil {
		t.Fatal(err)
	}
	c, err := e.st.Credit(ctx, metering.Credit{Account: "acme", Amount: 1000, Reference: "grant-1"})
	if err != nil || c.Applied {
		t.Fatalf("re-running an old CLI grant: %+v, %v; want not applied", c, err)
	}
	// A new reference is applied once.
	for i, want := range []bool{true, false} {
		c, err := e.st.Credit(ctx, metering.Credit{Account: "acme", Amount: 1000, Reference: "grant-2"})
		if err != nil || c.Applied != want {
			t.Fatalf("grant-2, try %d: %+v, %v; want applied %v", i, c, err, want)
		}
	}
	if a := e.acct(t, "acme"); a.Balance != 1000 || a.Granted != 1000 {
		t.Fatalf("account %+v; want one grant of 1000", a)
	}
	assertLedger(t, e.st, "acme")
}
