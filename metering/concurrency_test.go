package metering_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// Many callers on several replicas race for one account funded for about a
// third of what they want (docs/architecture.md §8 invariants 1 and 2).
func TestConcurrentReserveSettle(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	const (
		workers   = 240
		rounds    = 4
		fixed     = 1000
		perOutput = 10
		minOut    = 10
		maxOut    = 500
		maxHold   = fixed + perOutput*maxOut
		fund      = workers * rounds * maxHold / 3
		acct      = "contended"
	)
	e.account(t, acct, fund)
	stores := []*metering.Store{e.st}
	for range 3 {
		stores = append(stores, e.replica(t, metering.Options{}))
	}

	var (
		charged, settles, releases, refused atomic.Int64
		wg                                  sync.WaitGroup
		done                                = make(chan struct{})
	)
	// A watcher: the balance and what is available never go below zero.
	watchErr := make(chan error, 1)
	go func() {
		defer close(watchErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			a, err := e.st.Account(ctx, acct)
			if err != nil {
				watchErr <- err
				return
			}
			if a.Balance < 0 || a.Available() < 0 || a.Reserved < 0 {
				watchErr <- fmt.Errorf("overdrawn mid-run: %+v", a)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[w%len(stores)]
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for r := range rounds {
				hold := fmt.Sprintf("w%d-r%d", w, r)
				h, err := st.Reserve(ctx, metering.HoldRequest{Account: acct, HoldID: hold,
					Fixed: fixed, PerOutput: perOutput, MinOutput: minOut, MaxOutput: maxOut})
				if errors.Is(err, metering.ErrInsufficient) {
					refused.Add(1)
					continue
				}
				if err != nil {
					t.Errorf("Reserve: %v", err)
					return
				}
				if h.Amount < fixed+perOutput*minOut || h.Amount > maxHold || h.Available < 0 {
					t.Errorf("hold %+v out of bounds", h)
				}
				if rng.IntN(10) == 0 { // a failed upstream call
					if err := st.Release(ctx, acct, "", hold, nil); err != nil {
						t.Errorf("Release: %v", err)
					}
					releases.Add(1)
					continue
				}
				cost := rng.Int64N(h.Amount + 1)
				c, err := st.Settle(ctx, metering.Settlement{Account: acct, HoldID: hold, Cost: cost,
					Record: metering.Record{RequestID: hold, Model: "m", Output: (cost - fixed) / perOutput}})
				if err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
				if c.Charged != cost || c.Capped || c.Replay || c.BalanceAfter < 0 {
					t.Errorf("Settle(cost %d, hold %d) = %+v", cost, h.Amount, c)
				}
				charged.Add(c.Charged)
				settles.Add(1)
			}
		}()
	}
	wg.Wait()
	close(done)
	if err := <-watchErr; err != nil {
		t.Error(err)
	}

	a := e.acct(t, acct)
	t.Logf("settled %d, released %d, refused %d; charged %d of %d funded", settles.Load(), releases.Load(), refused.Load(), charged.Load(), int64(fund))
	if refused.Load() == 0 {
		t.Error("no call was refused: the account was not contended")
	}
	if a.Reserved != 0 {
		t.Errorf("reserved = %d after every call ended", a.Reserved)
	}
	if a.Balance < 0 || a.Balance != fund-charged.Load() {
		t.Errorf("balance = %d, want %d − %d = %d", a.Balance, int64(fund), charged.Load(), fund-charged.Load())
	}
	if a.Purchased != fund || a.Consumed != charged.Load() || a.Purchased-a.Consumed != a.Balance {
		t.Errorf("account = %+v, want purchased %d, consumed %d", a, int64(fund), charged.Load())
	}
	var sum, usage, nUsage int64
	for _, en := range e.entries(t, acct) {
		sum += en.Amount
		if en.Type == "usage" {
			usage -= en.Amount
			nUsage++
		}
	}
	if sum != a.Balance {
		t.Errorf("Σ ledger = %d, balance %d", sum, a.Balance)
	}
	if usage != charged.Load() || nUsage != settles.Load() {
		t.Errorf("Σ usage debits = %d over %d entries, want %d over %d settles", usage, nUsage, charged.Load(), settles.Load())
	}
	assertLedger(t, e.st, acct)
}
