package metering_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// assertReplay checks that the journal replays to the live grants (restore).
func assertReplay(t *testing.T, e *env, account string) {
	t.Helper()
	live, err := e.st.PromoGrants(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	if got := metering.ReplayPromo(e.entries(t, account)); fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("ReplayPromo = %+v, live grants %+v", got, live)
	}
}

// Promotional credits never pay a debt: paid = balance − promo through a
// grant to an account in debt, a negative adjustment, a dispute and its won
// closing, and the expiry.
func TestPromoNeverPaysDebt(t *testing.T) {
	for _, tc := range []struct {
		name string
		fund int64
		run  func(t *testing.T, e *env, ctx context.Context)
		// paid (balance − promotional) and promotional after the steps, and
		// the balance after the grant expired
		paid, promo, afterExpiry int64
	}{
		{name: "adjustment in debt", run: func(t *testing.T, e *env, ctx context.Context) {
			credit(t, e, -50_000, "debt")
			redeem(t, e, "DEBT")
			// The adjustment deepens the debt; the grant pays none of it (the
			// old clamp took 60,000 from it: the debt was paid off).
			credit(t, e, -10_000, "more")
		}, paid: -60_000, promo: 100_000, afterExpiry: -60_000},
		{name: "dispute in debt, won", fund: 10_000, run: func(t *testing.T, e *env, ctx context.Context) {
			credit(t, e, -60_000, "debt")
			redeem(t, e, "DEBT")
			dispute(t, e, false)
			dispute(t, e, true)
		}, paid: -50_000, promo: 100_000, afterExpiry: -50_000},
		{name: "dispute past paid, won", fund: 10_000, run: func(t *testing.T, e *env, ctx context.Context) {
			redeem(t, e, "DEBT")
			credit(t, e, -8_000, "adj")
			dispute(t, e, false) // paid pays all 10,000 (2,000 → −8,000); the grant nothing
			if a := e.acct(t, "d"); a.Balance != 92_000 || a.Promotional != 100_000 {
				t.Fatalf("after the dispute: %+v", a)
			}
			dispute(t, e, true) // the 10,000 go back to paid
		}, paid: 2_000, promo: 100_000, afterExpiry: 2_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, metering.Options{})
			ctx := context.Background()
			e.account(t, "d", tc.fund)
			newCode(t, e.st, metering.PromoCode{Code: "DEBT", Credits: 100_000, GrantExpiresIn: time.Hour})
			tc.run(t, e, ctx)
			a := e.acct(t, "d")
			if a.Paid() != tc.paid || a.Promotional != tc.promo {
				t.Fatalf("account %+v: paid %d, want %d and promotional %d", a, a.Paid(), tc.paid, tc.promo)
			}
			assertLedger(t, e.st, "d")
			assertReplay(t, e, "d")
			if _, err := e.st.ExpirePromos(ctx, "d", time.Now().Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if a := e.acct(t, "d"); a.Balance != tc.afterExpiry || a.Promotional != 0 {
				t.Fatalf("after expiry: %+v, want balance %d", a, tc.afterExpiry)
			}
			assertLedger(t, e.st, "d")
			assertReplay(t, e, "d")
		})
	}
}

func credit(t *testing.T, e *env, mc int64, ref string) {
	t.Helper()
	if _, err := e.st.Credit(context.Background(), metering.Credit{Account: "d", Amount: mc, Reference: ref, Type: metering.Adjustment}); err != nil {
		t.Fatal(err)
	}
}

func redeem(t *testing.T, e *env, code string) {
	t.Helper()
	if _, err := e.st.Redeem(context.Background(), "d", code); err != nil {
		t.Fatal(err)
	}
}

func dispute(t *testing.T, e *env, won bool) {
	t.Helper()
	r := metering.Reversal{Account: "d", PaymentID: "pi_fund-d", Kind: metering.Dispute, Reference: "dispute:dp_1",
		Linked: "dispute_won:dp_1", Minor: 100}
	if won {
		r.Kind, r.Reference, r.Linked = metering.DisputeWon, "dispute_won:dp_1", "dispute:dp_1"
	}
	if res, err := e.st.ReversePurchase(context.Background(), r); err != nil || !res.Applied {
		t.Fatalf("ReversePurchase(%+v) = %+v, %v", r, res, err)
	}
}

