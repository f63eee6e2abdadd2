package billing

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/metering"
)

// admin guards an operator route: Authorization: Bearer <admin token>,
// compared in constant time (as hashes, so that not even the length leaks).
func (s *Server) admin(h handlerFunc) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		got := sha256.Sum256([]byte(bearer(r)))
		if subtle.ConstantTimeCompare(got[:], s.adminHash[:]) != 1 {
			return errAdminAuth
		}
		infoFrom(r.Context()).account = r.PathValue("id")
		return h(w, r)
	})
}

// accountJSON is an account's balances, in credits: total_purchased +
// total_granted + total_adjusted + total_promotional − total_consumed =
// balance; promotional is the part of balance left of promotional grants.
type accountJSON struct {
	ID        string  `json:"id"`
	Object    string  `json:"object"`
	Balance   Credits `json:"balance"`
	Reserved  Credits `json:"reserved"`
	Available Credits `json:"available"`
	totalsJSON
	Promotional Credits `json:"promotional"`
	// Calls charged past their holds, and what they cost beyond them.
	OverHoldCalls int64   `json:"over_hold_calls"`
	OverHold      Credits `json:"over_hold"`
	CreatedAt     string  `json:"created_at"`
}

// totalsJSON is an account's totals by kind of credit (metering.Account):
// purchases net of refunds and disputes, operators' grants, operators'
// adjustments, promotional grants net of their expiries, and usage.
type totalsJSON struct {
	TotalPurchased   Credits `json:"total_purchased"`
	TotalGranted     Credits `json:"total_granted"`
	TotalAdjusted    Credits `json:"total_adjusted"`
	TotalPromotional Credits `json:"total_promotional"`
	TotalConsumed    Credits `json:"total_consumed"`
}

func totalsView(a metering.Account) totalsJSON {
	return totalsJSON{TotalPurchased: Credits(a.Purchased), TotalGranted: Credits(a.Granted),
		TotalAdjusted: Credits(a.Adjusted), TotalPromotional: Credits(a.Promoted), TotalConsumed: Credits(a.Consumed)}
}

func accountView(a metering.Account) accountJSON {
	return accountJSON{
		ID: a.ID, Object: "account", Balance: Credits(a.Balance), Reserved: Credits(a.Reserved),
		Available: Credits(a.Available()), totalsJSON: totalsView(a), Promotional: Credits(a.Promotional), OverHoldCalls: a.OverHoldCalls, OverHold: Credits(a.OverHold),
		CreatedAt: timestamp(a.CreatedAt),
	}
}

// pathAccount is the {id} of an admin route; an id that cannot exist is "no such account".
func pathAccount(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !metering.ValidAccountID(id) {
		return "", notFound("account_not_found", "no such account")
	}
	return id, nil
}

