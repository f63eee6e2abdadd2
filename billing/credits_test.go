package billing

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
)

// succeedPayments makes stripe-mock's confirmed PaymentIntents succeed, as a
// bank accepting the saved card would.
func succeedPayments(method, path string, body map[string]any) {
	if method == http.MethodPost && path == "/v1/payment_intents" {
		body["status"] = "succeeded"
		body["amount_received"] = body["amount"]
	}
}

// customerFor creates account and gives it a Stripe customer (stripe-mock
// answers any customer with a saved default card).
func (e *env) customerFor(account string) string {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.store.EnsureAccount(ctx, account); err != nil {
		e.t.Fatal(err)
	}
	c, err := e.store.RememberStripeCustomer(ctx, account, "cus_"+strings.ReplaceAll(account, "-", "_"))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func TestDirectPurchaseCreditsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	e.stripe.onResponse(succeedPayments)
	customer := e.customerFor("buyer")
	tok := e.token("buyer", nil)

	r := e.do("POST", "/api/billing/credits/purchase", tok, map[string]any{"packId": "growth"})
	e.expect(r, http.StatusOK, "")
	if r.num("purchased") != "2374050.000" || r.num("balance") != "2374050.000" || r.str("transactionId") == "" {
		t.Fatalf("purchase: %s", r.raw)
	}
	pis := e.stripe.requests("/v1/payment_intents")
	if len(pis) != 1 {
		t.Fatalf("%d PaymentIntents", len(pis))
	}
	f := pis[0].form
	purchase := f.Get("metadata[purchase_id]")
	if f.Get("off_session") != "true" || f.Get("confirm") != "true" || f.Get("amount") != "2499" || f.Get("currency") != "usd" ||
		f.Get("customer") != customer || !strings.HasPrefix(f.Get("payment_method"), "pm_") || f.Get("metadata[kind]") != "purchase" ||
		f.Get("metadata[account]") != "buyer" || !strings.HasPrefix(purchase, "pur_") || pis[0].idempotencyKey != "purchase-"+purchase {
		t.Fatalf("PaymentIntent params: %v (key %q)", f, pis[0].idempotencyKey)
	}
	hist, err := e.store.BillingHistory(context.Background(), "buyer", metering.LedgerQuery{})
	if err != nil || len(hist) != 1 {
		t.Fatalf("history %+v %v", hist, err)
	}
	pi := hist[0].Fields["stripe_payment_id"]

	// Stripe's payment_intent.succeeded, delivered twice: nothing more.
	event := paymentIntentEvent("evt_pi_1", "payment_intent.succeeded", pi, 2499, "usd",
		map[string]string{"account": "buyer", "pack": "growth", "purchase_id": purchase, "kind": "purchase"})
	e.deliverOK(event)
	e.deliverOK(event)
	// A Checkout session's PaymentIntent (no purchase id) is the checkout
	// events' to credit, never this one's.
	body := e.deliverOK(paymentIntentEvent("evt_pi_2", "payment_intent.succeeded", "pi_checkout", 2499, "usd",
		map[string]string{"account": "buyer", "pack": "growth"}))
	if !strings.Contains(body, `"ignored":true`) {
		t.Fatalf("a checkout's PaymentIntent: %s", body)
	}
	if a := e.account("buyer"); a.Balance != growthCreditsMC || a.Purchased != growthCreditsMC {
		t.Fatalf("after the webhook: %+v", a)
	}

	c := e.do("GET", "/api/billing/credits", tok, nil)
	e.expect(c, http.StatusOK, "")
	txs, _ := c.get("transactions").([]any)
	if c.num("balance") != "2374050.000" || len(txs) != 1 || c.str("transactions.0.type") != "purchase" ||
		c.str("transactions.0.id") != r.str("transactionId") || c.num("transactions.0.price.amount") != "2499" ||
		c.str("transactions.0.price.currency") != "usd" || c.num("transactions.0.amount") != "2374050.000" {
		t.Fatalf("credits: %s", c.raw)
	}

	// The same Idempotency-Key twice is one purchase.
	first := e.doHeaders("POST", "/api/billing/credits/purchase", tok, map[string]any{"packId": "starter"}, "Idempotency-Key", "order-42")
	second := e.doHeaders("POST", "/api/billing/credits/purchase", tok, map[string]any{"packId": "starter"}, "Idempotency-Key", "order-42")
	e.expect(first, http.StatusOK, "")
	e.expect(second, http.StatusOK, "")
	if first.str("transactionId") == "" || second.str("transactionId") != first.str("transactionId") ||
		second.num("balance") != first.num("balance") {
		t.Fatalf("idempotent purchases: %s / %s", first.raw, second.raw)
	}
	if n := e.ledgerCount("buyer", "purchase"); n != 2 {
		t.Fatalf("%d purchases credited, want 2 (growth, and starter once)", n)
	}
	e.invariant("buyer")
}