// An expiry leaves what live holds need: a call reserved against
// promotional credits and settled after its grant expired is paid by them,
// and the part kept back expires when the hold has ended.
func TestPromoExpiryLeavesHolds(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "h", 0)
	newCode(t, e.st, metering.PromoCode{Code: "HOLD", Credits: 1000, GrantExpiresIn: time.Hour})
	redeem := func() {
		if _, err := e.st.Redeem(ctx, "h", "HOLD"); err != nil {
			t.Fatal(err)
		}
	}
	redeem()
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "h", HoldID: "c1", Fixed: 800}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(2 * time.Hour)
	if n, err := e.st.SweepPromos(ctx, at, 0); err != nil || n != 1 {
		t.Fatalf("SweepPromos = %d, %v", n, err)
	}
	if a := e.acct(t, "h"); a.Balance != 800 || a.Promotional != 800 {
		t.Fatalf("after the expiry with a hold of 800: %+v", a)
	}
	// Due again shortly, not at once.
	if n, err := e.st.SweepPromos(ctx, at, 0); err != nil || n != 0 {
		t.Fatalf("SweepPromos again = %d, %v", n, err)
	}
	if _, err := e.st.Settle(ctx, metering.Settlement{Account: "h", HoldID: "c1", Cost: 500, Record: metering.Record{RequestID: "c1", Model: "m"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.SweepPromos(ctx, at.Add(time.Minute), 0); err != nil || n != 1 {
		t.Fatalf("SweepPromos after the settle = %d, %v", n, err)
	}
	a := e.acct(t, "h")
	if a.Balance != 0 || a.Promotional != 0 || a.Consumed != 500 {
		t.Fatalf("after the settle and the second expiry: %+v", a)
	}
	var expired int64
	for _, en := range e.entries(t, "h") {
		if en.Type == metering.PromoExpired {
			expired -= en.Amount
		}
	}
	if expired != 500 {
		t.Fatalf("promo_expired entries take %d, want the 500 left unspent", expired)
	}
	assertLedger(t, e.st, "h")
	assertReplay(t, e, "h")
	n, err := e.rdb.ZCard(ctx, "tg:promo:due").Result()
	if err != nil || n != 0 {
		t.Fatalf("sweeper index holds %d accounts (%v), want none", n, err)
	}
}

// A code is created whole: when the step that writes its bound fails, the
// retry creates it with its bound and expiry (it was left unbounded).
func TestCreatePromoCodeWhole(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	rdb := e.srv.Client(t)
	exp := time.UnixMilli(4102444800123).UTC()
	rdb.AddHook(&failOnce{arg: fmt.Sprint(exp.UnixMilli())})
	st := metering.New(rdb, metering.Options{})
	p := metering.PromoCode{Code: "ONE", Credits: 100, MaxRedemptions: 1, ExpiresAt: exp}
	for try := 0; ; try++ {
		err := st.CreatePromoCode(ctx, p)
		if err == nil || errors.Is(err, metering.ErrPromoExists) {
			break
		}
		if try == 3 {
			t.Fatalf("CreatePromoCode: %v", err)
		}
	}
	got, err := st.PromoCode(ctx, "ONE")
	if err != nil || got.MaxRedemptions != 1 || !got.ExpiresAt.Equal(exp) || got.Credits != 100 {
		t.Fatalf("PromoCode = %+v, %v", got, err)
	}
}

// A sweep does not overwrite the earlier expiry a concurrent Redeem indexed
// between the expiry and the sweep's move of the account.
func TestSweepKeepsConcurrentRedeemExpiry(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "s", 0)
	newCode(t, e.st, metering.PromoCode{Code: "SHORT", Credits: 10, GrantExpiresIn: time.Minute})
	newCode(t, e.st, metering.PromoCode{Code: "LONG", Credits: 10, GrantExpiresIn: 3 * time.Hour})
	newCode(t, e.st, metering.PromoCode{Code: "MID", Credits: 10, GrantExpiresIn: time.Hour})
	for _, c := range []string{"SHORT", "LONG"} {
		if _, err := e.st.Redeem(ctx, "s", c); err != nil {
			t.Fatal(err)
		}
	}
	rdb := e.srv.Client(t)
	// the sweeper's first write of the index
	rdb.AddHook(&beforeCmd{match: func(c redis.Cmder) bool {
		return (c.Name() == "zadd" || c.Name() == "zrem") && hasArg(c, "tg:promo:due")
	}, run: func() {
		if _, err := e.st.Redeem(ctx, "s", "MID"); err != nil {
			t.Error(err)
		}
	}})
	sweeper := metering.New(rdb, metering.Options{})
	if n, err := sweeper.SweepPromos(ctx, time.Now().Add(30*time.Minute), 0); err != nil || n != 1 {
		t.Fatalf("SweepPromos = %d, %v", n, err)
	}
	gs, err := e.st.PromoGrants(ctx, "s")
	if err != nil || len(gs) != 2 || gs[0].ID != "promo:MID" {
		t.Fatalf("grants %+v, %v", gs, err)
	}
	score, err := e.rdb.ZScore(ctx, "tg:promo:due", "s").Result()
	if err != nil || int64(score) != gs[0].ExpiresAt.UnixMilli() {
		t.Fatalf("due at %v (%v), want MID's expiry %v", int64(score), err, gs[0].ExpiresAt.UnixMilli())
	}
}

// beforeCmd runs run once, before the first command that match accepts.
type beforeCmd struct {
	match func(redis.Cmder) bool
	run   func()
	done  atomic.Bool
}

func (b *beforeCmd) DialHook(next redis.DialHook) redis.DialHook { return next }

func (b *beforeCmd) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if b.match(cmd) && b.done.CompareAndSwap(false, true) {
			b.run()
		}
		return next(ctx, cmd)
	}
}

