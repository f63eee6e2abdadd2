package metering_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// governed issues a key with rules ks on a funded account.
func governed(t *testing.T, e *env, account string, ks metering.KeySettings) metering.Key {
	t.Helper()
	e.account(t, account, 1_000_000)
	k, _, err := e.St.IssueKey(context.Background(), metering.NewKey{Account: account, Name: "g", Settings: ks})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func holdFor(k metering.Key, id string, fixed, minOut, maxOut int64) metering.HoldRequest {
	return metering.HoldRequest{Account: k.Account, KeyID: k.ID, KeyLimited: true, HoldID: id, Model: "m",
		Fixed: fixed, PerOutput: 2, MinOutput: minOut, MaxOutput: maxOut, InputTokens: fixed}
}

func rule(err error) string {
	var kr *metering.KeyRuleError
	if errors.As(err, &kr) {
		return kr.Rule
	}
	return ""
}

// TestKeyRulesConcurrent: many goroutines on two stores (two replicas)
// reserve at once; each rule admits exactly what it allows.
func TestKeyRulesConcurrent(t *testing.T) {
	for _, c := range []struct {
		name string
		ks   metering.KeySettings
		want int64 // calls admitted of 50
		rule string
	}{
		{"max_parallel", metering.KeySettings{MaxParallel: 3}, 3, metering.RuleMaxParallel},
		{"rpm", metering.KeySettings{RPM: 7}, 7, metering.RuleRPM},
		// Each call: 10 input + 10 output tokens; 95 tokens fit 4, the 5th is capped to 5 output tokens: 5 calls.
		{"tpm", metering.KeySettings{TPM: 95}, 5, metering.RuleTPM},
		// Each call holds 10 + 2×10 = 30 mc of a 100 mc budget: 3, then one capped to 5 output tokens (20 mc)... 100-90 = 10 = fixed: refused (min 1 output).
		{"budget", metering.KeySettings{Budget: 100, BudgetPeriod: metering.PeriodDay}, 3, metering.RuleBudget},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, metering.Options{})
			other := e.replica(t, metering.Options{})
			k := governed(t, e, "acme", c.ks)
			var ok atomic.Int64
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := e.St
					if i%2 == 1 {
						st = other
					}
					_, err := st.Reserve(context.Background(), holdFor(k, fmt.Sprintf("r%d", i), 10, 1, 10))
					switch {
					case err == nil:
						ok.Add(1)
					case rule(err) != c.rule:
						t.Errorf("call %d: %v, want a %s refusal", i, err, c.rule)
					}
				}()
			}
			wg.Wait()
			if ok.Load() != c.want {
				t.Fatalf("%d of 50 admitted, want %d", ok.Load(), c.want)
			}
		})
	}
}

// TestKeyParallelFreedByEnd: a settled or released call frees its slot, and
// so does a hold that expired (a proxy that died).
func TestKeyParallelFreedByEnd(t *testing.T) {
	e := newEnv(t, metering.Options{HoldTTL: 300 * time.Millisecond})
	ctx := context.Background()
	k := governed(t, e, "acme", metering.KeySettings{MaxParallel: 1})
	if _, err := e.St.Reserve(ctx, holdFor(k, "a", 10, 1, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "b", 10, 1, 10)); rule(err) != metering.RuleMaxParallel {
		t.Fatalf("second call: %v", err)
	}
	if _, err := e.St.Settle(ctx, metering.Settlement{Account: "acme", KeyID: k.ID, HoldID: "a", Cost: 12}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "c", 10, 1, 10)); err != nil {
		t.Fatalf("after a settle: %v", err)
	}
	if err := e.St.Release(ctx, "acme", k.ID, "c", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "d", 10, 1, 10)); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // d's hold expires: its proxy is gone
	if _, err := e.St.Reserve(ctx, holdFor(k, "e", 10, 1, 10)); err != nil {
		t.Fatalf("after a hold expired: %v", err)
	}
	assertLedger(t, e.St, "acme")
}

