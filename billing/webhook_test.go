package billing

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// buy runs a real checkout against stripe-mock and returns the session id.
func (e *env) buy(account, pack string) string {
	e.t.Helper()
	r := e.do("POST", "/v1/billing/checkout", e.token(account, nil), map[string]any{"pack": pack})
	e.expect(r, http.StatusOK, "")
	return r.str("id")
}

func completed(eventID, account, session, payment string, amount int64, currency string) []byte {
	return teststripe.Event(eventID, "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: session, Account: account, Pack: "growth", AmountTotal: amount, Currency: currency, PaymentIntent: payment,
	}))
}

func TestWebhookCreditsAPaidCheckoutOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	session := e.buy("acme", "growth")
	event := completed("evt_1", "acme", session, "pi_1", growthPriceMinor, "usd")

	if status, body := e.deliver(event); status != http.StatusOK || strings.Contains(body, "ignored") {
		t.Fatalf("webhook: %d %s", status, body)
	}
	r := e.do("GET", "/v1/api-credits", e.token("acme", nil), nil)
	e.expect(r, http.StatusOK, "")
	if r.num("balance") != "2374050.000" || r.num("total_purchased") != "2374050.000" || r.num("total_consumed") != "0.000" {
		t.Fatalf("after the purchase: %s", r.raw)
	}
	e.invariant("acme")

	// The same event, 50 times at once: still once.
	var wg sync.WaitGroup
	statuses := make([]int, 50)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _, _ = teststripe.Deliver(e.webhookURL(), testWebhookSecret, event)
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("delivery %d answered %d", i, s)
		}
	}
	// A different event for the same session (async success, a new event id): nothing.
	async := teststripe.Event("evt_2", "checkout.session.async_payment_succeeded", teststripe.CheckoutSession(teststripe.Session{
		ID: session, Account: "acme", Pack: "growth", AmountTotal: growthPriceMinor, PaymentIntent: "pi_1",
	}))
	if status, _ := e.deliver(async); status != http.StatusOK {
		t.Fatalf("second event: %d", status)
	}
	if status, _ := e.deliver(completed("evt_3", "acme", session, "pi_1", growthPriceMinor, "usd")); status != http.StatusOK {
		t.Fatalf("third event: %d", status)
	}
	a := e.account("acme")
	if a.Balance != growthCreditsMC {
		t.Fatalf("balance %d mc after repeated events, want %d", a.Balance, growthCreditsMC)
	}
	e.invariant("acme")
	entries, _ := e.store.AllEntries(context.Background(), "acme")
	if len(entries) != 1 || entries[0].Type != "purchase" || entries[0].Fields["stripe_payment_id"] != "pi_1" ||
		entries[0].Fields["session_id"] != session || entries[0].Fields["pack"] != "growth" ||
		entries[0].Fields["price_minor"] != "2499" || entries[0].Fields["currency"] != "usd" {
		t.Fatalf("ledger %+v", entries)
	}
}

func TestWebhookConcurrentFirstDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_race", "growth")
	event := completed("evt_race", "acme", "cs_race", "pi_race", p.PriceMinor, "usd")
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, body, err := teststripe.Deliver(e.webhookURL(), testWebhookSecret, event); err != nil || s != http.StatusOK {
				t.Errorf("delivery: %d %s %v", s, body, err)
			}
		}()
	}
	wg.Wait()
	if b := e.account("acme").Balance; b != growthCreditsMC {
		t.Fatalf("50 concurrent first deliveries: balance %d mc, want %d", b, growthCreditsMC)
	}
	e.invariant("acme")
}

