package billing

import (
	"net/http"

	"github.com/tollgate/tollgate/api"
	"github.com/tollgate/tollgate/console"
)

// consoleRoutes mounts the web console (/console/), the settings it reads
// first (/console/config.json) and the OpenAPI document (/openapi.json).
func (s *Server) consoleRoutes(mux *http.ServeMux) {
	c := console.New(console.Options{FrameAncestors: s.cfg.AllowedOrigins})
	mux.Handle("GET /console/", c)
	mux.Handle("GET /console/config.json", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c.SetHeaders(w)
		writeJSON(w, http.StatusOK, s.consoleConfig(r))
		return nil
	}))
	mux.Handle("GET /openapi.json", s.handle(func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		writeRaw(w, http.StatusOK, api.OpenAPI)
		return nil
	}))
}

// consoleConfigJSON tells the console which features this server has, so
// that it asks only for what exists (no failing request whatever is
// configured).
type consoleConfigJSON struct {
	Auth     bool `json:"auth"`     // JWT configured: the customer console works
	Payments bool `json:"payments"` // Stripe configured: packs, plans, portal
	Admin    bool `json:"admin"`    // the admin API is mounted: operator sign-in
	// ReturnToConsole: Checkout may come back to this console (its origin is
	// allowed); otherwise it returns to the configured success URL.
	ReturnToConsole bool              `json:"returnToConsole"`
	Plans           []consolePlanJSON `json:"plans"`
	// Books is the operator's books status route once the books exist (the
	// PostgreSQL journal and its reconciliation); null until then.
	Books *string `json:"books"`
	// Webhooks is how many endpoints receive outgoing events
	// (billing.webhooks): the operator's deliveries panel says so when none.
	Webhooks int `json:"webhooks"`
}

type consolePlanJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	MinSeats int64  `json:"minSeats"`
	MaxSeats int64  `json:"maxSeats"` // 0: no maximum
}

func (s *Server) consoleConfig(r *http.Request) consoleConfigJSON {
	out := consoleConfigJSON{Auth: s.jwt != nil, Payments: s.stripe != nil, Admin: s.adminOn,
		Webhooks: len(s.cfg.Webhooks), Plans: make([]consolePlanJSON, 0, len(s.plans))}
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	if s.books != nil && s.adminOn {
		route := "/admin/v1/books"
		out.Books = &route
	}
	out.ReturnToConsole = s.redirectAllowed(scheme + "://" + r.Host + "/console/")
	for _, p := range s.plans {
		name := p.Name
		if name == "" {
			name = p.ID
		}
		out.Plans = append(out.Plans, consolePlanJSON{ID: p.ID, Name: name, MinSeats: max(p.MinSeats, 1), MaxSeats: p.MaxSeats})
	}
	return out
}
