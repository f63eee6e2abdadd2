package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Purchase metadata on PaymentIntents made here (direct purchases and
// auto-recharges): the webhook credits them through the same reference.
const (
	metaPurchase = "purchase_id"
	metaKind     = "kind"
	kindPurchase = "purchase"
	kindRecharge = "auto_recharge"
)

// autoRechargeJSON is the auto-recharge setting as the credits endpoint shows it.
type autoRechargeJSON struct {
	Enabled   bool     `json:"enabled"`
	Threshold *Credits `json:"threshold"` // null until set
	PackID    *string  `json:"packId"`    // null until set
	// SpendingLimit is per billing period, in minor units (cents) of Currency.
	SpendingLimit int64  `json:"spendingLimit"`
	Currency      string `json:"currency"`
	Spent         int64  `json:"spent"` // this billing period, minor units
	// DisabledReason says why auto-recharge turned itself off (declined cards).
	DisabledReason *string `json:"disabledReason"`
	LastError      *string `json:"lastError"`
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *Server) autoRechargeView(a metering.AutoRecharge) autoRechargeJSON {
	v := autoRechargeJSON{Enabled: a.Enabled, SpendingLimit: s.defaultSpendingLimit, Currency: s.defaultCurrency(),
		Spent: a.Spent, DisabledReason: optString(a.DisabledReason), LastError: optString(a.LastError)}
	if a.Configured {
		t := Credits(a.Threshold)
		v.Threshold, v.PackID = &t, optString(a.Pack)
		v.SpendingLimit, v.Currency = a.SpendingLimit, a.Currency
	}
	return v
}

// defaultCurrency is the first pack's currency: the one a default spending
// limit is in before any pack is chosen.
func (s *Server) defaultCurrency() string {
	if packs := s.catalog.Packs(); len(packs) > 0 {
		return packs[0].Currency
	}
	return "usd"
}

// priceJSON is money in minor units (cents).
type priceJSON struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// transactionJSON is one movement of credits. Usage is aggregated per day and model.
type transactionJSON struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"` // purchase, usage, refund, grant, auto_recharge, expiry
	Amount      Credits    `json:"amount"`
	Price       *priceJSON `json:"price"` // what was paid, for purchases and auto-recharges
	Description string     `json:"description"`
	CreatedAt   string     `json:"createdAt"`
}

const (
	maxTransactions = 200
	ledgerPage      = 500
	// maxScanned bounds the ledger entries one request reads; past it the page
	// ends early (hasMore) and the next page continues.
	maxScanned = 20_000
)

// GET /api/billing/credits?limit=&startingAfter= → the balance, the
// auto-recharge setting and the transactions, newest first (the balance
// alone for a member without permBilling). Every credit is
// its own transaction; usage is one transaction per day and model (a day
// and model may continue on the next page).
func (s *Server) credits(w http.ResponseWriter, r *http.Request, account string) error {
	ctx := r.Context()
	limit, err := pageLimit(r, 50, maxTransactions)
	if err != nil {
		return err
	}
	before := r.URL.Query().Get("startingAfter")
	if before != "" && !validCursor(before) {
		return badRequest("invalid_cursor", "startingAfter", "startingAfter must be the nextCursor of a previous page")
	}
	a, err := s.store.Account(ctx, account)
	if err != nil {
		return fmt.Errorf("reading balance: %w", err)
	}
	a, promoExp, err := s.promoSplit(ctx, a)
	if err != nil {
		return err
	}
	if c, ok := callerFrom(ctx); ok && !c.may(permBilling) {
		// Every member reads its balance here (the console shows it); the
		// purchases, their prices, the auto-recharge settings and the
		// low-balance alert are billing's.
		writeJSON(w, http.StatusOK, struct {
			Balance              Credits `json:"balance"`
			Paid                 Credits `json:"paid"`
			Promotional          Credits `json:"promotional"`
			PromotionalExpiresAt *string `json:"promotionalExpiresAt"`
			HasMore              bool    `json:"hasMore"`
			NextCursor           *string `json:"nextCursor"`
		}{Credits(a.Balance), Credits(a.Paid()), Credits(a.Promotional), promoExp, false, nil})
		return nil
	}
	ar, err := s.store.AutoRecharge(ctx, account)
	if err != nil {
		return fmt.Errorf("reading auto-recharge: %w", err)
	}
	var alerts alertsJSON
	if al, ok := s.store.(Alerts); ok {
		low, err := al.LowBalance(ctx, account)
		if err != nil {
			return fmt.Errorf("reading alerts: %w", err)
		}
		alerts = alertsView(low)
	}
	txs, next, err := s.transactions(ctx, account, before, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Balance Credits `json:"balance"`
		// balance = paid + promotional; promotional credits are spent first
		// and may expire (the earliest grant at promotionalExpiresAt).
		Paid                 Credits           `json:"paid"`
		Promotional          Credits           `json:"promotional"`
		PromotionalExpiresAt *string           `json:"promotionalExpiresAt"`
		AutoRecharge         autoRechargeJSON  `json:"autoRecharge"`
		Alerts               alertsJSON        `json:"alerts"`
		Transactions         []transactionJSON `json:"transactions"`
		HasMore              bool              `json:"hasMore"`
		NextCursor           *string           `json:"nextCursor"`
	}{Credits(a.Balance), Credits(a.Paid()), Credits(a.Promotional), promoExp, s.autoRechargeView(ar), alerts, txs, next != "", optString(next)})
	return nil
}