func TestDirectPurchaseWithoutAChargeableCard(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, code string
		payments   *fakePayments
	}{
		{"authentication required", "authentication_required", newFakePayments("pm_3ds", func(int) PaymentStatus { return PaymentNeedsAction })},
		{"declined", "card_declined", newFakePayments("pm_declined", func(int) PaymentStatus { return PaymentDeclined })},
		{"no saved card", "no_saved_card", newFakePayments("", func(int) PaymentStatus { return PaymentSucceeded })},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{stripe: true, payments: c.payments})
			e.customerFor("card")
			r := e.do("POST", "/api/billing/credits/purchase", e.token("card", nil), map[string]any{"packId": "growth"})
			e.expect(r, http.StatusPaymentRequired, c.code)
			if !strings.HasPrefix(r.str("url"), "https://checkout.stripe.com/") || !strings.Contains(r.str("error.message"), "No credits were added") {
				t.Fatalf("402 body: %s", r.raw)
			}
			if a := e.account("card"); a.Balance != 0 || a.Purchased != 0 {
				t.Fatalf("credits were added: %+v", a)
			}
			if n := len(e.ledgerEntries("card")); n != 0 {
				t.Fatalf("%d ledger entries", n)
			}
			sess := e.stripe.requests("/v1/checkout/sessions")
			if len(sess) != 1 || sess[0].form.Get("mode") != "payment" || sess[0].form.Get("line_items[0][price_data][unit_amount]") != "2499" ||
				sess[0].form.Get("payment_intent_data[setup_future_usage]") != "off_session" {
				t.Fatalf("the Checkout to finish the purchase: %+v", sess)
			}
		})
	}
	t.Run("no customer yet", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{stripe: true})
		r := e.do("POST", "/api/billing/credits/purchase", e.token("newbie", nil), map[string]any{"packId": "starter"})
		e.expect(r, http.StatusPaymentRequired, "no_saved_card")
		if r.str("url") == "" || len(e.stripe.requests("/v1/payment_intents")) != 0 {
			t.Fatalf("402: %s", r.raw)
		}
	})
}

func (e *env) ledgerEntries(account string) []metering.Entry {
	e.t.Helper()
	entries, err := e.store.AllEntries(context.Background(), account)
	if err != nil {
		e.t.Fatal(err)
	}
	return entries
}

// TestStripePaymentsAgainstStripeMock runs the real Payments client against
// stripe-mock: the card lookup, and the off-session confirmation's request
// and answers.
func TestStripePaymentsAgainstStripeMock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	p := NewStripePayments(e.srv.stripe)
	ctx := context.Background()
	card, err := p.DefaultCard(ctx, "cus_mock")
	if err != nil || !strings.HasPrefix(card, "pm_") {
		t.Fatalf("DefaultCard: %q %v", card, err)
	}
	charge := OffSessionCharge{Customer: "cus_mock", PaymentMethod: card, AmountMinor: 999, Currency: "usd",
		Description: "test", IdempotencyKey: "k-1", Metadata: map[string]string{"kind": "purchase"}}
	// stripe-mock's fixture stays requires_payment_method: a decline.
	res, err := p.ChargeOffSession(ctx, charge)
	if err != nil || res.Status != PaymentDeclined || res.ID == "" {
		t.Fatalf("unpatched: %+v %v", res, err)
	}
	e.stripe.onResponse(succeedPayments)
	charge.IdempotencyKey = "k-2"
	res, err = p.ChargeOffSession(ctx, charge)
	if err != nil || res.Status != PaymentSucceeded || res.AmountMinor != 999 || res.Currency != "usd" {
		t.Fatalf("succeeded: %+v %v", res, err)
	}
	e.stripe.onResponse(func(method, path string, body map[string]any) {
		if path == "/v1/payment_intents" {
			body["status"] = "requires_action"
		}
	})
	charge.IdempotencyKey = "k-3"
	if res, err = p.ChargeOffSession(ctx, charge); err != nil || res.Status != PaymentNeedsAction {
		t.Fatalf("requires_action: %+v %v", res, err)
	}
	sent := e.stripe.requests("/v1/payment_intents")
	if len(sent) != 3 || sent[2].form.Get("off_session") != "true" || sent[2].idempotencyKey != "k-3" {
		t.Fatalf("requests: %+v", sent)
	}
}

