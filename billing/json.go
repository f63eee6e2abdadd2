package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/pricing"
)

// maxJSONBody caps request bodies of the JSON API.
const maxJSONBody = 64 << 10

// Credits is an amount in milli-credits that marshals as a JSON number of
// credits with exactly three decimals: 2374050000 → 2374050.000, -5 → -0.005.
type Credits int64

// MarshalJSON writes the amount from the integer, never through a float.
func (c Credits) MarshalJSON() ([]byte, error) {
	return pricing.AppendCredits(make([]byte, 0, 24), int64(c)), nil
}

// parseCredits reads a credit amount given as a JSON number or a decimal
// string ("1000", 12.345, "-0.5") exactly, into milli-credits.
func parseCredits(param string, n json.Number) (int64, error) {
	mc, err := pricing.ParseCredits(string(n))
	if err != nil {
		return 0, badRequest("invalid_amount", param,
			"%s must be a number of credits with at most three decimals, got %q", param, string(n))
	}
	return mc, nil
}

// decodeJSON reads one JSON object into dst: at most maxJSONBody bytes,
// unknown fields refused, numbers kept as their text.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest, code: "body_too_large",
				message: "request body is larger than " + strconv.Itoa(maxJSONBody) + " bytes"}
		}
		return badRequest("invalid_body", "", "could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("invalid_json", "", "the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return badRequest("invalid_json", typeErr.Field, "field %q has the wrong type", typeErr.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badRequest("unknown_field", field, "unknown field %q", field)
		}
		return badRequest("invalid_json", "", "the request body is not valid JSON")
	}
	if dec.More() {
		return badRequest("invalid_json", "", "the request body must hold a single JSON object")
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for a body that may be absent (or empty).
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		return decodeJSON(w, r, dst) // reports the read error as decodeJSON does
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return decodeJSON(w, r, dst)
}

// writeJSON writes v with status. Encoding errors cannot happen with our types;
// a failed write means the client went away.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":{"message":"internal error","type":"server_error","code":"internal_error"}}`)
	}
	writeRaw(w, status, body)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// timestamp renders times as RFC 3339 in UTC, to the second.
func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// pageLimit parses the limit query parameter: def when absent, 1..max.
func pageLimit(r *http.Request, def, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("invalid_limit", "limit", "limit must be an integer between 1 and %d", max)
	}
	return n, nil
}

var errBadCursor = badRequest("invalid_cursor", "starting_after", "starting_after must be the id of an entry from a previous page")

// cursor parses starting_after: an entry id as returned in a page ("1700000000000-0").
func cursor(r *http.Request) (string, error) {
	s := r.URL.Query().Get("starting_after")
	if s == "" {
		return "", nil
	}
	if !validCursor(s) {
		return "", errBadCursor
	}
	return s, nil
}

// validCursor reports whether s looks like a ledger entry id ("1700000000000-0").
func validCursor(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && len(ms) <= 19 && len(seq) <= 19 && digits(ms) && digits(seq)
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
