package metering_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// TestApplyLeaseCountsBudgets: a lease batch adds each key's calls' cost to
// the key's budget period (when it has a budget) and to its member's (when
// the member has one), once however often the batch is resent; released
// calls count nowhere.
func TestApplyLeaseCountsBudgets(t *testing.T) {
	e := newEnv(t, metering.Options{})
	e.account(t, "lb", 1_000_000)
	ctx := context.Background()
	if _, err := e.st.ChangeMember(ctx, metering.MemberChange{Account: "lb", User: "ann", Role: metering.RoleMember, ByOwner: true}); err != nil {
		t.Fatal(err)
	}
	issue := func(name, by string, ks metering.KeySettings) metering.Key {
		k, _, err := e.st.IssueKey(ctx, metering.NewKey{Account: "lb", Name: name, CreatedBy: by, Settings: ks})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	day := metering.KeySettings{Budget: 1000, BudgetPeriod: metering.PeriodDay}
	keyBudget := issue("key budget", "", day)                                                           // its own budget only
	both := issue("both", "ann", metering.KeySettings{Budget: 1000, BudgetPeriod: metering.PeriodWeek}) // its own and ann's
	memberOnly := issue("member only", "ann", metering.KeySettings{})                                   // ann's budget only
	rulesNoBudget := issue("rpm only", "", metering.KeySettings{RPM: 10})                               // rules, no budget
	if err := e.st.SetMemberBudget(ctx, "lb", "ann", 5000, metering.PeriodMonth); err != nil {
		t.Fatal(err)
	}
	call := func(id, key string, cost int64, release bool) metering.LeaseCall {
		return metering.LeaseCall{KeyID: key, Cost: cost, Held: 100, Release: release,
			Record: metering.Record{RequestID: id, Model: "m", Endpoint: "chat.completions", Input: 3, Output: 2, Status: 200}}
	}
	b := metering.LeaseBatch{Account: "lb", LeaseID: "lease:x", TTL: time.Minute, Calls: []metering.LeaseCall{
		call("c1", keyBudget.ID, 300, false), call("c2", both.ID, 200, false), call("c3", keyBudget.ID, 900, false),
		call("c4", memberOnly.ID, 70, false), call("c5", rulesNoBudget.ID, 11, false), call("c6", both.ID, 500, true),
		call("c7", "", 13, false), call("c8", both.ID, 5, false),
	}}
	for range 2 { // resent: applied once
		if _, err := e.st.ApplyLease(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := e.st.Keys(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{keyBudget.ID: 1200, both.ID: 205, memberOnly.ID: 0, rulesNoBudget.ID: 0}
	for _, k := range ks {
		if k.PeriodUsed != want[k.ID] {
			t.Errorf("key %s: period_used %d, want %d", k.Name, k.PeriodUsed, want[k.ID])
		}
	}
	mbs, err := e.st.MemberBudgets(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	if got := mbs["ann"].PeriodUsed; got != 275 {
		t.Errorf("ann's period_used %d, want 275 (both's 205 + member only's 70)", got)
	}
	// The key budget passed by what the lease served: its next call is refused.
	_, err = e.st.Reserve(ctx, metering.HoldRequest{Account: "lb", KeyID: keyBudget.ID, KeyLimited: true, HoldID: "next", Fixed: 10})
	var kr *metering.KeyRuleError
	if !errors.As(err, &kr) || kr.Rule != metering.RuleBudget || kr.Left != -200 {
		t.Errorf("next call of the spent key: %v (%+v), want refused by its budget, -200 mc left", err, kr)
	}
	assertLedger(t, e.st, "lb")
}