func TestWebhookSignatures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_sig", "growth")
	event := completed("evt_sig", "acme", "cs_sig", "pi_sig", p.PriceMinor, "usd")
	now := time.Now()
	tampered := bytes.Replace(event, []byte(`"amount_total":2499`), []byte(`"amount_total":2500`), 1)
	if bytes.Equal(tampered, event) {
		t.Fatal("tampering did not change the payload")
	}
	cases := map[string]struct {
		payload []byte
		sig     string
	}{
		"forged (another secret)":      {event, teststripe.Sign(event, "whsec_attacker", now)},
		"stale (6 minutes old)":        {event, teststripe.Sign(event, testWebhookSecret, now.Add(-6*time.Minute))},
		"tampered after signing":       {tampered, teststripe.Sign(event, testWebhookSecret, now)},
		"missing signature":            {event, ""},
		"garbage signature header":     {event, "t=abc,v1=zz"},
		"signature of another payload": {event, teststripe.Sign([]byte(`{}`), testWebhookSecret, now)},
	}
	for name, c := range cases {
		status, body, err := teststripe.DeliverSigned(e.webhookURL(), c.sig, c.payload)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusBadRequest || !strings.Contains(body, "invalid_signature") {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	a := e.account("acme")
	if a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("refused deliveries changed the account: %+v", a)
	}
	if entries, _ := e.store.AllEntries(context.Background(), "acme"); len(entries) != 0 {
		t.Fatalf("refused deliveries wrote the ledger: %+v", entries)
	}
	// The genuine one still works afterwards (nothing was consumed by the forgeries).
	e.paid("evt_sig", "acme", "cs_sig", "pi_sig", p)
	if b := e.account("acme").Balance; b != growthCreditsMC {
		t.Fatalf("genuine delivery: balance %d", b)
	}
	e.invariant("acme")
}

// A payment that does not match the pack sold is refused and logged as an
// error, and answered 200: the session will never change, so Stripe's
// retries could not fix it (they would only hide it in a retry queue); the
// error log is what a person must act on.
func TestWebhookAmountOrCurrencyMismatchIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_mm", "growth")
	for i, c := range []struct {
		amount   int64
		currency string
	}{{999, "usd"}, {p.PriceMinor, "eur"}, {p.PriceMinor + 1, "usd"}} {
		status, body := e.deliver(completed("evt_mm"+string(rune('a'+i)), "acme", "cs_mm", "pi_mm", c.amount, c.currency))
		if status != http.StatusOK || !strings.Contains(body, `"ignored":true`) {
			t.Fatalf("mismatch %d %s: %d %s", c.amount, c.currency, status, body)
		}
	}
	if a := e.account("acme"); a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("a mismatched payment was credited: %+v", a)
	}
	if n := e.logs.FilterMessageSnippet("NOT credited").Len(); n != 3 {
		t.Fatalf("%d mismatch errors logged, want 3", n)
	}
	// The right amount is still credited afterwards.
	e.paid("evt_ok", "acme", "cs_mm", "pi_mm", p)
	if b := e.account("acme").Balance; b != growthCreditsMC {
		t.Fatalf("balance %d", b)
	}
	e.invariant("acme")
}

func TestWebhookUnpaidThenAsyncSuccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_async", "growth")
	unpaid := teststripe.Event("evt_u", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: "cs_async", Account: "acme", AmountTotal: p.PriceMinor, PaymentIntent: "pi_async", PaymentStatus: "unpaid",
	}))
	if status, _ := e.deliver(unpaid); status != http.StatusOK {
		t.Fatal(status)
	}
	if b := e.account("acme").Balance; b != 0 {
		t.Fatalf("an unpaid session was credited: %d", b)
	}
	succeeded := teststripe.Event("evt_s", "checkout.session.async_payment_succeeded", teststripe.CheckoutSession(teststripe.Session{
		ID: "cs_async", Account: "acme", AmountTotal: p.PriceMinor, PaymentIntent: "pi_async",
	}))
	if status, _ := e.deliver(succeeded); status != http.StatusOK {
		t.Fatal(status)
	}
	if b := e.account("acme").Balance; b != growthCreditsMC {
		t.Fatalf("async success: balance %d", b)
	}
	e.invariant("acme")
}

