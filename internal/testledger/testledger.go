// Package testledger gives tests a throwaway redis-server with a
// metering.Store over it, accounts funded in one line (a paid checkout), and
// the ledger invariant check (docs/architecture.md §8, invariant 1) that every money test
// ends with.
package testledger

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// Env is one throwaway redis-server and a Store over it.
type Env struct {
	Srv *testredis.Server
	RDB *redis.Client
	St  *metering.Store
}

// New starts a redis-server for the test and a Store over it.
func New(t testing.TB, opts metering.Options) *Env {
	t.Helper()
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	return &Env{Srv: srv, RDB: rdb, St: metering.New(rdb, opts)}
}

// Replica is another Store (another proxy process) over the same Redis.
func (e *Env) Replica(t testing.TB, opts metering.Options) *metering.Store {
	t.Helper()
	return metering.New(e.Srv.Client(t), opts)
}

// Account creates id and, when fund is not zero, sells it fund mc once (a
// paid checkout, session "fund-<id>").
func (e *Env) Account(t testing.TB, id string, fund int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.St.CreateAccount(ctx, id); err != nil {
		t.Fatalf("CreateAccount(%q): %v", id, err)
	}
	if fund != 0 {
		e.Sell(t, id, "fund-"+id, fund)
	}
}

// Sell records a checkout of mc for 100 cents and fulfils it, as a paid
// checkout.session.completed would.
func (e *Env) Sell(t testing.TB, account, session string, mc int64) metering.Fulfilled {
	t.Helper()
	ctx := context.Background()
	if err := e.St.SaveCheckout(ctx, metering.Checkout{SessionID: session, Account: account, Pack: "test",
		Credits: mc, PriceMinor: 100, Currency: "usd"}); err != nil {
		t.Fatalf("selling %d mc to %q: %v", mc, account, err)
	}
	f, err := e.St.FulfilCheckout(ctx, metering.Fulfilment{Account: account, SessionID: session, PaymentID: "pi_" + session,
		AmountMinor: 100, Currency: "usd"})
	if err != nil || !f.Applied || f.Credits != mc {
		t.Fatalf("fulfilling %q for %q: %+v, %v", session, account, f, err)
	}
	return f
}

// Acct reads an account.
func (e *Env) Acct(t testing.TB, id string) metering.Account {
	t.Helper()
	a, err := e.St.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	return a
}

// Entries reads an account's whole ledger.
func (e *Env) Entries(t testing.TB, id string) []metering.Entry {
	t.Helper()
	all, err := e.St.AllEntries(context.Background(), id)
	if err != nil {
		t.Fatalf("AllEntries(%q): %v", id, err)
	}
	return all
}

