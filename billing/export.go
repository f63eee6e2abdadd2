package billing

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// UsageExport is where GET /api/billing/usage/export reads an account's
// charged calls: *metering.Store from its Redis ledger (complete when there
// are no durable books: nothing trims it), the books' store (package books)
// from the PostgreSQL journal. Both stream rows oldest first.
type UsageExport interface {
	UsageCalls(ctx context.Context, account string, from, to time.Time, fn func(metering.CallUsage) error) error
	UsageDays(ctx context.Context, account string, from, to time.Time, fn func(metering.DayUsage) error) error
}

var _ UsageExport = (*metering.Store)(nil)

const (
	// exportDefault is the range exported when from is not given.
	exportDefault = 30 * 24 * time.Hour
	// maxExportRange is the longest range one export covers.
	maxExportRange = 366 * 24 * time.Hour
	// exportBuffer is how much of the CSV is held before the response starts:
	// an error before it fills is still answered with its status.
	exportBuffer = 64 << 10
)

// errExportBusy answers an export while Options.MaxExports run.
var errExportBusy = &apiError{status: http.StatusTooManyRequests, typ: typeRateLimit, code: "export_busy", retryAfter: 5,
	message: "too many usage exports are running on this server; retry in a few seconds"}

var (
	callColumns = []string{"created_at", "request_id", "key_id", "model", "input_tokens", "output_tokens", "credits"}
	dayColumns  = []string{"date", "model", "requests", "input_tokens", "output_tokens", "credits"}
)

// GET /api/billing/usage/export?from=&to=&granularity=call|day → CSV with a
// header row: one row per charged call (oldest first) or per UTC day and
// model, over [from, to) (RFC 3339; default the last 30 days). Credits are
// exact decimals of milli-credits. Owners, admins and billing members
// (permBilling in authz.go).
func (s *Server) usageExport(w http.ResponseWriter, r *http.Request, account string) error {
	if s.export == nil {
		return &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "usage_unavailable",
			message: "the usage export is not available on this server"}
	}
	q := r.URL.Query()
	granularity := q.Get("granularity")
	switch granularity {
	case "":
		granularity = "call"
	case "call", "day":
	default:
		return badRequest("invalid_granularity", "granularity", "granularity must be call or day")
	}
	to := time.Now().UTC()
	if v := q.Get("to"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return badRequest("invalid_to", "to", "to must be an RFC 3339 time, such as 2026-01-31T00:00:00Z")
		}
		to = t.UTC()
	}
	from := to.Add(-exportDefault)
	if v := q.Get("from"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return badRequest("invalid_from", "from", "from must be an RFC 3339 time, such as 2026-01-01T00:00:00Z")
		}
		from = t.UTC()
	}
	if !from.Before(to) {
		return badRequest("invalid_range", "from", "from must be before to")
	}
	if to.Sub(from) > maxExportRange {
		return badRequest("invalid_range", "from", "one export covers at most 366 days")
	}
	select {
	case s.exports <- struct{}{}:
		defer func() { <-s.exports }()
	default:
		return errExportBusy
	}

	out := &exportWriter{w: w, filename: fmt.Sprintf("usage-%s-%s-%s.csv",
		granularity, from.Format("20060102T150405Z"), to.Format("20060102T150405Z"))}
	buf := bufio.NewWriterSize(out, exportBuffer)
	cw := csv.NewWriter(buf)
	num := func(v int64) string { return strconv.FormatInt(v, 10) }
	credits := func(mc int64) string { return string(pricing.AppendCredits(nil, mc)) }
	var err error
	if granularity == "call" {
		_ = cw.Write(callColumns)
		err = s.export.UsageCalls(r.Context(), account, from, to, func(u metering.CallUsage) error {
			return cw.Write([]string{u.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), u.RequestID, u.KeyID, u.Model,
				num(u.Input), num(u.Output), credits(u.Credits)})
		})
	} else {
		_ = cw.Write(dayColumns)
		err = s.export.UsageDays(r.Context(), account, from, to, func(d metering.DayUsage) error {
			return cw.Write([]string{d.Date, d.Model, num(d.Requests), num(d.Input), num(d.Output), credits(d.Credits)})
		})
	}
	if err == nil {
		cw.Flush()
		if err = cw.Error(); err == nil {
			err = buf.Flush()
		}
	}
	if err != nil {
		if !out.started {
			return fmt.Errorf("exporting usage: %w", err)
		}
		// Part of the CSV is out: the status is sent. Cut the connection
		// so that the client sees an incomplete download, not a short file.
		s.log.Error("usage export cut short", zap.String("request_id", infoFrom(r.Context()).id), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// exportWriter starts the CSV response at its first byte (until then an
// error is answered as any other).
type exportWriter struct {
	w        http.ResponseWriter
	filename string
	started  bool
}

func (e *exportWriter) Write(p []byte) (int, error) {
	if !e.started {
		e.started = true
		h := e.w.Header()
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("Content-Disposition", `attachment; filename="`+e.filename+`"`)
		h.Set("Cache-Control", "no-store")
		e.w.WriteHeader(http.StatusOK)
	}
	return e.w.Write(p)
}