// usageGroup sums the usage of one day and model.
type usageGroup struct {
	tx             *transactionJSON
	model          string
	calls, in, out int64
	amount         int64
}

// transactions reads the ledger newest first from before, until limit
// transactions are made; next is the cursor of the next page ("" at the end).
func (s *Server) transactions(ctx context.Context, account, before string, limit int) ([]transactionJSON, string, error) {
	var (
		out     = make([]*transactionJSON, 0, limit)
		groups  = map[string]*usageGroup{}
		order   []*usageGroup
		last    string
		scanned int
	)
	cursor := before
	for {
		page, err := s.store.Ledger(ctx, account, metering.LedgerQuery{Limit: ledgerPage, Before: cursor})
		if errors.Is(err, metering.ErrNotFound) {
			return nil, "", badRequest("invalid_cursor", "startingAfter", "startingAfter must be the nextCursor of a previous page")
		}
		if err != nil {
			return nil, "", fmt.Errorf("reading ledger: %w", err)
		}
		for _, e := range page {
			if e.Type == "usage" {
				key := e.CreatedAt.UTC().Format("2006-01-02") + "|" + e.Fields["model"]
				g := groups[key]
				if g == nil {
					if len(out) == limit {
						return finish(out, order), last, nil
					}
					g = &usageGroup{model: e.Fields["model"], tx: &transactionJSON{ID: e.ID, Type: "usage",
						CreatedAt: timestamp(e.CreatedAt)}}
					groups[key] = g
					order = append(order, g)
					out = append(out, g.tx)
				}
				g.calls++
				g.amount += e.Amount
				g.in += atoi64(e.Fields["input_tokens"]) + atoi64(e.Fields["cached_input_tokens"]) +
					atoi64(e.Fields["cache_write_tokens"]) + atoi64(e.Fields["cache_write_1h_tokens"])
				g.out += atoi64(e.Fields["output_tokens"])
			} else {
				if len(out) == limit {
					return finish(out, order), last, nil
				}
				out = append(out, creditTransaction(e))
			}
			last = e.ID
			scanned++
		}
		if len(page) < ledgerPage {
			return finish(out, order), "", nil
		}
		if scanned >= maxScanned {
			return finish(out, order), last, nil
		}
		cursor = page[len(page)-1].ID
	}
}