func TestWebhookIgnoresWhatIsNotOurs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	if _, err := e.store.EnsureAccount(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	for name, payload := range map[string][]byte{
		"unknown type":      teststripe.Event("evt_x", "customer.created", map[string]any{"id": "cus_1", "object": "customer"}),
		"session not sold":  completed("evt_y", "acme", "cs_unknown", "pi_y", 2499, "usd"),
		"no account":        completed("evt_z", "", "cs_unknown", "pi_z", 2499, "usd"),
		"refund not ours":   teststripe.Event("evt_r", "charge.refunded", teststripe.Charge("ch_x", "pi_x", 2499, 2499, "usd", nil)),
		"dispute not ours":  teststripe.Event("evt_d", "charge.dispute.created", teststripe.Dispute("dp_x", "ch_x", "pi_x", 2499, "usd")),
		"subscription mode": teststripe.Event("evt_s", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{ID: "cs_sub", Account: "acme", Mode: "subscription", AmountTotal: 2499})),
	} {
		status, body := e.deliver(payload)
		if status != http.StatusOK || !strings.Contains(body, `"ignored":true`) {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	if b := e.account("acme").Balance; b != 0 {
		t.Fatalf("balance %d", b)
	}
}

func TestRefundTakesTheCreditsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_r", "growth")
	e.paid("evt_p", "acme", "cs_r", "pi_r", p)
	// Spend 1,000,000 credits, then the whole purchase is refunded: the
	// balance goes negative and new calls are refused.
	e.spend("acme", "hold_1", 1_000_000_000)
	refund := teststripe.Event("evt_rf", "charge.refunded", teststripe.Charge("ch_r", "pi_r", p.PriceMinor, p.PriceMinor, "usd", nil))
	for range 3 { // retried: once
		if status, body := e.deliver(refund); status != http.StatusOK {
			t.Fatalf("refund: %d %s", status, body)
		}
	}
	a := e.account("acme")
	if a.Balance != -1_000_000_000 || a.Purchased != 0 || a.Consumed != 1_000_000_000 {
		t.Fatalf("after a full refund: %+v", a)
	}
	e.invariant("acme")
	_, err := e.store.Reserve(context.Background(), metering.HoldRequest{Account: "acme", HoldID: "h2", Fixed: 1})
	if !errors.Is(err, metering.ErrInsufficient) {
		t.Fatalf("a negative balance still reserves: %v", err)
	}
	// The history shows it.
	r := e.do("GET", "/v1/billing/history", e.token("acme", nil), nil)
	if len(r.list()) != 2 || r.str("data.0.type") != "refund" || r.num("data.0.amount") != "-2374050.000" ||
		r.num("data.0.balance_after") != "-1000000.000" || r.str("data.0.stripe_payment_id") != "pi_r" {
		t.Fatalf("history after refund: %s", r.raw)
	}
}

func TestPartialRefundsNeverTakeMoreThanBought(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_pr", "growth")
	e.paid("evt_p", "acme", "cs_pr", "pi_pr", p)
	refund := func(id string, refunded int64) {
		t.Helper()
		ev := teststripe.Event(id, "charge.refunded", teststripe.Charge("ch_pr", "pi_pr", p.PriceMinor, refunded, "usd", nil))
		if status, body := e.deliver(ev); status != http.StatusOK {
			t.Fatalf("refund %d: %d %s", refunded, status, body)
		}
	}
	refund("evt_1", 1000) // $10.00 of $24.99: ceil(2374050000 × 1000 / 2499) mc
	first := int64((growthCreditsMC*1000 + p.PriceMinor - 1) / p.PriceMinor)
	if b := e.account("acme").Balance; b != growthCreditsMC-first {
		t.Fatalf("after a $10 refund: balance %d, want %d", b, growthCreditsMC-first)
	}
	refund("evt_2", 2499) // the rest: cumulative amount_refunded
	refund("evt_1", 1000) // the old event again, late: nothing
	refund("evt_3", 2499) // a duplicate with a new id: nothing
	a := e.account("acme")
	if a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("after refunding everything in two parts: %+v", a)
	}
	// A dispute after a full refund takes nothing more.
	if status, _ := e.deliver(teststripe.Event("evt_d", "charge.dispute.created", teststripe.Dispute("dp_1", "ch_pr", "pi_pr", p.PriceMinor, "usd"))); status != http.StatusOK {
		t.Fatal(status)
	}
	if b := e.account("acme").Balance; b != 0 {
		t.Fatalf("a dispute after a full refund removed more: balance %d", b)
	}
	e.invariant("acme")
}

