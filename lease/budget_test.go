package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
)

// TestLeasedSpendCountsInBudgets: calls of a key with a budget that replicas
// still serve from their leases (their key cache has not seen its first rule
// yet: the holds say KeyLimited false), from many goroutines on two
// replicas, are counted in the key's budget period and in its member's, to
// the mc: Σ costs of the leased calls = period_used. The period's spend may
// then pass the budget (nothing held those calls against it); the next call
// held one by one is refused.
func TestLeasedSpendCountsInBudgets(t *testing.T) {
	e := testledger.New(t, metering.Options{})
	e.Account(t, "acme", 100_000_000)
	ctx := context.Background()
	if _, err := e.St.ChangeMember(ctx, metering.MemberChange{Account: "acme", User: "bob", Role: metering.RoleMember, ByOwner: true, Actor: "acme"}); err != nil {
		t.Fatal(err)
	}
	// Bob's keys: one with its own budget, one without rules; an account
	// key with a budget and no member.
	budgeted, _, err := e.St.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "budgeted", CreatedBy: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := e.St.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "plain", CreatedBy: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := e.St.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "own"})
	if err != nil {
		t.Fatal(err)
	}
	const budget = 5_000
	for _, k := range []metering.Key{budgeted, own} {
		if _, err := e.St.SetKeySettings(ctx, "acme", k.ID, nil, metering.KeySettings{Budget: budget, BudgetPeriod: metering.PeriodDay}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.St.SetMemberBudget(ctx, "acme", "bob", 2*budget, metering.PeriodMonth); err != nil {
		t.Fatal(err)
	}

	replicas := []*lease.Leaser{
		newLeaser(t, e.St, lease.Options{ID: "one", IdleReturn: time.Hour}),
		newLeaser(t, e.Replica(t, metering.Options{}), lease.Options{ID: "two", IdleReturn: time.Hour}),
	}
	keys := []string{budgeted.ID, plain.ID, own.ID}
	var spent [3]atomic.Int64
	const workers, calls = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := replicas[w%len(replicas)]
			for c := range calls {
				ki := (w + c) % len(keys)
				id := fmt.Sprintf("w%d-c%d", w, c)
				// KeyLimited false: a replica whose cache still says the key
				// has no rules serves it from its lease.
				if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: keys[ki], HoldID: id, Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 100}); err != nil {
					errs <- err
					return
				}
				if c%7 == 3 { // a failed call: released, charged nothing, counted nowhere
					if err := l.Release(ctx, "acme", keys[ki], id, &metering.Record{RequestID: id, Failed: true, Status: 502}); err != nil {
						errs <- err
						return
					}
					continue
				}
				cost := int64(97 + 13*(w%5) + c)
				s := settlement("acme", id, cost)
				s.KeyID = keys[ki]
				if _, err := l.Settle(ctx, s); err != nil {
					errs <- err
					return
				}
				spent[ki].Add(cost)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, l := range replicas {
		returnAll(t, l)
	}

	used := map[string]int64{}
	ks, err := e.St.Keys(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		used[k.ID] = k.PeriodUsed
	}
	if used[budgeted.ID] != spent[0].Load() || used[own.ID] != spent[2].Load() || used[plain.ID] != 0 {
		t.Errorf("period_used: budgeted %d, own %d, plain %d; want Σ leased costs %d, %d and 0 (no budget)",
			used[budgeted.ID], used[own.ID], used[plain.ID], spent[0].Load(), spent[2].Load())
	}
	mbs, err := e.St.MemberBudgets(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mbs["bob"].PeriodUsed, spent[0].Load()+spent[1].Load(); got != want {
		t.Errorf("bob's period_used %d, want Σ leased costs of his keys %d", got, want)
	}
	a := e.Acct(t, "acme")
	if total := spent[0].Load() + spent[1].Load() + spent[2].Load(); a.Consumed != total {
		t.Errorf("consumed %d, want Σ costs %d", a.Consumed, total)
	}
	testledger.Assert(t, e.St, "acme")

	// Past the budgets by what was in flight: the next call of each key
	// held one by one (its replica now knows its rules) is refused.
	if spent[2].Load() <= budget || spent[0].Load()+spent[1].Load() <= 2*budget {
		t.Fatalf("the test spends %d, %d, %d, not past the budgets", spent[0].Load(), spent[1].Load(), spent[2].Load())
	}
	for _, c := range []struct {
		key, rule string
	}{{own.ID, metering.RuleBudget}, {plain.ID, metering.RuleMemberBudget}, {budgeted.ID, metering.RuleMemberBudget}} {
		_, err = replicas[1].Reserve(ctx, metering.HoldRequest{Account: "acme", KeyID: c.key, KeyLimited: true, HoldID: "governed-" + c.key,
			Fixed: 100, PerOutput: 2, MinOutput: 16, MaxOutput: 100})
		var kr *metering.KeyRuleError
		if !errors.As(err, &kr) || kr.Rule != c.rule {
			t.Errorf("governed call of %s after the leased spend: %v, want refused by %s", c.key, err, c.rule)
		}
	}
}
