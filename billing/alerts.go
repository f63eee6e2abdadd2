package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/metering"
)

// Alerts is what the alert and webhook routes need of the store
// (*metering.Store satisfies it).
type Alerts interface {
	SetLowBalance(ctx context.Context, account string, mc int64) error
	LowBalance(ctx context.Context, account string) (int64, error)
	Deliveries(ctx context.Context, limit int) ([]metering.Delivery, error)
}

var _ Alerts = (*metering.Store)(nil)

// PUT /api/billing/credits/alerts {"lowBalance": credits | null} → the
// setting. balance.low is sent to the operator's webhooks when a debit takes
// the balance from at or above lowBalance to under it (once per crossing).
// null or 0 removes it.
func (s *Server) setAlerts(w http.ResponseWriter, r *http.Request, account string) error {
	al, ok := s.store.(Alerts)
	if !ok {
		return errNoRoute
	}
	var req struct {
		LowBalance *json.Number `json:"lowBalance"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	var mc int64
	if req.LowBalance != nil {
		var err error
		if mc, err = parseCredits("lowBalance", *req.LowBalance); err != nil {
			return err
		}
		if mc < 0 {
			return badRequest("invalid_amount", "lowBalance", "lowBalance must not be negative")
		}
	}
	if err := al.SetLowBalance(r.Context(), account, mc); err != nil {
		return fmt.Errorf("setting alerts: %w", err)
	}
	writeJSON(w, http.StatusOK, alertsView(mc))
	return nil
}

type alertsJSON struct {
	LowBalance *Credits `json:"lowBalance"`
}

func alertsView(mc int64) alertsJSON {
	if mc <= 0 {
		return alertsJSON{}
	}
	c := Credits(mc)
	return alertsJSON{LowBalance: &c}
}

// GET /admin/v1/webhooks/deliveries?limit= → {"data":[…]}: the newest
// deliveries of outgoing events, each with its state (pending, delivered,
// failed), attempts and last failure.
func (s *Server) adminDeliveries(w http.ResponseWriter, r *http.Request) error {
	al, ok := s.store.(Alerts)
	if !ok {
		return errNoRoute
	}
	limit, err := pageLimit(r, 50, 1000)
	if err != nil {
		return err
	}
	ds, err := al.Deliveries(r.Context(), limit)
	if err != nil {
		return fmt.Errorf("listing deliveries: %w", err)
	}
	type deliveryJSON struct {
		ID            string  `json:"id"`
		EventID       string  `json:"event_id"`
		Type          string  `json:"type"`
		Account       string  `json:"account"`
		URL           string  `json:"url"`
		State         string  `json:"state"`
		Attempts      int     `json:"attempts"`
		LastStatus    *int    `json:"last_status"`
		LastError     *string `json:"last_error"`
		NextAttemptAt *string `json:"next_attempt_at"`
		CreatedAt     string  `json:"created_at"`
		UpdatedAt     string  `json:"updated_at"`
	}
	out := make([]deliveryJSON, 0, len(ds))
	for _, d := range ds {
		v := deliveryJSON{ID: d.ID, EventID: d.EventID, Type: d.Type, Account: d.Account, URL: d.URL, State: d.State,
			Attempts: d.Attempts, CreatedAt: timestamp(d.CreatedAt), UpdatedAt: timestamp(d.UpdatedAt)}
		if d.LastCode != 0 {
			c := d.LastCode
			v.LastStatus = &c
		}
		if d.LastError != "" {
			v.LastError = optString(d.LastError)
		}
		if d.State == metering.DeliveryPending && !d.NextAt.IsZero() {
			v.NextAttemptAt = optString(timestamp(d.NextAt))
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, struct {
		Data []deliveryJSON `json:"data"`
	}{out})
	return nil
}