func finish(txs []*transactionJSON, groups []*usageGroup) []transactionJSON {
	for _, g := range groups {
		g.tx.Amount = Credits(g.amount)
		model := g.model
		if model == "" {
			model = "usage"
		}
		calls := "calls"
		if g.calls == 1 {
			calls = "call"
		}
		g.tx.Description = fmt.Sprintf("%s: %s %s, %s input and %s output tokens", model,
			groupThousands(strconv.FormatInt(g.calls, 10)), calls,
			groupThousands(strconv.FormatInt(g.in, 10)), groupThousands(strconv.FormatInt(g.out, 10)))
	}
	out := make([]transactionJSON, len(txs))
	for i, t := range txs {
		out[i] = *t
	}
	return out
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// creditTransaction is a ledger credit (or taken-back credit) as a transaction.
func creditTransaction(e metering.Entry) *transactionJSON {
	t := &transactionJSON{ID: e.ID, Amount: Credits(e.Amount), Description: e.Fields["description"],
		CreatedAt: timestamp(e.CreatedAt)}
	switch e.Type {
	case "purchase", "auto_recharge", "refund", "grant":
		t.Type = e.Type
	case "dispute":
		t.Type = "refund"
	case "dispute_won": // what a dispute took, given back
		t.Type = "grant"
	case metering.PromoGrant:
		t.Type = "grant"
		if t.Description == "" {
			t.Description = "Promotional code " + e.Fields["code"]
		}
	case metering.PromoExpired:
		t.Type = "expiry"
		if t.Description == "" {
			t.Description = "Promotional credits expired"
		}
	default: // adjustment and anything else an operator wrote
		t.Type = "grant"
		if e.Amount < 0 {
			t.Type = "refund"
		}
	}
	if t.Description == "" {
		t.Description = map[string]string{"purchase": "Credit pack", "auto_recharge": "Auto-recharge",
			"refund": "Refund", "dispute": "Dispute", "dispute_won": "Dispute won", "grant": "Credits granted", "adjustment": "Adjustment"}[e.Type]
	}
	if e.Type == "purchase" || e.Type == "auto_recharge" {
		if p, err := strconv.ParseInt(e.Fields["price_minor"], 10, 64); err == nil {
			t.Price = &priceJSON{Amount: p, Currency: e.Fields["currency"]}
		}
	}
	return t
}

type autoRechargeRequest struct {
	Enabled       *bool        `json:"enabled"`
	Threshold     *json.Number `json:"threshold"`
	PackID        *string      `json:"packId"`
	SpendingLimit *json.Number `json:"spendingLimit"`
}

// PUT /api/billing/credits/auto-recharge {"enabled","threshold","packId","spendingLimit"}
// → the setting as GET /api/billing/credits shows it. threshold is in
// credits; spendingLimit in minor units (cents) of the pack's currency per
// billing period (default billing.auto_recharge.default_spending_limit).
// Fields left out keep their value.
func (s *Server) setAutoRecharge(w http.ResponseWriter, r *http.Request, account string) error {
	var req autoRechargeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Enabled == nil {
		return badRequest("missing_field", "enabled", "enabled is required (true or false)")
	}
	ctx := r.Context()
	cur, err := s.store.AutoRecharge(ctx, account)
	if err != nil {
		return fmt.Errorf("reading auto-recharge: %w", err)
	}
	st := cur.AutoRechargeSettings
	st.Enabled = *req.Enabled
	if !cur.Configured {
		st.SpendingLimit = -1 // the default, once the pack's currency is known
	}
	if req.PackID != nil {
		pack, err := s.catalog.Pack(*req.PackID)
		if err != nil {
			return badRequest("unknown_pack", "packId", "unknown pack %q; valid packs: %s", *req.PackID, strings.Join(s.packKeys(), ", "))
		}
		if pack.Currency != st.Currency && req.SpendingLimit == nil {
			st.SpendingLimit = -1 // a limit in another currency means nothing for this pack
		}
		st.Pack, st.PriceMinor, st.Currency = pack.Key, pack.PriceMinor, pack.Currency
	}
	if req.Threshold != nil {
		mc, err := parseCredits("threshold", *req.Threshold)
		if err != nil {
			return err
		}
		if mc <= 0 {
			return badRequest("invalid_amount", "threshold", "threshold must be a positive number of credits")
		}
		st.Threshold = mc
	}
	if req.SpendingLimit != nil {
		n, err := req.SpendingLimit.Int64()
		if err != nil || n < 0 {
			return badRequest("invalid_amount", "spendingLimit",
				"spendingLimit is a whole amount in minor units (cents) of the pack's currency: 5000 for 50.00")
		}
		st.SpendingLimit = n
	}
	if st.SpendingLimit < 0 {
		st.SpendingLimit = s.defaultSpendingLimit
	}
	if st.Enabled {
		switch {
		case st.Pack == "":
			return badRequest("missing_field", "packId", "packId is required to turn auto-recharge on")
		case st.Threshold <= 0:
			return badRequest("missing_field", "threshold", "threshold is required to turn auto-recharge on")
		case st.SpendingLimit < st.PriceMinor:
			return badRequest("invalid_amount", "spendingLimit",
				"spendingLimit %s %s is below the pack's price %s: no recharge could ever be made",
				pricing.FormatMinor(st.SpendingLimit, 2), strings.ToUpper(st.Currency), pricing.FormatMinor(st.PriceMinor, 2))
		case s.stripe == nil:
			return errPaymentsOff
		}
		if _, err := s.catalog.Pack(st.Pack); err != nil {
			return badRequest("unknown_pack", "packId", "pack %q is no longer on sale; choose another", st.Pack)
		}
	}
	if err := s.store.SetAutoRecharge(ctx, account, st); err != nil {
		return fmt.Errorf("saving auto-recharge: %w", err)
	}
	saved, err := s.store.AutoRecharge(ctx, account)
	if err != nil {
		return fmt.Errorf("reading auto-recharge: %w", err)
	}
	s.log.Info("auto-recharge set", zap.String("request_id", infoFrom(ctx).id), zap.String("account", account),
		zap.Bool("enabled", st.Enabled), zap.String("pack", st.Pack), zap.Int64("threshold_mc", st.Threshold),
		zap.Int64("spending_limit_minor", st.SpendingLimit))
	writeJSON(w, http.StatusOK, s.autoRechargeView(saved))
	return nil
}

// POST /api/billing/credits/purchase {"packId"} → {"transactionId","balance","purchased"}:
// an off-session PaymentIntent on the saved card, credited at once when it
// succeeds (the payment_intent.succeeded webhook later credits nothing more:
// same reference). No saved card, a declined card, or a bank asking for
// authentication → 402 with the URL of a Checkout page for the same pack,
// and no credits.
func (s *Server) purchase(w http.ResponseWriter, r *http.Request, account string) error {
	var req struct {
		PackID string `json:"packId"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	pack, err := s.catalog.Pack(req.PackID)
	if err != nil {
		return badRequest("unknown_pack", "packId", "unknown pack %q; valid packs: %s", req.PackID, strings.Join(s.packKeys(), ", "))
	}
	if s.stripe == nil || s.payments == nil {
		return errPaymentsOff
	}
	ctx := r.Context()
	log := s.log.With(zap.String("request_id", infoFrom(ctx).id), zap.String("account", account), zap.String("pack", pack.Key))
	purchaseID := "pur_" + randomHex(12)
	if k := r.Header.Get("Idempotency-Key"); k != "" && len(k) <= 64 && plainID(k) {
		// A retried request is the same purchase: the same PaymentIntent
		// (Stripe's idempotency) and the same credit reference.
		sum := sha256.Sum256([]byte(account + "\x00" + pack.Key + "\x00" + k))
		purchaseID = "pur_" + hex.EncodeToString(sum[:12])
	}
	customer, err := s.store.StripeCustomer(ctx, account)
	if err != nil {
		return fmt.Errorf("reading Stripe customer: %w", err)
	}
	card := ""
	if customer != "" {
		if card, err = s.payments.DefaultCard(ctx, customer); err != nil {
			return fmt.Errorf("finding the saved card: %w", err)
		}
	}
	if card == "" {
		log.Info("direct purchase needs checkout: no saved card")
		return s.finishAtCheckout(ctx, account, pack, purchaseID, "no_saved_card",
			"there is no saved card to charge; finish the purchase at the Checkout page (url), which saves the card for next time. No credits were added.")
	}
	err = s.store.SaveCheckout(ctx, metering.Checkout{SessionID: purchaseID, Account: account, Pack: pack.Key,
		Credits: pack.Credits, PriceMinor: pack.PriceMinor, Currency: pack.Currency})
	if err != nil {
		return fmt.Errorf("recording purchase: %w", err)
	}
	res, err := s.payments.ChargeOffSession(ctx, OffSessionCharge{
		Customer: customer, PaymentMethod: card, AmountMinor: pack.PriceMinor, Currency: pack.Currency,
		Description: pack.Name + " credit pack", IdempotencyKey: "purchase-" + purchaseID,
		Metadata: map[string]string{metaAccount: account, metaPack: pack.Key, metaPurchase: purchaseID, metaKind: kindPurchase},
	})
	if err != nil {
		return fmt.Errorf("charging the saved card: %w", err)
	}
	log = log.With(zap.String("purchase_id", purchaseID), zap.String("payment_intent", res.ID), zap.String("status", string(res.Status)))
	switch res.Status {
	case PaymentSucceeded:
		f, err := s.store.FulfilCheckout(ctx, metering.Fulfilment{
			Account: account, SessionID: purchaseID, PaymentID: res.ID, AmountMinor: res.AmountMinor,
			Currency: strings.ToLower(res.Currency),
			Fields:   map[string]string{"description": pack.Name + " credit pack", "source": "direct_purchase"},
		})
		if err != nil {
			return fmt.Errorf("crediting purchase %s: %w", purchaseID, err)
		}
		id := f.EntryID
		if !f.Applied { // the webhook was faster
			id = s.purchaseEntry(ctx, account, purchaseID)
		}
		log.Info("direct purchase credited", zap.Bool("applied", f.Applied), zap.Int64("credits_mc", pack.Credits))
		writeJSON(w, http.StatusOK, purchaseJSON{TransactionID: optString(id), Balance: Credits(f.BalanceAfter), Purchased: Credits(pack.Credits)})
		return nil
	case PaymentProcessing:
		// The payment_intent.succeeded webhook credits it.
		a, err := s.store.Account(ctx, account)
		if err != nil {
			return fmt.Errorf("reading balance: %w", err)
		}
		log.Info("direct purchase processing")
		writeJSON(w, http.StatusAccepted, purchaseJSON{Balance: Credits(a.Balance), Status: "processing"})
		return nil
	case PaymentNeedsAction:
		log.Info("direct purchase needs authentication")
		return s.finishAtCheckout(ctx, account, pack, purchaseID, "authentication_required",
			"your bank asks you to authenticate this payment; finish it at the Checkout page (url). No credits were added.")
	default:
		log.Info("direct purchase declined", zap.String("code", res.Code))
		return s.finishAtCheckout(ctx, account, pack, purchaseID, "card_declined",
			"the saved card was declined (%s); pay at the Checkout page (url) with another card. No credits were added.", res.Code)
	}
}

type purchaseJSON struct {
	TransactionID *string `json:"transactionId"` // the ledger entry, as in /api/billing/credits
	Balance       Credits `json:"balance"`
	Purchased     Credits `json:"purchased"`
	Status        string  `json:"status,omitempty"` // "processing": credited by the webhook later
}

// finishAtCheckout answers 402 with the URL of a Checkout page selling the
// same pack (which saves the card for off-session use).
func (s *Server) finishAtCheckout(ctx context.Context, account string, pack pricing.Pack, purchaseID, code, format string, args ...any) error {
	sess, err := s.packSession(ctx, account, pack, "purchase-checkout-"+purchaseID, true)
	if err != nil {
		return err
	}
	return paymentRequired(code, sess.URL, format, args...)
}

// purchaseEntry finds the ledger entry that credited a purchase (recent history).
func (s *Server) purchaseEntry(ctx context.Context, account, purchaseID string) string {
	entries, err := s.store.BillingHistory(ctx, account, metering.LedgerQuery{Limit: 100})
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if e.Fields["session_id"] == purchaseID {
			return e.ID
		}
	}
	return ""
}
