package billing

import (
	"encoding/json"
	"net/http"

	"github.com/tollgate/tollgate/pricing"
)

// packJSON is a credit pack on sale: display fields first (price, credits
// after fee, note), then the exact machine fields.
type packJSON struct {
	Key             string  `json:"key"`
	Name            string  `json:"name"`
	Price           string  `json:"price"` // major units, "24.99"
	CreditsAfterFee Credits `json:"credits_after_fee"`
	Note            string  `json:"note"`

	Currency   string `json:"currency"`    // ISO 4217, lower case
	PriceMinor int64  `json:"price_minor"` // what the buyer pays, in minor units
	FeeBps     int64  `json:"fee_bps"`
	FeeMinor   int64  `json:"fee_minor"`  // the processing fee inside price_minor
	CreditsMC  int64  `json:"credits_mc"` // milli-credits the pack buys (credits × 1000)
}

func packView(p pricing.Pack) packJSON {
	return packJSON{
		Key: p.Key, Name: p.Name, Price: pricing.FormatMinor(p.PriceMinor, 2), CreditsAfterFee: Credits(p.Credits),
		Note: p.Note, Currency: p.Currency, PriceMinor: p.PriceMinor, FeeBps: p.FeeBps, FeeMinor: p.FeeMinor,
		CreditsMC: p.Credits,
	}
}

// renderPacks renders the immutable pack list once.
func renderPacks(c *pricing.Catalog) []byte {
	packs := c.Packs()
	out := listJSON[packJSON]{Object: "list", Data: make([]packJSON, 0, len(packs))}
	for _, p := range packs {
		out.Data = append(out.Data, packView(p))
	}
	body, _ := json.Marshal(out) // plain strings and integers: cannot fail
	return body
}

// GET /v1/billing/packs — no authentication.
func (s *Server) packs(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeRaw(w, http.StatusOK, s.packsBody)
	return nil
}