// POST /admin/v1/accounts {"id":"acme"} → 201 account; 409 when it exists.
func (s *Server) adminCreateAccount(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ID string `json:"id"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if !metering.ValidAccountID(req.ID) {
		return badRequest("invalid_account_id", "id",
			"id must be 1–128 characters of letters, digits and - _ . @ : |")
	}
	infoFrom(r.Context()).account = req.ID
	a, err := s.store.CreateAccount(r.Context(), req.ID)
	if err != nil {
		return fmt.Errorf("creating account: %w", err)
	}
	writeJSON(w, http.StatusCreated, accountView(a))
	return nil
}

// GET /admin/v1/accounts/{id}
func (s *Server) adminAccount(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccount(r)
	if err != nil {
		return err
	}
	a, err := s.store.Account(r.Context(), id)
	if err != nil {
		return fmt.Errorf("reading account: %w", err)
	}
	writeJSON(w, http.StatusOK, accountView(a))
	return nil
}

// POST /admin/v1/accounts/{id}/keys {"name","credit_limit"?} → 201 with the key, shown once.
func (s *Server) adminCreateKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccount(r)
	if err != nil {
		return err
	}
	return s.createKey(r.Context(), w, r, id, false)
}

// GET /admin/v1/accounts/{id}/keys
func (s *Server) adminListKeys(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccount(r)
	if err != nil {
		return err
	}
	if _, err := s.store.Account(r.Context(), id); err != nil {
		return fmt.Errorf("listing keys: %w", err)
	}
	return s.listKeys(r.Context(), w, id)
}

// DELETE /admin/v1/accounts/{id}/keys/{keyId} → 204; 404 when unknown.
func (s *Server) adminRevokeKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccount(r)
	if err != nil {
		return err
	}
	return s.revokeKey(r.Context(), w, id, r.PathValue("keyId"))
}

// POST /admin/v1/accounts/{id}/credits {"credits":1000,"reference":"grant-1","description"?}
// → 200 {"balance","applied"}. Positive credits are a grant, negative ones an
// adjustment. The same reference twice credits once, whether it came through
// this API or the CLI (metering applies it as metering.OperatorReference, apart
// from every purchase's reference).
func (s *Server) adminCredit(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccount(r)
	if err != nil {
		return err
	}
	var req struct {
		Credits     json.Number `json:"credits"`
		Reference   string      `json:"reference"`
		Description string      `json:"description"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Credits == "" {
		return badRequest("missing_amount", "credits", "credits is required")
	}
	mc, err := parseCredits("credits", req.Credits)
	if err != nil {
		return err
	}
	if mc == 0 {
		return badRequest("invalid_amount", "credits", "credits must not be zero")
	}
	if req.Reference == "" || len(req.Reference) > 200 {
		return badRequest("invalid_reference", "reference",
			"reference is required (at most 200 characters): the same reference is applied once, ever")
	}
	if len(req.Description) > 500 {
		return badRequest("invalid_description", "description", "description must be at most 500 characters")
	}
	typ := metering.Grant
	if mc < 0 {
		typ = metering.Adjustment
	}
	fields := map[string]string{"source": "admin"}
	if req.Description != "" {
		fields["description"] = req.Description
	}
	res, err := s.store.Credit(r.Context(), metering.Credit{
		Account: id, Amount: mc, Reference: req.Reference, Type: typ, Fields: fields,
	})
	if err != nil {
		return fmt.Errorf("crediting: %w", err)
	}
	writeJSON(w, http.StatusOK, struct {
		ID      string  `json:"id"`
		Balance Credits `json:"balance"`
		Applied bool    `json:"applied"`
		EntryID string  `json:"entry_id,omitempty"`
	}{id, Credits(res.BalanceAfter), res.Applied, res.EntryID})
	return nil
}

// entryJSON is a ledger entry as the admin API shows it.
type entryJSON struct {
	ID           string            `json:"id"`
	Type         string            `json:"type"`
	Amount       Credits           `json:"amount"`
	BalanceAfter Credits           `json:"balance_after"`
	Reference    string            `json:"reference"`
	CreatedAt    string            `json:"created_at"`
	Fields       map[string]string `json:"fields,omitempty"`
}

// GET /admin/v1/accounts/{id}/ledger?limit=&starting_after= → newest first.
func (s *Server) adminLedger(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccount(r)
	if err != nil {
		return err
	}
	limit, err := pageLimit(r, 20, 500)
	if err != nil {
		return err
	}
	after, err := cursor(r)
	if err != nil {
		return err
	}
	if _, err := s.store.Account(r.Context(), id); err != nil {
		return fmt.Errorf("reading ledger: %w", err)
	}
	entries, err := s.store.Ledger(r.Context(), id, metering.LedgerQuery{Limit: int64(limit) + 1, Before: after})
	if errors.Is(err, metering.ErrNotFound) {
		return errBadCursor
	}
	if err != nil {
		return fmt.Errorf("reading ledger: %w", err)
	}
	page := listJSON[entryJSON]{Object: "list", Data: make([]entryJSON, 0, min(len(entries), limit))}
	if len(entries) > limit {
		entries, page.HasMore = entries[:limit], true
	}
	for _, e := range entries {
		page.Data = append(page.Data, entryJSON{
			ID: e.ID, Type: e.Type, Amount: Credits(e.Amount), BalanceAfter: Credits(e.BalanceAfter),
			Reference: e.Reference, CreatedAt: timestamp(e.CreatedAt), Fields: e.Fields,
		})
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