// TestKeyBudgetPeriodOnlyMovesForward: a replica whose clock is still in the
// previous month (the month's start comes from the caller's clock) neither
// resets the budget another replica's calls already counted in the new month
// nor spends past it.
func TestKeyBudgetPeriodOnlyMovesForward(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	k := governed(t, e, "acme", metering.KeySettings{Budget: 100, BudgetPeriod: metering.PeriodMonth})
	// Another replica, already in the next month, spent 95 of the 100.
	next := metering.MonthStart(time.Now()).AddDate(0, 1, 0).Unix()
	if err := e.RDB.HSet(ctx, "{a:acme}:kg:"+k.ID, "bstart", next, "bused", 95).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "late", 10, 1, 10)); rule(err) != metering.RuleBudget {
		t.Fatalf("reserve with 5 mc of the budget left: %v, want the budget rule", err)
	}
	// A call that was already running ends: its charge counts in the newer
	// period, which stays the key's period.
	if err := e.RDB.HSet(ctx, "{a:acme}:kg:"+k.ID, "bused", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "run", 10, 1, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Settle(ctx, metering.Settlement{Account: "acme", KeyID: k.ID, HoldID: "run", Cost: 30}); err != nil {
		t.Fatal(err)
	}
	v, err := e.RDB.HMGet(ctx, "{a:acme}:kg:"+k.ID, "bstart", "bused").Result()
	if err != nil || fmt.Sprint(v[0]) != fmt.Sprint(next) || fmt.Sprint(v[1]) != "30" {
		t.Fatalf("budget period after a late settle: %v %v, want start %d used 30", v, err, next)
	}
}

// TestKeyBudgetSettleAndPeriod: settle adds the call's actual charge to
// the period, a release nothing; Keys shows it as PeriodUsed.
func TestKeyBudgetSettleAndPeriod(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	k := governed(t, e, "acme", metering.KeySettings{Budget: 100, BudgetPeriod: metering.PeriodWeek})
	for i, cost := range []int64{25, 30} {
		id := fmt.Sprintf("s%d", i)
		if _, err := e.St.Reserve(ctx, holdFor(k, id, 10, 1, 10)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.St.Settle(ctx, metering.Settlement{Account: "acme", KeyID: k.ID, HoldID: id, Cost: cost}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "r", 10, 1, 10)); err != nil {
		t.Fatal(err)
	}
	if err := e.St.Release(ctx, "acme", k.ID, "r", nil); err != nil {
		t.Fatal(err)
	}
	// 45 left: 10 + 2×17 = 44 fits 17 output tokens.
	h, err := e.St.Reserve(ctx, holdFor(k, "last", 10, 1, 100))
	if err != nil || h.OutputTokens != 17 {
		t.Fatalf("hold %+v, %v: want 17 output tokens (45 mc left of the budget)", h, err)
	}
	keys, err := e.St.Keys(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, ku := range keys {
		if ku.ID == k.ID && (ku.PeriodUsed != 55 || ku.Used != 55) {
			t.Fatalf("key %+v: want 55 mc used in the period", ku)
		}
	}
}

func TestKeyPeriodStart(t *testing.T) {
	at := time.Date(2026, 12, 3, 13, 30, 0, 0, time.UTC) // a Thursday
	for _, c := range []struct {
		kind string
		want time.Time
	}{
		{metering.PeriodDay, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)},
		{metering.PeriodWeek, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)},
		{metering.PeriodMonth, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if got := metering.KeyPeriodStart(c.kind, at); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", c.kind, got, c.want)
		}
	}
}

func TestKeySettingsValidate(t *testing.T) {
	for _, ks := range []metering.KeySettings{
		{Budget: 5},
		{BudgetPeriod: "day"},
		{Budget: 5, BudgetPeriod: "year"},
		{RPM: -1},
		{TPM: metering.MaxRate + 1},
		{Models: []string{"a"}},
	} {
		if ks.Validate() == nil {
			t.Errorf("%+v: valid, want an error", ks)
		}
	}
}

// TestKeyTPMGivesBackUnused: a call holds its worst case of the minute's
// tokens; its settle gives back what it did not use, its release all of it.
func TestKeyTPMGivesBackUnused(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	k := governed(t, e, "acme", metering.KeySettings{TPM: 100})
	if _, err := e.St.Reserve(ctx, holdFor(k, "a", 10, 80, 80)); err != nil { // 90 tokens
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "b", 10, 20, 20)); rule(err) != metering.RuleTPM {
		t.Fatalf("30 more tokens with 90 held of 100: %v", err)
	}
	// a used 10 input + 5 output tokens: 75 come back.
	if _, err := e.St.Settle(ctx, metering.Settlement{Account: "acme", KeyID: k.ID, HoldID: "a", Cost: 20,
		Record: metering.Record{Input: 10, Output: 5}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "c", 10, 70, 70)); err != nil { // 80 tokens of the 85 left
		t.Fatalf("after the give-back: %v", err)
	}
	if err := e.St.Release(ctx, "acme", k.ID, "c", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.St.Reserve(ctx, holdFor(k, "d", 10, 70, 70)); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}
