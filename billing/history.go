package billing

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tollgate/tollgate/metering"
)

// historyJSON is one purchase, refund or dispute (or a won dispute's give-back).
type historyJSON struct {
	ID              string  `json:"id"` // also the starting_after cursor
	Object          string  `json:"object"`
	Type            string  `json:"type"` // purchase, auto_recharge, refund, dispute, dispute_won
	Amount          Credits `json:"amount"`
	BalanceAfter    Credits `json:"balance_after"`
	StripePaymentID string  `json:"stripe_payment_id"`
	CreatedAt       string  `json:"created_at"`
	Description     string  `json:"description,omitempty"`
	Pack            string  `json:"pack,omitempty"`
	PriceMinor      *int64  `json:"price_minor,omitempty"`
	Currency        string  `json:"currency,omitempty"`
}

func historyView(e metering.Entry) historyJSON {
	h := historyJSON{
		ID: e.ID, Object: "billing_transaction", Type: e.Type, Amount: Credits(e.Amount),
		BalanceAfter: Credits(e.BalanceAfter), StripePaymentID: e.Fields["stripe_payment_id"],
		CreatedAt: timestamp(e.CreatedAt), Description: e.Fields["description"], Pack: e.Fields["pack"],
		Currency: e.Fields["currency"],
	}
	if v, err := strconv.ParseInt(e.Fields["price_minor"], 10, 64); err == nil {
		h.PriceMinor = &v
	}
	return h
}

// GET /v1/billing/history?limit=&starting_after= → purchases, refunds and
// disputes, newest first (usage is not billing history; admin grants are in
// the admin ledger).
func (s *Server) history(w http.ResponseWriter, r *http.Request, account string) error {
	limit, err := pageLimit(r, 20, 100)
	if err != nil {
		return err
	}
	after, err := cursor(r)
	if err != nil {
		return err
	}
	entries, err := s.store.BillingHistory(r.Context(), account, metering.LedgerQuery{Limit: int64(limit) + 1, Before: after})
	if errors.Is(err, metering.ErrNotFound) {
		return errBadCursor
	}
	if err != nil {
		return fmt.Errorf("reading billing history: %w", err)
	}
	page := listJSON[historyJSON]{Object: "list", Data: make([]historyJSON, 0, min(len(entries), limit))}
	if len(entries) > limit {
		entries, page.HasMore = entries[:limit], true
	}
	for _, e := range entries {
		page.Data = append(page.Data, historyView(e))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// GET /v1/api-credits → the caller's balance and totals (JWT only).
// total_purchased is the sum of the billing history (purchases less refunds
// and disputes); grants and adjustments have their own totals.
func (s *Server) apiCredits(w http.ResponseWriter, r *http.Request, account string) error {
	a, err := s.store.Account(r.Context(), account)
	if err != nil {
		return fmt.Errorf("reading balance: %w", err)
	}
	a, promoExp, err := s.promoSplit(r.Context(), a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Account   string  `json:"account"`
		Balance   Credits `json:"balance"`
		Reserved  Credits `json:"reserved"`
		Available Credits `json:"available"`
		totalsJSON
		// balance = paid + promotional; promotional credits are spent first.
		Paid                 Credits `json:"paid"`
		Promotional          Credits `json:"promotional"`
		PromotionalExpiresAt *string `json:"promotional_expires_at"`
	}{a.ID, Credits(a.Balance), Credits(a.Reserved), Credits(a.Available()), totalsView(a),
		Credits(a.Paid()), Credits(a.Promotional), promoExp})
	return nil
}