func (b *beforeCmd) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A code lost (say by a restore) and created again takes no redemption from
// an account that holds its grant already, whether the account is seen
// before the claim or only by the grant (the claim is then given back).
func TestRecreatedCodeNotRedeemedTwice(t *testing.T) {
	for _, raced := range []bool{false, true} {
		t.Run(fmt.Sprint("raced=", raced), func(t *testing.T) {
			e := newEnv(t, metering.Options{})
			ctx := context.Background()
			e.account(t, "old", 0)
			e.account(t, "new", 0)
			p := metering.PromoCode{Code: "ONCE", Credits: 100, MaxRedemptions: 1}
			newCode(t, e.st, p)
			if _, err := e.st.Redeem(ctx, "old", "ONCE"); err != nil {
				t.Fatal(err)
			}
			e.rdb.Del(ctx, "{p:ONCE}:code", "{p:ONCE}:by") // the code is lost
			newCode(t, e.st, p)
			st := e.st
			if raced {
				// The reference comes back (a restore) between the check and the claim.
				rdb := e.srv.Client(t)
				e.rdb.SRem(ctx, "{a:old}:refs", "promo:ONCE")
				rdb.AddHook(&beforeCmd{match: func(c redis.Cmder) bool { return hasArg(c, "{p:ONCE}:by") },
					run: func() { e.rdb.SAdd(ctx, "{a:old}:refs", "promo:ONCE") }})
				st = metering.New(rdb, metering.Options{})
			}
			if _, err := st.Redeem(ctx, "old", "ONCE"); !errors.Is(err, metering.ErrPromoRedeemed) {
				t.Fatalf("Redeem by the account that has it = %v, want ErrPromoRedeemed", err)
			}
			// The reference check keeps the slot; a claim that raced it keeps
			// its slot too (never given back: see TestConcurrentRedeemsKeepTheCount).
			want := int64(0)
			if raced {
				want = 1
			}
			if got, err := e.st.PromoCode(ctx, "ONCE"); err != nil || got.Redeemed != want {
				t.Fatalf("PromoCode = %+v, %v; want %d redemptions used", got, err, want)
			}
			_, err := e.st.Redeem(ctx, "new", "ONCE")
			if raced && !errors.Is(err, metering.ErrPromoExhausted) || !raced && err != nil {
				t.Fatalf("Redeem by another account (raced %v): %v", raced, err)
			}
			if a := e.acct(t, "old"); a.Balance != 100 || a.Promoted != 100 {
				t.Fatalf("account old: %+v", a)
			}
			assertLedger(t, e.st, "old")
			assertLedger(t, e.st, "new")
		})
	}
}

func hasArg(c redis.Cmder, arg string) bool {
	for _, a := range c.Args() {
		if fmt.Sprint(a) == arg {
			return true
		}
	}
	return false
}