// Assert checks docs/architecture.md §8 invariant 1 for account: the ledger's
// amounts sum to the balance (and each entry's balance_after is the running
// sum), purchased + granted + adjusted − consumed = balance, each total is the
// sum of its kinds of entries (doc.go, Books), and the billing history sums to
// purchased.
func Assert(t testing.TB, st *metering.Store, account string) {
	t.Helper()
	ctx := context.Background()
	a, err := st.Account(ctx, account)
	if err != nil {
		t.Fatalf("ledger: Account(%q): %v", account, err)
	}
	entries, err := st.AllEntries(ctx, account)
	if err != nil {
		t.Fatalf("ledger: AllEntries(%q): %v", account, err)
	}
	var sum, promoTaken int64
	total := map[string]int64{} // purchased, granted, adjusted, consumed, promoted from the entries
	for i, e := range entries {
		sum += e.Amount
		if e.BalanceAfter != sum {
			t.Errorf("ledger %s: entry %d (%s %s %d) balance_after %d, running sum %d",
				account, i, e.ID, e.Type, e.Amount, e.BalanceAfter, sum)
		}
		if v, ok := e.Fields["promo"]; ok {
			// What promotional credits paid of a debit: never more than it.
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || n <= 0 || e.Amount >= 0 || n > -e.Amount {
				t.Errorf("ledger %s: entry %s (%s %d) promo %q", account, e.ID, e.Type, e.Amount, v)
			}
			promoTaken += n
		}
		if v, ok := e.Fields["promo_back"]; ok {
			// What a won dispute gave back to the grants: never more than it gave.
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || n <= 0 || n > e.Amount {
				t.Errorf("ledger %s: entry %s (%s %d) promo_back %q", account, e.ID, e.Type, e.Amount, v)
			}
			promoTaken -= n
		}
		switch e.Type {
		case metering.PromoGrant:
			if e.Amount <= 0 || e.Fields["grant"] != e.Reference {
				t.Errorf("ledger %s: promotional grant %s of %d (grant %q, ref %q)", account, e.ID, e.Amount, e.Fields["grant"], e.Reference)
			}
			total["promoted"] += e.Amount
		case metering.PromoExpired:
			if e.Amount >= 0 || e.Reference != "expired:"+e.Fields["grant"] {
				t.Errorf("ledger %s: promotional expiry %s of %d (ref %q)", account, e.ID, e.Amount, e.Reference)
			}
			total["promoted"] += e.Amount
		case "usage":
			if e.Amount > 0 {
				t.Errorf("ledger %s: usage entry %s credits %d", account, e.ID, e.Amount)
			}
			total["consumed"] -= e.Amount
		case "purchase", "auto_recharge", "refund", "dispute", "dispute_won":
			total["purchased"] += e.Amount
		case metering.Grant:
			if e.Amount < 0 {
				t.Errorf("ledger %s: grant %s of %d", account, e.ID, e.Amount)
			}
			total["granted"] += e.Amount
		case metering.Adjustment:
			total["adjusted"] += e.Amount
		default:
			t.Errorf("ledger %s: entry %s of unknown type %q", account, e.ID, e.Type)
		}
	}
	if sum != a.Balance {
		t.Errorf("ledger %s: Σ ledger = %d, balance = %d", account, sum, a.Balance)
	}
	if a.Credits()-a.Consumed != a.Balance {
		t.Errorf("ledger %s: purchased %d + granted %d + adjusted %d + promoted %d − consumed %d ≠ balance %d",
			account, a.Purchased, a.Granted, a.Adjusted, a.Promoted, a.Consumed, a.Balance)
	}
	assertPromo(t, st, a, promoTaken)
	for name, got := range map[string]int64{"purchased": a.Purchased, "granted": a.Granted, "adjusted": a.Adjusted,
		"consumed": a.Consumed, "promoted": a.Promoted} {
		if total[name] != got {
			t.Errorf("ledger %s: %s = %d, its entries sum to %d", account, name, got, total[name])
		}
	}
	history, err := st.BillingHistory(ctx, account, metering.LedgerQuery{Limit: 1000})
	if err != nil {
		t.Fatalf("ledger: BillingHistory(%q): %v", account, err)
	}
	var bought int64
	for _, h := range history {
		bought += h.Amount
	}
	if bought != a.Purchased {
		t.Errorf("ledger %s: Σ billing history = %d, purchased = %d", account, bought, a.Purchased)
	}
	if a.Reserved < 0 {
		t.Errorf("ledger %s: reserved %d < 0", account, a.Reserved)
	}
	// reserved is the sum of the live holds and leases (an auditor's read of
	// the keys metering documents in its package doc), both read in one
	// MULTI: a replica's lease may grow or shrink while the check runs.
	var reservedCmd *redis.StringCmd
	var holdsCmd *redis.MapStringStringCmd
	if _, err := st.Client().TxPipelined(ctx, func(p redis.Pipeliner) error {
		reservedCmd = p.HGet(ctx, "{a:"+account+"}:acct", "reserved")
		holdsCmd = p.HGetAll(ctx, "{a:"+account+"}:hval")
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("ledger: reading holds of %q: %v", account, err)
	}
	holds := holdsCmd.Val()
	reserved, _ := strconv.ParseInt(reservedCmd.Val(), 10, 64)
	var held int64
	for id, v := range holds {
		amt, _, ok := strings.Cut(v, ":")
		n, perr := strconv.ParseInt(amt, 10, 64)
		if !ok || perr != nil {
			t.Errorf("ledger %s: hold %s = %q", account, id, v)
		}
		held += n
	}
	if held != reserved {
		t.Errorf("ledger %s: Σ holds and leases = %d, reserved = %d (%v)", account, held, reserved, holds)
	}
}

// assertPromo checks the paid/promotional split (metering/scripts/promo.lua):
// the promotional part is what the grants left (promoted − what debits took
// from it), 0 ≤ promotional (paid = balance − promotional may be a debt),
// and it is the sum of the grants' remainders, each grant in both the expiry set and the remainders.
func assertPromo(t testing.TB, st *metering.Store, a metering.Account, taken int64) {
	t.Helper()
	ctx := context.Background()
	if a.Promotional != a.Promoted-taken {
		t.Errorf("ledger %s: promotional %d, promoted %d − taken by debits %d = %d", a.ID, a.Promotional, a.Promoted, taken, a.Promoted-taken)
	}
	if a.Promotional < 0 {
		t.Errorf("ledger %s: promotional %d < 0 (balance %d)", a.ID, a.Promotional, a.Balance)
	}
	vals, err := st.Client().HGetAll(ctx, "{a:"+a.ID+"}:promov").Result()
	if err != nil {
		t.Fatalf("ledger: reading promotional grants of %q: %v", a.ID, err)
	}
	n, err := st.Client().ZCard(ctx, "{a:"+a.ID+"}:promo").Result()
	if err != nil {
		t.Fatalf("ledger: reading promotional grants of %q: %v", a.ID, err)
	}
	var left int64
	for g, v := range vals {
		m, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || m <= 0 {
			t.Errorf("ledger %s: grant %s left %q", a.ID, g, v)
		}
		if _, zerr := st.Client().ZScore(ctx, "{a:"+a.ID+"}:promo", g).Result(); zerr != nil {
			t.Errorf("ledger %s: grant %s has no expiry: %v", a.ID, g, zerr)
		}
		left += m
	}
	if left != a.Promotional || n != int64(len(vals)) {
		t.Errorf("ledger %s: Σ grants left %d (%d grants, %d expiries), promotional %d", a.ID, left, len(vals), n, a.Promotional)
	}
}

// WantInsufficient asserts err is an *InsufficientError with these figures.
func WantInsufficient(t testing.TB, err error, needed, available int64, keyLimit bool) {
	t.Helper()
	if !errors.Is(err, metering.ErrInsufficient) {
		t.Fatalf("error = %v, want ErrInsufficient", err)
	}
	var ie *metering.InsufficientError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T is not an *InsufficientError", err)
	}
	if ie.Needed != needed || ie.Available != available || ie.KeyLimit != keyLimit {
		t.Errorf("InsufficientError = %+v, want needed %d available %d keyLimit %v", *ie, needed, available, keyLimit)
	}
	if errors.Is(err, metering.ErrUnavailable) || errors.Is(err, metering.ErrNoAccount) {
		t.Errorf("insufficient error %v also matches another sentinel", err)
	}
}
