package soak

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// account is a test account with one API key.
type account struct {
	id     string
	key    string
	funded int64 // mc credited at creation
}

// createAccounts creates n accounts directly through the store, each funded
// with fund(i) mc (one grant) and given one API key.
func createAccounts(t testing.TB, st *metering.Store, prefix string, n int, fund func(i int) int64) []*account {
	t.Helper()
	accts := make([]*account, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 8)
	for i := range accts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, err := createAccount(st, fmt.Sprintf("%s-%04d", prefix, i), fund(i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			accts[i] = a
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("creating accounts: %v (and %d more)", errs[0], len(errs)-1)
	}
	return accts
}

func createAccount(st *metering.Store, id string, fund int64) (*account, error) {
	ctx := context.Background()
	if _, err := st.CreateAccount(ctx, id); err != nil {
		return nil, err
	}
	if fund > 0 {
		if _, err := st.Credit(ctx, metering.Credit{Account: id, Amount: fund, Reference: "soak-fund-" + id, Type: "grant"}); err != nil {
			return nil, err
		}
	}
	_, key, err := st.CreateKey(ctx, id, "soak", 0)
	if err != nil {
		return nil, err
	}
	return &account{id: id, key: key, funded: fund}, nil
}

// ledgerInvariant checks docs/architecture.md §8 invariant 1 for one account and
// returns its state and every problem found: Σ ledger amounts = balance (and
// each entry's balance_after is the running sum), purchased + granted +
// adjusted − consumed = balance, each total = Σ of its kinds of entries
// (purchases and their reversals, grants, adjustments, usage debits; see the
// metering package doc), every usage debit = its tokens at the shipped prices
// (over-hold charges included; only a call whose hold had expired may be
// charged less, and says capped), nothing reserved, balance ≥ 0.
func ledgerInvariant(st *metering.Store, id string) (metering.Account, []metering.Entry, []string) {
	ctx := context.Background()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, id+": "+fmt.Sprintf(format, args...)) }
	// A proxy applies its settled calls just after answering them, and
	// gives its credit lease back once idle (proxy.lease_idle_return): read
	// once nothing is reserved any more.
	waitUnreserved(st, []*account{{id: id}}, 10*time.Second)
	a, err := st.Account(ctx, id)
	if err != nil {
		bad("reading account: %v", err)
		return a, nil, problems
	}
	entries, err := st.AllEntries(ctx, id)
	if err != nil {
		bad("reading ledger: %v", err)
		return a, nil, problems
	}
	prices, err := readPrices()
	if err != nil {
		bad("reading the shipped prices: %v", err)
		return a, entries, problems
	}
	var sum, bought, granted, adjusted, debits int64
	for _, e := range entries {
		sum += e.Amount
		if e.BalanceAfter != sum {
			bad("entry %s (%s %d) balance_after %d, running sum %d", e.ID, e.Type, e.Amount, e.BalanceAfter, sum)
		}
		switch e.Type {
		case "usage":
			if e.Amount > 0 {
				bad("usage entry %s credits %d", e.ID, e.Amount)
			}
			debits -= e.Amount
			if p := pricedProblem(prices, e); p != "" {
				bad("usage entry %s: %s", e.ID, p)
			}
		case "purchase", "auto_recharge", "refund", "dispute", "dispute_won":
			bought += e.Amount
		case metering.Grant:
			granted += e.Amount
		case metering.Adjustment:
			adjusted += e.Amount
		default:
			bad("entry %s of unknown type %q", e.ID, e.Type)
		}
	}
	if sum != a.Balance {
		bad("Σ ledger %d ≠ balance %d", sum, a.Balance)
	}
	if a.Credits()-a.Consumed != a.Balance {
		bad("purchased %d + granted %d + adjusted %d − consumed %d ≠ balance %d", a.Purchased, a.Granted, a.Adjusted, a.Consumed, a.Balance)
	}
	if bought != a.Purchased || granted != a.Granted || adjusted != a.Adjusted {
		bad("Σ purchase entries %d, grants %d, adjustments %d ≠ purchased %d, granted %d, adjusted %d",
			bought, granted, adjusted, a.Purchased, a.Granted, a.Adjusted)
	}
	if debits != a.Consumed {
		bad("Σ usage debits %d ≠ consumed %d", debits, a.Consumed)
	}
	if a.Reserved != 0 {
		holds, _ := st.Client().HGetAll(ctx, "{a:"+id+"}:hval").Result()
		bad("%d mc still reserved (holds and leases: %v)", a.Reserved, holds)
	}
	if a.Balance < 0 {
		bad("balance %d below zero", a.Balance)
	}
	return a, entries, problems
}

// pricedProblem says what is wrong with a usage entry's charge against its
// tokens at the shipped prices ("" when nothing is).
func pricedProblem(p priceList, e metering.Entry) string {
	r, ok := p.models[e.Fields["model"]]
	if !ok {
		return fmt.Sprintf("model %q not in the shipped catalog", e.Fields["model"])
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(e.Fields[k], 10, 64); return v }
	cost := r.price(usage{in: n("input_tokens"), cached: n("cached_input_tokens"), out: n("output_tokens"),
		cw: n("cache_write_tokens"), cw1h: n("cache_write_1h_tokens"), ws: n("web_search_requests")})
	switch {
	case e.Fields["capped"] == "1" && -e.Amount > cost:
		return fmt.Sprintf("capped charge %d above its priced usage %d", -e.Amount, cost)
	case e.Fields["capped"] != "1" && -e.Amount != cost:
		return fmt.Sprintf("charged %d, its usage prices at %d (over_hold %s)", -e.Amount, cost, e.Fields["over_hold"])
	}
	return ""
}

// usageByRef indexes usage entries by their reference (the hold id, which is
// the request id).
func usageByRef(entries []metering.Entry) map[string][]metering.Entry {
	m := map[string][]metering.Entry{}
	for _, e := range entries {
		if e.Type == "usage" {
			m[e.Reference] = append(m[e.Reference], e)
		}
	}
	return m
}

// waitUnreserved waits until no account has credits reserved (calls that
// clients hung up on settle asynchronously) or the deadline passes.
func waitUnreserved(st *metering.Store, accts []*account, within time.Duration) {
	deadline := time.Now().Add(within)
	for _, a := range accts {
		for {
			ac, err := st.Account(context.Background(), a.id)
			if (err == nil && ac.Reserved == 0) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// holdExpiries reads an account's live holds and their expiry (ms since the
// epoch) from the key metering documents for them ({a:ID}:hexp, doc.go): an
// auditor's read, to prove that a crashed proxy's holds expire in time.
func holdExpiries(rdb redis.UniversalClient, id string) (map[string]int64, error) {
	zs, err := rdb.ZRangeWithScores(context.Background(), "{a:"+id+"}:hexp", 0, -1).Result()
	if err != nil {
		return nil, err
	}
	m := make(map[string]int64, len(zs))
	for _, z := range zs {
		m[fmt.Sprint(z.Member)] = int64(z.Score)
	}
	return m, nil
}

// sweep makes the store drop an account's expired holds, as the next reserve
// of any call does: a zero hold, placed and released.
func sweep(st *metering.Store, id string) error {
	ctx := context.Background()
	hold := "soak-sweep-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := st.Reserve(ctx, metering.HoldRequest{Account: id, HoldID: hold}); err != nil {
		return err
	}
	return st.Release(ctx, id, "", hold, nil)
}