// TestStripeFailuresAreClassified: Stripe refusing a request is final; Stripe
// failing (5xx) is worth a retry later.
func TestStripeFailuresAreClassified(t *testing.T) {
	t.Parallel()
	status := http.StatusBadRequest
	fail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","message":"nope"}}`))
	}))
	t.Cleanup(fail.Close)
	api, err := NewStripeClient(config.Stripe{SecretKey: "sk_test_x", APIBase: fail.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := NewStripePayments(api)
	charge := OffSessionCharge{Customer: "cus_x", PaymentMethod: "pm_x", AmountMinor: 100, Currency: "usd", IdempotencyKey: "k"}
	if _, err := p.ChargeOffSession(context.Background(), charge); err == nil || isTransient(err) || !errors.Is(err, errStripe) {
		t.Fatalf("400: %v (transient %v)", err, isTransient(err))
	}
	status = http.StatusServiceUnavailable
	if _, err := p.ChargeOffSession(context.Background(), charge); err == nil || !isTransient(err) || !errors.Is(err, errStripe) {
		t.Fatalf("503: %v (transient %v)", err, isTransient(err))
	}
}

func TestAutoRechargeSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	tok := e.token("s", nil)
	c := e.do("GET", "/api/billing/credits", tok, nil)
	e.expect(c, http.StatusOK, "")
	if c.get("autoRecharge.enabled") != false || c.get("autoRecharge.threshold") != nil || c.get("autoRecharge.packId") != nil ||
		c.num("autoRecharge.spendingLimit") != "5000" || c.str("autoRecharge.currency") != "usd" {
		t.Fatalf("default setting: %s", c.raw)
	}
	put := func(body any) response { return e.do("PUT", "/api/billing/credits/auto-recharge", tok, body) }
	e.expect(put(map[string]any{"threshold": 10}), http.StatusBadRequest, "missing_field")
	e.expect(put(map[string]any{"enabled": true, "threshold": 10}), http.StatusBadRequest, "missing_field")
	e.expect(put(map[string]any{"enabled": true, "packId": "gold", "threshold": 10}), http.StatusBadRequest, "unknown_pack")
	e.expect(put(map[string]any{"enabled": true, "packId": "growth"}), http.StatusBadRequest, "missing_field")
	e.expect(put(map[string]any{"enabled": true, "packId": "growth", "threshold": -1}), http.StatusBadRequest, "invalid_amount")
	e.expect(put(map[string]any{"enabled": true, "packId": "scale", "threshold": 10, "spendingLimit": 4000}),
		http.StatusBadRequest, "invalid_amount") // below the pack's 49.99
	e.expect(put(map[string]any{"enabled": true, "packId": "growth", "threshold": 10, "spendingLimit": 50.5}),
		http.StatusBadRequest, "invalid_amount")

	r := put(map[string]any{"enabled": true, "packId": "growth", "threshold": "12.5"})
	e.expect(r, http.StatusOK, "")
	if r.get("enabled") != true || r.num("threshold") != "12.500" || r.str("packId") != "growth" || r.num("spendingLimit") != "5000" {
		t.Fatalf("enabled with the default limit: %s", r.raw)
	}
	r = put(map[string]any{"enabled": true, "spendingLimit": 9999})
	if r.status != http.StatusOK || r.num("spendingLimit") != "9999" || r.str("packId") != "growth" || r.num("threshold") != "12.500" {
		t.Fatalf("a partial update: %s", r.raw)
	}
	r = put(map[string]any{"enabled": false})
	if r.status != http.StatusOK || r.get("enabled") != false || r.str("packId") != "growth" {
		t.Fatalf("disabled: %s", r.raw)
	}
	c = e.do("GET", "/api/billing/credits", tok, nil)
	if c.get("autoRecharge.enabled") != false || c.num("autoRecharge.spendingLimit") != "9999" || c.num("autoRecharge.threshold") != "12.500" {
		t.Fatalf("the credits endpoint shows the setting: %s", c.raw)
	}
}