// Refund events overtaking each other: the refunded share only grows, so a
// late, smaller cumulative refund neither gives credits back nor hides what
// a later dispute must take.
func TestReorderedRefundsThenDispute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_ro", "growth")
	e.paid("evt_p", "acme", "cs_ro", "pi_ro", p)
	e.refund("evt_2", "ch_ro", "pi_ro", p.PriceMinor, 2000) // cumulative $20.00 first
	afterBig := e.account("acme").Balance
	e.refund("evt_1", "ch_ro", "pi_ro", p.PriceMinor, 1000) // the earlier $10.00 event, late
	if b := e.account("acme").Balance; b != afterBig {
		t.Fatalf("a late, smaller refund changed the balance: %d → %d", afterBig, b)
	}
	// The remaining $4.99 disputed: everything bought is now taken back, exactly.
	ev := teststripe.Event("evt_d", "charge.dispute.created", teststripe.Dispute("dp_ro", "ch_ro", "pi_ro", p.PriceMinor-2000, "usd"))
	if status, body := e.deliver(ev); status != http.StatusOK {
		t.Fatalf("dispute: %d %s", status, body)
	}
	if a := e.account("acme"); a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("after refunds and a dispute of everything: %+v", a)
	}
	e.invariant("acme")
}

func TestDisputeTakesTheCreditsBackOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_d", "growth")
	e.paid("evt_p", "acme", "cs_d", "pi_d", p)
	dispute := teststripe.Event("evt_d", "charge.dispute.created", teststripe.Dispute("dp_d", "ch_d", "pi_d", p.PriceMinor, "usd"))
	for range 3 {
		if status, body := e.deliver(dispute); status != http.StatusOK {
			t.Fatalf("dispute: %d %s", status, body)
		}
	}
	// The same dispute under another event id: still once.
	again := teststripe.Event("evt_d2", "charge.dispute.created", teststripe.Dispute("dp_d", "ch_d", "pi_d", p.PriceMinor, "usd"))
	if status, _ := e.deliver(again); status != http.StatusOK {
		t.Fatal(status)
	}
	a := e.account("acme")
	if a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("after a dispute: %+v", a)
	}
	entries, _ := e.store.AllEntries(context.Background(), "acme")
	if len(entries) != 2 || entries[1].Type != "dispute" || entries[1].Amount != -growthCreditsMC || entries[1].Reference != "dispute:dp_d" {
		t.Fatalf("ledger %+v", entries)
	}
	e.invariant("acme")
}

// A refund that overtakes its purchase (its checkout event failed and is
// still being retried) is answered non-2xx so that Stripe retries it, and
// applies once the purchase is credited.
func TestRefundBeforeItsPurchaseIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_o", "growth")
	refund := teststripe.Event("evt_rf", "charge.refunded",
		teststripe.Charge("ch_o", "pi_o", p.PriceMinor, p.PriceMinor, "usd", map[string]string{"account": "acme"}))
	status, body := e.deliver(refund)
	if status < 500 || !strings.Contains(body, "retry_later") {
		t.Fatalf("an early refund: %d %s", status, body)
	}
	if b := e.account("acme").Balance; b != 0 {
		t.Fatalf("balance %d", b)
	}
	e.paid("evt_p", "acme", "cs_o", "pi_o", p)
	if status, body := e.deliver(refund); status != http.StatusOK {
		t.Fatalf("the retried refund: %d %s", status, body)
	}
	if a := e.account("acme"); a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("after purchase and refund: %+v", a)
	}
	e.invariant("acme")
}

