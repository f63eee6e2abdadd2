package lease_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
)

// deaf is a store whose revocation messages never arrive (a subscriber that
// reconnected at the wrong moment): only the periodic check is left.
type deaf struct{ *metering.Store }

func (deaf) WatchRevocations(ctx context.Context, _ func(string), _ func()) { <-ctx.Done() }

// A debit that leaves an account short (a dispute, a refund, an operator's
// adjustment) stops every replica from serving new calls out of what it had
// leased, within about a second; calls in flight finish and are charged in
// full; no lease is renewed while the account is short.
func TestLeaseRevokedWhenAccountGoesShort(t *testing.T) {
	for _, tc := range []struct {
		name string
		deaf bool // the message is lost: Options.Verify finds out
	}{{"told at once", false}, {"message lost", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := testledger.New(t, metering.Options{HoldTTL: time.Minute})
			const fund = 1_000_000
			e.Account(t, "acme", fund)
			ctx := context.Background()
			var replicas []*lease.Leaser
			for i := 0; i < 2; i++ {
				var st lease.Store = e.Replica(t, metering.Options{HoldTTL: time.Minute})
				if tc.deaf {
					st = deaf{st.(*metering.Store)}
				}
				replicas = append(replicas, newLeaser(t, st, lease.Options{ID: fmt.Sprintf("r%d", i), IdleReturn: time.Hour}))
			}
			// Each replica serves a call (its lease now covers more), and
			// keeps one in flight.
			call := metering.HoldRequest{Account: "acme", Fixed: 10_000, PerOutput: 10, MinOutput: 1, MaxOutput: 10_000}
			for i, l := range replicas {
				call.HoldID = fmt.Sprintf("first-%d", i)
				if _, err := l.Reserve(ctx, call); err != nil {
					t.Fatal(err)
				}
				if _, err := l.Settle(ctx, settlement("acme", call.HoldID, 5000)); err != nil {
					t.Fatal(err)
				}
				call.HoldID = fmt.Sprintf("inflight-%d", i)
				if _, err := l.Reserve(ctx, call); err != nil {
					t.Fatal(err)
				}
			}
			if err := replicas[0].Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := replicas[1].Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// A chargeback of more than is left.
			before := e.Acct(t, "acme")
			if before.Reserved == 0 {
				t.Fatalf("nothing leased before the chargeback: %+v", before)
			}
			if _, err := e.St.Credit(ctx, metering.Credit{Account: "acme", Amount: -(before.Balance + 1000), Reference: "chargeback", Type: "adjustment"}); err != nil {
				t.Fatal(err)
			}
			revokedAt := time.Now()
			// Every replica refuses new calls, soon (a second with the
			// message, Verify plus a tick without; generous under load).
			for i, l := range replicas {
				var err error
				for n := 0; ; n++ {
					call.HoldID = fmt.Sprintf("after-%d-%d", i, n)
					_, err = l.Reserve(ctx, call)
					if err != nil {
						break
					}
					// Released without a record: nothing queued, so no
					// batch's answer tells the replica; only the message
					// or the periodic check can.
					if err := l.Release(ctx, "acme", "", call.HoldID, nil); err != nil {
						t.Fatal(err)
					}
					if time.Since(revokedAt) > 5*time.Second {
						t.Fatalf("replica %d still serves %d calls after the chargeback", i, n+1)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if !errors.Is(err, metering.ErrInsufficient) {
					t.Fatalf("replica %d: %v, want insufficient credits", i, err)
				}
			}
			t.Logf("every replica refuses %v after the chargeback", time.Since(revokedAt).Round(time.Millisecond))
			if a := e.Acct(t, "acme"); a.Reserved != 0 {
				t.Errorf("leases still reserve %d mc of a short account: %+v", a.Reserved, a)
			}
			// The calls in flight finish, charged in full (the balance was
			// already below zero: it goes further, by what they cost).
			for i, l := range replicas {
				ch, err := l.Settle(ctx, settlement("acme", fmt.Sprintf("inflight-%d", i), 7000))
				if err != nil || ch.Charged != 7000 {
					t.Fatalf("in-flight settle: %+v, %v", ch, err)
				}
				returnAll(t, l)
			}
			a := e.Acct(t, "acme")
			if a.Reserved != 0 || a.Balance >= 0 {
				t.Fatalf("after the calls in flight: %+v, want nothing reserved and a negative balance", a)
			}
			testledger.Assert(t, e.St, "acme")
		})
	}
}

// A flush whose calls cost more than their holds, leaving the account short,
// does not renew the lease past what the account has.
func TestLeaseFlushNeverRenewsPastTheBalance(t *testing.T) {
	e := testledger.New(t, metering.Options{HoldTTL: time.Minute})
	e.Account(t, "acme", 100_000)
	l := newLeaser(t, e.St, lease.Options{IdleReturn: time.Hour})
	ctx := context.Background()
	h, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "big", Fixed: 1000, PerOutput: 1, MinOutput: 1, MaxOutput: 40_000})
	if err != nil {
		t.Fatal(err)
	}
	if a := e.Acct(t, "acme"); a.Reserved < 80_000 {
		t.Fatalf("lease %d, want the call and room for another", a.Reserved)
	}
	// The provider billed far more than the hold (a hole in its sizing).
	ch, err := l.Settle(ctx, settlement("acme", "big", 150_000))
	if err != nil || ch.Charged != 150_000 || ch.OverHold != 150_000-h.Amount {
		t.Fatalf("settle = %+v, %v", ch, err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a := e.Acct(t, "acme")
	if a.Balance != -50_000 || a.Reserved != 0 {
		t.Fatalf("after the flush: %+v; want balance −50,000 and no lease left", a)
	}
	if _, err := l.Reserve(ctx, metering.HoldRequest{Account: "acme", HoldID: "next", Fixed: 1}); !errors.Is(err, metering.ErrInsufficient) {
		t.Fatalf("a call after the account went short: %v, want insufficient credits", err)
	}
	en := e.Entries(t, "acme")
	last := en[len(en)-1]
	if last.Fields["over_hold"] != fmt.Sprint(150_000-h.Amount) || last.Fields["capped"] != "0" {
		t.Fatalf("ledger entry %+v: want over_hold %d, not capped", last.Fields, 150_000-h.Amount)
	}
	testledger.Assert(t, e.St, "acme")
}