// TestCreditsTransactions: every credit once, usage per day and model, pages.
func TestCreditsTransactions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.token("tx", nil)
	e.expect(e.do("GET", "/api/billing/credits", tok, nil), http.StatusOK, "") // the account, on first use
	e.grant("tx", 100, "g1")
	ctx := context.Background()
	calls := []struct {
		model   string
		cost    int64
		in, out int64
	}{{"gpt-4o-mini", 1500, 1000, 250}, {"claude-sonnet", 2000, 100, 50}, {"gpt-4o-mini", 500, 200, 150}}
	for i, c := range calls {
		id := "call" + string(rune('a'+i))
		if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: "tx", HoldID: id, Fixed: c.cost}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Settle(ctx, metering.Settlement{Account: "tx", HoldID: id, Cost: c.cost,
			Record: metering.Record{RequestID: id, Model: c.model, Input: c.in, Output: c.out, Status: 200}}); err != nil {
			t.Fatal(err)
		}
	}
	e.grant("tx", 5, "g2")
	e.admin("POST", "/admin/v1/accounts/tx/credits", map[string]any{"credits": -1, "reference": "adj"})

	r := e.do("GET", "/api/billing/credits", tok, nil)
	e.expect(r, http.StatusOK, "")
	txs, _ := r.get("transactions").([]any)
	want := []struct{ typ, amount string }{
		{"refund", "-1.000"}, {"grant", "5.000"}, {"usage", "-2.000"}, {"usage", "-2.000"}, {"grant", "100.000"},
	}
	if len(txs) != len(want) || r.get("hasMore") != false {
		t.Fatalf("transactions: %s", r.raw)
	}
	for i, w := range want {
		p := "transactions." + string(rune('0'+i))
		if r.str(p+".type") != w.typ || r.num(p+".amount") != w.amount {
			t.Fatalf("transaction %d = %s %s, want %s %s: %s", i, r.str(p+".type"), r.num(p+".amount"), w.typ, w.amount, r.raw)
		}
	}
	if r.str("transactions.2.description") != "gpt-4o-mini: 2 calls, 1,200 input and 400 output tokens" ||
		r.str("transactions.3.description") != "claude-sonnet: 1 call, 100 input and 50 output tokens" ||
		r.get("transactions.2.price") != nil || r.str("transactions.4.description") != "Credits granted" {
		t.Fatalf("usage per day and model: %s", r.raw)
	}
	if r.num("balance") != "100.000" {
		t.Fatalf("balance: %s", r.raw)
	}

	// Pages of two: every transaction once, in order.
	var seen []string
	cursor := ""
	for page := 0; page < 10; page++ {
		path := "/api/billing/credits?limit=2"
		if cursor != "" {
			path += "&startingAfter=" + cursor
		}
		p := e.do("GET", path, tok, nil)
		e.expect(p, http.StatusOK, "")
		list, _ := p.get("transactions").([]any)
		if len(list) > 2 {
			t.Fatalf("page of %d", len(list))
		}
		for i := range list {
			seen = append(seen, p.str("transactions."+string(rune('0'+i))+".type"))
		}
		if p.get("hasMore") != true {
			break
		}
		cursor = p.str("nextCursor")
	}
	if strings.Join(seen, ",") != "refund,grant,usage,usage,grant" {
		t.Fatalf("paged: %v", seen)
	}
	e.expect(e.do("GET", "/api/billing/credits?startingAfter=nope", tok, nil), http.StatusBadRequest, "invalid_cursor")
	e.invariant("tx")
}