// Redis down: the webhook answers non-2xx, so Stripe retries later, and
// the credit lands once Redis is back.
func TestWebhookStoreDownIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.sell("acme", "cs_down", "growth")
	event := completed("evt_down", "acme", "cs_down", "pi_down", p.PriceMinor, "usd")
	// The throwaway Redis persists nothing: save the checkout record, stop
	// it, and restore the record after the restart.
	ctx := context.Background()
	dump, err := e.redis.Client(e.t).Dump(ctx, "{a:acme}:co:cs_down").Result()
	if err != nil {
		t.Fatal(err)
	}
	e.redis.Stop()
	status, body := e.deliver(event)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "store_unavailable") || strings.Contains(body, "dial") {
		t.Fatalf("with Redis down: %d %s", status, body)
	}
	e.redis.Restart(t)
	c := e.redis.Client(t)
	if _, err := e.store.EnsureAccount(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(ctx, "{a:acme}:co:cs_down", 0, dump).Err(); err != nil {
		t.Fatal(err)
	}
	if status, body := e.deliver(event); status != http.StatusOK {
		t.Fatalf("Stripe's retry: %d %s", status, body)
	}
	if b := e.account("acme").Balance; b != growthCreditsMC {
		t.Fatalf("balance %d", b)
	}
	e.invariant("acme")
}

// Amounts past 10^14 mc must stay exact through the scripts (Lua numbers are
// doubles, and tostring keeps only 14 significant digits).
func TestLargePurchaseIsExact(t *testing.T) {
	t.Parallel()
	huge := int64(987_654_321_123) // credits, stated outright: 987,654,321,123,000 mc
	cat, err := pricing.New(pricing.Spec{
		CreditsPerUSD: 100000, FeeBps: 500,
		Tiers:  map[string]pricing.TierSpec{"core": {Input: pricing.Per1K(1), Output: pricing.Per1K(2)}},
		Models: []pricing.ModelSpec{{ID: "m", Tier: "core", ContextWindow: 1000, MaxOutputTokens: 100, Deployments: []pricing.DeploymentSpec{{Provider: "p", Model: "m"}}}},
		Packs:  []pricing.PackSpec{{Key: "whale", Price: "9999.99", Currency: "eur", Credits: &huge}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{catalog: cat})
	p := e.sell("acme", "cs_whale", "whale")
	payload := teststripe.Event("evt_w", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: "cs_whale", Account: "acme", Pack: "whale", AmountTotal: p.PriceMinor, Currency: "eur", PaymentIntent: "pi_whale",
	}))
	if status, body := e.deliver(payload); status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	if b := e.account("acme").Balance; b != huge*1000 {
		t.Fatalf("balance %d mc, want %d", b, huge*1000)
	}
	e.refund("evt_r1", "ch_w", "pi_whale", p.PriceMinor, 333_333) // a third, rounded up
	// ceil(bought × 333,333 / 999,999), in 128 bits.
	q, r := new(big.Int).QuoRem(new(big.Int).Mul(big.NewInt(huge*1000), big.NewInt(333_333)), big.NewInt(p.PriceMinor), new(big.Int))
	if r.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	third := q.Int64()
	if b := e.account("acme").Balance; b != huge*1000-third {
		t.Fatalf("after refunding a third: %d mc, want %d", b, huge*1000-third)
	}
	e.refund("evt_r2", "ch_w", "pi_whale", p.PriceMinor, p.PriceMinor)
	if a := e.account("acme"); a.Balance != 0 || a.Purchased != 0 {
		t.Fatalf("after refunding all: %+v", a)
	}
	e.invariant("acme")
}

