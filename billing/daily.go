package billing

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// DailyUsage is where the usage chart's figures come from: an account's
// charged calls per UTC day and model. *metering.Store implements it from
// its per-day Redis counters; a PostgreSQL aggregate of the books can take
// its place (Options.Daily) without the handler changing.
type DailyUsage interface {
	DailyUsage(ctx context.Context, account string, from, to time.Time) ([]metering.DayUsage, error)
}

var _ DailyUsage = (*metering.Store)(nil)

// maxUsageDays is the longest range GET /api/billing/usage/daily answers
// (the Redis counters live metering.DayTTL).
const maxUsageDays = 31

type dayUsageJSON struct {
	Date         string  `json:"date"` // YYYY-MM-DD, UTC
	Model        string  `json:"model"`
	Requests     int64   `json:"requests"`
	InputTokens  int64   `json:"inputTokens"` // cached input and cache writes included
	OutputTokens int64   `json:"outputTokens"`
	Credits      Credits `json:"credits"`
}

// GET /api/billing/usage/daily?days=30 → the caller's successful (charged)
// calls per UTC day and model over the last days days, today included,
// oldest first; days without calls are absent.
func (s *Server) dailyUsage(w http.ResponseWriter, r *http.Request, account string) error {
	if s.daily == nil {
		return &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "usage_unavailable",
			message: "daily usage is not available on this server"}
	}
	days := 30
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxUsageDays {
			return badRequest("invalid_days", "days", "days must be an integer between 1 and %d", maxUsageDays)
		}
		days = n
	}
	now := time.Now().UTC()
	rows, err := s.daily.DailyUsage(r.Context(), account, now.AddDate(0, 0, 1-days), now)
	if err != nil {
		return fmt.Errorf("reading daily usage: %w", err)
	}
	out := make([]dayUsageJSON, 0, len(rows))
	for _, u := range rows {
		out = append(out, dayUsageJSON{Date: u.Date, Model: u.Model, Requests: u.Requests,
			InputTokens: u.Input, OutputTokens: u.Output, Credits: Credits(u.Credits)})
	}
	writeJSON(w, http.StatusOK, struct {
		Data []dayUsageJSON `json:"data"`
	}{out})
	return nil
}