// rechargeEnv is an account with auto-recharge on the mini pack (20 credits
// for 1.00 USD) and a worker.
func rechargeEnv(t *testing.T, payments Payments) (*env, *RechargeWorker) {
	t.Helper()
	e := newEnv(t, envOptions{stripe: true, catalog: miniCatalog(t), payments: payments})
	w := e.srv.RechargeWorker(WorkerOptions{Consumer: "test-worker", Backoff: time.Millisecond, ClaimIdle: time.Hour})
	if w == nil {
		t.Fatal("no worker with payments configured")
	}
	return e, w
}

func (e *env) enableAutoRecharge(account string, threshold, limitCents int64) {
	e.t.Helper()
	r := e.do("PUT", "/api/billing/credits/auto-recharge", e.token(account, nil),
		map[string]any{"enabled": true, "threshold": threshold, "packId": "mini", "spendingLimit": limitCents})
	e.expect(r, http.StatusOK, "")
}

// TestAutoRechargeEndToEnd is issue 4's second done-when: metered calls
// through a real proxy drain the balance under the threshold → exactly one
// recharge (real Stripe client against stripe-mock, the bank accepting) → a
// spending limit of two packs stops the third; every credit appears once in
// the transactions.
func TestAutoRechargeEndToEnd(t *testing.T) {
	t.Parallel()
	e, w := rechargeEnv(t, nil)
	e.stripe.onResponse(succeedPayments)
	gw := e.gateway(gatewayOptions{})
	ctx := context.Background()
	tok := e.token("auto", nil)
	e.customerFor("auto")
	key := e.apiKey("auto")
	e.grant("auto", 15, "seed")
	e.enableAutoRecharge("auto", 10, 200) // two packs per period
	const threshold = 10_000

	drain := func() {
		t.Helper()
		for i := 0; e.account("auto").Balance >= threshold; i++ {
			if i > 20 {
				t.Fatal("the balance does not fall")
			}
			// gpt-4.1 (Ultra, 16 mc per output token): about 4.85 credits a call.
			if status, _, body := gw.chat(key, "gpt-4.1", 300); status != http.StatusOK {
				t.Fatalf("call: %d %s", status, body)
			}
		}
	}
	for round := 1; round <= 2; round++ {
		drain()
		before := e.account("auto").Balance
		eventually(t, 30*time.Second, "the recharge", func() bool {
			if _, err := w.Poll(ctx, 0); err != nil {
				t.Fatal(err)
			}
			return e.account("auto").Balance == before+20_000
		})
		if n := len(e.stripe.requests("/v1/payment_intents")); n != round {
			t.Fatalf("round %d: %d PaymentIntents", round, n)
		}
	}
	// The third: the spending limit (2 × 1.00) leaves no room.
	drain()
	gw.queue.Wait()
	time.Sleep(50 * time.Millisecond) // the last settle's hook runs after the answer
	gw.queue.Wait()
	for i := 0; i < 3; i++ {
		if _, err := w.Poll(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.stripe.requests("/v1/payment_intents")); n != 2 {
		t.Fatalf("%d PaymentIntents, want 2: the spending limit was passed", n)
	}
	pis := e.stripe.requests("/v1/payment_intents")
	if pis[0].idempotencyKey == pis[1].idempotencyKey || !strings.HasPrefix(pis[0].idempotencyKey, "recharge-ar_") ||
		pis[0].form.Get("metadata[kind]") != "auto_recharge" || pis[0].form.Get("amount") != "100" {
		t.Fatalf("recharge PaymentIntents: %+v", pis)
	}
	c := e.do("GET", "/api/billing/credits", tok, nil)
	e.expect(c, http.StatusOK, "")
	if c.num("autoRecharge.spent") != "200" || c.get("autoRecharge.enabled") != true || c.num("autoRecharge.spendingLimit") != "200" {
		t.Fatalf("auto-recharge after the limit: %s", c.raw)
	}
	// Every credit once: the credit transactions are exactly the ledger's credits.
	var credits []string
	txs, _ := c.get("transactions").([]any)
	for _, tx := range txs {
		m := tx.(map[string]any)
		if m["type"] != "usage" {
			credits = append(credits, m["type"].(string)+":"+m["id"].(string))
		}
	}
	var ledger []string
	entries := e.ledgerEntries("auto")
	for i := len(entries) - 1; i >= 0; i-- {
		if en := entries[i]; en.Type != "usage" {
			ledger = append(ledger, en.Type+":"+en.ID)
		}
	}
	if strings.Join(credits, ",") != strings.Join(ledger, ",") || len(credits) != 3 {
		t.Fatalf("credit transactions %v, ledger credits %v", credits, ledger)
	}
	if e.ledgerCount("auto", "auto_recharge") != 2 {
		t.Fatal("two auto-recharges expected in the ledger")
	}
	if c.str("transactions.0.type") != "usage" || c.num("transactions.0.amount") == "" {
		t.Fatalf("usage is aggregated: %s", c.raw)
	}
	e.invariant("auto")
}

// TestAutoRechargeOnceWhenManySettlesCrossTogether: 100 concurrent calls on
// two proxy replicas cross the threshold together: one recharge.
func TestAutoRechargeOnceWhenManySettlesCrossTogether(t *testing.T) {
	t.Parallel()
	e, w := rechargeEnv(t, nil)
	e.stripe.onResponse(succeedPayments)
	replicas := []*gateway{e.gateway(gatewayOptions{}), e.gateway(gatewayOptions{})}
	e.customerFor("many")
	key := e.apiKey("many")
	// Funded so that all 100 holds (~100 mc each) fit at once, whatever the
	// scheduling: the test is about the recharge, not about 402s.
	e.grant("many", 20, "seed")
	e.enableAutoRecharge("many", 18, 1000)
	done := make(chan int, 100)
	for i := 0; i < 100; i++ {
		go func() {
			status, _, _ := replicas[i%2].chat(key, "gpt-4o-mini", 16)
			done <- status
		}()
	}
	for i := 0; i < 100; i++ {
		if s := <-done; s != http.StatusOK {
			t.Fatalf("call: %d", s)
		}
	}
	a := e.account("many")
	if a.Balance >= 18_000 || a.Balance < 15_000 {
		t.Fatalf("balance after 100 calls: %d mc", a.Balance)
	}
	time.Sleep(50 * time.Millisecond)
	for _, g := range replicas {
		g.queue.Wait()
	}
	ctx := context.Background()
	eventually(t, 30*time.Second, "the recharge", func() bool {
		if _, err := w.Poll(ctx, 0); err != nil {
			t.Fatal(err)
		}
		return e.account("many").Balance == a.Balance+20_000
	})
	for i := 0; i < 3; i++ {
		_, _ = w.Poll(ctx, 0)
	}
	if n := len(e.stripe.requests("/v1/payment_intents")); n != 1 {
		t.Fatalf("%d PaymentIntents for one crossing, want 1", n)
	}
	if q := replicas[0].queue.Stats().Queued + replicas[1].queue.Stats().Queued; q != 1 {
		t.Fatalf("%d requests queued, want 1", q)
	}
	if e.ledgerCount("many", "auto_recharge") != 1 {
		t.Fatal("one auto_recharge entry expected")
	}
	e.invariant("many")
}

func TestAutoRechargeDeclinedCardTurnsItselfOff(t *testing.T) {
	t.Parallel()
	fake := newFakePayments("pm_card", func(n int) PaymentStatus {
		if n == 2 {
			return PaymentNeedsAction
		}
		return PaymentDeclined
	})
	e, w := rechargeEnv(t, fake)
	ctx := context.Background()
	tok := e.token("dec", nil)
	e.customerFor("dec")
	e.enableAutoRecharge("dec", 10, 1000)
	q := metering.NewRechargeQueue(e.store, metering.RechargeQueueOptions{CacheTTL: -1})
	for i := 1; i <= 3; i++ {
		time.Sleep(5 * time.Millisecond) // past the failure backoff
		if out, err := q.Enqueue(ctx, "dec"); err != nil || out != metering.EnqueueQueued {
			t.Fatalf("attempt %d: %v %v", i, out, err)
		}
		if n, err := w.Poll(ctx, 0); err != nil || n != 1 {
			t.Fatalf("attempt %d: processed %d, %v", i, n, err)
		}
	}
	c := e.do("GET", "/api/billing/credits", tok, nil)
	if c.get("autoRecharge.enabled") != false || !strings.Contains(c.str("autoRecharge.disabledReason"), "insufficient_funds") ||
		c.num("autoRecharge.spent") != "0" || c.num("balance") != "0.000" {
		t.Fatalf("after three failed charges: %s", c.raw)
	}
	if fake.charged() != 3 {
		t.Fatalf("%d charges", fake.charged())
	}
	if out, _ := q.Enqueue(ctx, "dec"); out != metering.EnqueueOff {
		t.Fatalf("disabled, yet %v", out)
	}
	e.enableAutoRecharge("dec", 10, 1000)
	if c = e.do("GET", "/api/billing/credits", tok, nil); c.get("autoRecharge.enabled") != true || c.get("autoRecharge.disabledReason") != nil {
		t.Fatalf("re-enabled: %s", c.raw)
	}
	if len(e.ledgerEntries("dec")) != 0 {
		t.Fatal("a failed recharge wrote to the ledger")
	}
}

// TestAutoRechargeCrashedWorkerIsTakenOver: a worker charges the card and
// dies before crediting; another takes the request over, gets the same
// PaymentIntent (same idempotency key), and credits once; the webhook adds
// nothing.
func TestAutoRechargeCrashedWorkerIsTakenOver(t *testing.T) {
	t.Parallel()
	fake := newFakePayments("pm_card", func(int) PaymentStatus { return PaymentSucceeded })
	e, _ := rechargeEnv(t, fake)
	ctx := context.Background()
	e.customerFor("crash")
	e.enableAutoRecharge("crash", 10, 1000)
	if out, err := metering.NewRechargeQueue(e.store, metering.RechargeQueueOptions{}).Enqueue(ctx, "crash"); err != nil || out != metering.EnqueueQueued {
		t.Fatalf("enqueue: %v %v", out, err)
	}
	// The first worker: reads, begins, charges — and crashes.
	if err := e.store.EnsureRechargeGroup(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	reqs, err := e.store.ReadRecharges(ctx, "billing", "crashed", 10, 0)
	if err != nil || len(reqs) != 1 {
		t.Fatalf("read: %+v %v", reqs, err)
	}
	pack, _ := e.catalog.Pack("mini")
	if b, err := e.store.BeginRecharge(ctx, "crash", reqs[0].ID, metering.RechargeSale{Pack: "mini", PriceMinor: pack.PriceMinor,
		Currency: "usd", Credits: pack.Credits}); err != nil || !b.Proceed {
		t.Fatalf("begin: %+v %v", b, err)
	}
	paid, _ := fake.ChargeOffSession(ctx, OffSessionCharge{AmountMinor: 100, Currency: "usd", IdempotencyKey: "recharge-" + reqs[0].ID})

	w := e.srv.RechargeWorker(WorkerOptions{Consumer: "successor", ClaimIdle: 10 * time.Millisecond})
	time.Sleep(20 * time.Millisecond)
	if n, err := w.Poll(ctx, 0); err != nil || n != 1 {
		t.Fatalf("take-over: %d %v", n, err)
	}
	if fake.charged() != 1 {
		t.Fatalf("the card was charged %d times", fake.charged())
	}
	if a := e.account("crash"); a.Balance != 20_000 {
		t.Fatalf("balance %d", a.Balance)
	}
	e.deliverOK(paymentIntentEvent("evt_ar", "payment_intent.succeeded", paid.ID, 100, "usd",
		map[string]string{"account": "crash", "pack": "mini", "purchase_id": reqs[0].ID, "kind": "auto_recharge"}))
	if a := e.account("crash"); a.Balance != 20_000 || e.ledgerCount("crash", "auto_recharge") != 1 {
		t.Fatalf("after the webhook: %+v", a)
	}
	if ar, _ := e.store.AutoRecharge(ctx, "crash"); ar.State != "" || ar.Spent != 100 {
		t.Fatalf("state: %+v", ar)
	}
	e.invariant("crash")
}