// A dispute that closes won — or an inquiry that closes without becoming a
// chargeback — gives back exactly what its opening took, once, whatever order
// and how often the two events arrive; a lost dispute keeps it taken.
func TestDisputeClosedGivesBackWhenWon(t *testing.T) {
	t.Parallel()
	type step struct {
		event, typ, status string
		amount             int64 // minor units disputed; 0: the whole price
	}
	const spent = 1_000_000
	for _, tc := range []struct {
		name     string
		refunded int64 // minor units refunded before the dispute
		steps    []step
		want     func(credits, refundMC int64) int64 // balance after
		types    []string                            // ledger entry types after the purchase and spend
	}{
		{"won", 0,
			[]step{{"e1", "charge.dispute.created", "needs_response", 0}, {"e2", "charge.dispute.closed", "won", 0}},
			func(c, _ int64) int64 { return c - spent }, []string{"dispute", "dispute_won"}},
		{"won, every event twice and under new ids", 0,
			[]step{{"e1", "charge.dispute.created", "needs_response", 0}, {"e2", "charge.dispute.closed", "won", 0},
				{"e1", "charge.dispute.created", "needs_response", 0}, {"e2", "charge.dispute.closed", "won", 0},
				{"e3", "charge.dispute.created", "under_review", 0}, {"e4", "charge.dispute.closed", "won", 0}},
			func(c, _ int64) int64 { return c - spent }, []string{"dispute", "dispute_won"}},
		{"won before the opening arrives", 0,
			[]step{{"e2", "charge.dispute.closed", "won", 0}, {"e1", "charge.dispute.created", "needs_response", 0}},
			func(c, _ int64) int64 { return c - spent }, nil},
		{"lost", 0,
			[]step{{"e1", "charge.dispute.created", "needs_response", 0}, {"e2", "charge.dispute.closed", "lost", 0}},
			func(c, _ int64) int64 { return -spent }, []string{"dispute"}},
		{"inquiry closed without a chargeback", 0,
			[]step{{"e1", "charge.dispute.created", "warning_needs_response", 0}, {"e2", "charge.dispute.closed", "warning_closed", 0}},
			func(c, _ int64) int64 { return c - spent }, []string{"dispute", "dispute_won"}},
		{"partly refunded, the rest disputed and won: the refund stays", 1000,
			[]step{{"e1", "charge.dispute.created", "needs_response", -1000}, {"e2", "charge.dispute.closed", "won", -1000}},
			func(c, r int64) int64 { return c - r - spent }, []string{"refund", "dispute", "dispute_won"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			p := e.sell("acme", "cs_w", "growth")
			e.paid("evt_p", "acme", "cs_w", "pi_w", p)
			e.spend("acme", "h1", spent)
			var refundMC int64
			if tc.refunded > 0 {
				before := e.account("acme").Balance
				e.refund("evt_r", "ch_w", "pi_w", p.PriceMinor, tc.refunded)
				refundMC = before - e.account("acme").Balance
			}
			for _, s := range tc.steps {
				amount := s.amount
				if amount <= 0 {
					amount += p.PriceMinor
				}
				d := teststripe.Dispute("dp_w", "ch_w", "pi_w", amount, "usd")
				d["status"] = s.status
				if status, body := e.deliver(teststripe.Event(s.event, s.typ, d)); status != http.StatusOK {
					t.Fatalf("%s %s: %d %s", s.typ, s.status, status, body)
				}
			}
			if b, want := e.account("acme").Balance, tc.want(growthCreditsMC, refundMC); b != want {
				t.Fatalf("balance %d, want %d", b, want)
			}
			entries, err := e.store.AllEntries(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, en := range entries[2:] { // after the purchase and the spend
				types = append(types, en.Type)
			}
			if strings.Join(types, ",") != strings.Join(tc.types, ",") {
				t.Fatalf("ledger entries %v, want %v", types, tc.types)
			}
			e.invariant("acme")
		})
	}
}