// Calls on promotional credits alone race their expiry, from two replicas:
// every call reserved is paid by them, the balance never goes below zero,
// and what was left unspent is what expired.
func TestPromoExpiryRacesHolds(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "rh", 0)
	other := e.replica(t, metering.Options{})
	newCode(t, e.st, metering.PromoCode{Code: "RACE", Credits: 100_000, GrantExpiresIn: time.Hour})
	if _, err := e.st.Redeem(ctx, "rh", "RACE"); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(2 * time.Hour) // the grant has expired for the sweeper
	var charged atomic.Int64
	for round := range 3 {
		// Each round: 8 calls reserve, then settle while the grant expires.
		holds := make([]string, 0, 8)
		for w := range 8 {
			id := fmt.Sprintf("r%d-w%d", round, w)
			if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "rh", HoldID: id, Fixed: 400}); errors.Is(err, metering.ErrInsufficient) {
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			holds = append(holds, id)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.st.ExpirePromos(ctx, "rh", past); err != nil {
				t.Error(err)
			}
		}()
		for w, id := range holds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := e.st
				if w%2 == 1 {
					st = other
				}
				cost := int64(100 + (w*37+round*11)%300)
				s, err := st.Settle(ctx, metering.Settlement{Account: "rh", HoldID: id, Cost: cost, Record: metering.Record{RequestID: id, Model: "m"}})
				if err != nil {
					t.Error(err)
					return
				}
				if s.BalanceAfter < 0 {
					t.Errorf("balance %d after %s", s.BalanceAfter, id)
				}
				charged.Add(cost)
			}()
		}
		wg.Wait()
	}
	if _, err := e.st.ExpirePromos(ctx, "rh", past); err != nil {
		t.Fatal(err)
	}
	a := e.acct(t, "rh")
	if a.Balance != 0 || a.Promotional != 0 || a.Consumed != charged.Load() || a.OverHold != 0 || charged.Load() == 0 {
		t.Fatalf("account %+v, charged %d", a, charged.Load())
	}
	var expired int64
	for _, en := range e.entries(t, "rh") {
		if en.Type == metering.PromoExpired {
			expired -= en.Amount
		}
	}
	if expired != 100_000-charged.Load() {
		t.Fatalf("expired %d, want %d", expired, 100_000-charged.Load())
	}
	assertLedger(t, e.st, "rh")
	assertReplay(t, e, "rh")
}

// TestConcurrentRedeemsKeepTheCount: an account redeeming a one-use code
// many times at once is granted once, and the code stays used up: no claim
// is given back, so no other account can redeem it too.
func TestConcurrentRedeemsKeepTheCount(t *testing.T) {
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "twice", 0)
	e.account(t, "other", 0)
	newCode(t, e.st, metering.PromoCode{Code: "SOLO", Credits: 100, MaxRedemptions: 1})
	var wg sync.WaitGroup
	var granted atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.st.Redeem(ctx, "twice", "SOLO")
			switch {
			case err == nil:
				granted.Add(1)
			case !errors.Is(err, metering.ErrPromoRedeemed):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := granted.Load(); n != 1 {
		t.Fatalf("%d grants, want 1", n)
	}
	if got, err := e.st.PromoCode(ctx, "SOLO"); err != nil || got.Redeemed != 1 {
		t.Fatalf("PromoCode = %+v, %v; want 1 redemption", got, err)
	}
	if _, err := e.st.Redeem(ctx, "other", "SOLO"); !errors.Is(err, metering.ErrPromoExhausted) {
		t.Fatalf("another account after the code was used up: %v, want ErrPromoExhausted", err)
	}
	assertLedger(t, e.st, "twice")
}

// TestPromoExpiryDropsDeadHolds: a hold whose proxy died (past its expiry,
// never settled) does not keep an expired grant alive: the expiry drops it
// first and takes back all that is left.
func TestPromoExpiryDropsDeadHolds(t *testing.T) {
	e := newEnv(t, metering.Options{HoldTTL: 50 * time.Millisecond})
	ctx := context.Background()
	e.account(t, "dead", 0)
	newCode(t, e.st, metering.PromoCode{Code: "DEAD", Credits: 1000, GrantExpiresIn: time.Hour})
	if _, err := e.st.Redeem(ctx, "dead", "DEAD"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "dead", HoldID: "orphan", Fixed: 600_000 / 1000}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the hold's expiry passes; no one settles it
	if _, err := e.st.ExpirePromos(ctx, "dead", time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if a := e.acct(t, "dead"); a.Balance != 0 || a.Promotional != 0 || a.Reserved != 0 {
		t.Fatalf("after the expiry: %+v; want the whole grant expired and the dead hold dropped", a)
	}
	assertLedger(t, e.st, "dead")
}
