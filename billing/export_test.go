package billing

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// TestUsageExportRedis: without durable books the export reads the Redis
// ledger: a header row, one row per charged call (key id, tokens with cached
// input and cache writes, exact credits), or per day and model; failed calls
// and credits are not usage; from/to select by the charge's time; bad
// parameters are 400.
func TestUsageExportRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	tok := e.token("exp", nil)
	if r := e.do("GET", "/v1/api-credits", tok, nil); r.status != http.StatusOK {
		t.Fatalf("first use: %d %s", r.status, r.raw)
	}
	if _, err := e.store.Credit(ctx, metering.Credit{Account: "exp", Amount: 10_000_000, Reference: "fund"}); err != nil {
		t.Fatal(err)
	}
	k, _, err := e.store.IssueKey(ctx, metering.NewKey{Account: "exp", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	charge := func(hold, key, model string, cost int64, rec metering.Record) {
		t.Helper()
		if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: "exp", KeyID: key, HoldID: hold, Model: model, Fixed: cost}); err != nil {
			t.Fatal(err)
		}
		rec.Model = model
		if _, err := e.store.Settle(ctx, metering.Settlement{Account: "exp", KeyID: key, HoldID: hold, Cost: cost, Record: rec}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now().UTC().Add(-time.Second)
	charge("req-1", k.ID, "m-b", 1_234, metering.Record{Input: 100, CachedInput: 20, CacheWrite: 3, CacheWrite1h: 1, Output: 50, Reasoning: 10})
	charge("req-2", "", "m-a", 7, metering.Record{Input: 1, Output: 2})
	charge("req-3", k.ID, "m-b", 1_000_000, metering.Record{Input: 5, Output: 6})
	// A failed call (released, not charged) is not usage.
	if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: "exp", HoldID: "req-failed", Model: "m-a", Fixed: 10}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Release(ctx, "exp", "", "req-failed", &metering.Record{Model: "m-a", Failed: true}); err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC().Add(time.Second)

	get := func(query string) [][]string {
		t.Helper()
		req, _ := http.NewRequest("GET", e.http.URL+"/api/billing/usage/export?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/csv") ||
			!strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment") {
			t.Fatalf("%s: %d %v %s", query, res.StatusCode, res.Header, body)
		}
		rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v\n%s", query, err, body)
		}
		return rows
	}
	rng := "from=" + url.QueryEscape(start.Format(time.RFC3339Nano)) + "&to=" + url.QueryEscape(end.Format(time.RFC3339Nano))
	calls := get(rng + "&granularity=call")
	want := [][]string{
		{"created_at", "request_id", "key_id", "model", "input_tokens", "output_tokens", "credits"},
		{"", "req-1", k.ID, "m-b", "124", "50", "1.234"},
		{"", "req-2", "", "m-a", "1", "2", "0.007"},
		{"", "req-3", k.ID, "m-b", "5", "6", "1000.000"},
	}
	if len(calls) != len(want) {
		t.Fatalf("calls: %q", calls)
	}
	for i, row := range calls {
		if i > 0 {
			ts, err := time.Parse(time.RFC3339Nano, row[0])
			if err != nil || ts.Before(start) || ts.After(end) {
				t.Errorf("row %d created_at %q (%v)", i, row[0], err)
			}
			row[0] = ""
		}
		if strings.Join(row, ",") != strings.Join(want[i], ",") {
			t.Errorf("row %d = %q, want %q", i, row, want[i])
		}
	}
	if got := get("granularity=call"); len(got) != 4 { // the default range: the last 30 days
		t.Errorf("default range: %q", got)
	}
	day := start.Format(time.DateOnly)
	if end.Format(time.DateOnly) == day { // not across midnight
		days := get(rng + "&granularity=day")
		wantDays := "date,model,requests,input_tokens,output_tokens,credits|" +
			day + ",m-a,1,1,2,0.007|" + day + ",m-b,2,129,56,1001.234"
		var got []string
		for _, r := range days {
			got = append(got, strings.Join(r, ","))
		}
		if strings.Join(got, "|") != wantDays {
			t.Errorf("days = %q, want %q", strings.Join(got, "|"), wantDays)
		}
	}
	// Nothing after the range; an empty export still has its header.
	later := "from=" + url.QueryEscape(end.Add(time.Hour).Format(time.RFC3339)) + "&to=" + url.QueryEscape(end.Add(2*time.Hour).Format(time.RFC3339))
	if got := get(later + "&granularity=day"); len(got) != 1 {
		t.Errorf("export after the calls: %q", got)
	}
	for _, bad := range []string{"granularity=hour", "from=yesterday", "to=2026-13-01T00:00:00Z",
		"from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"} {
		if r := e.do("GET", "/api/billing/usage/export?"+bad, tok, nil); r.status != http.StatusBadRequest || !strings.Contains(r.raw, `"error"`) {
			t.Errorf("%s: %d %s", bad, r.status, r.raw)
		}
	}
	if r := e.do("GET", "/api/billing/usage/export", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("without a token: %d", r.status)
	}
	e.invariant("exp")
}

// blockingExport is a usage export that holds each export until released.
type blockingExport struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingExport) UsageCalls(ctx context.Context, _ string, _, _ time.Time, fn func(metering.CallUsage) error) error {
	b.started <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return fn(metering.CallUsage{RequestID: "req-1", Model: "m", Credits: 1})
}

func (b *blockingExport) UsageDays(ctx context.Context, account string, from, to time.Time, fn func(metering.DayUsage) error) error {
	return b.UsageCalls(ctx, account, from, to, func(metering.CallUsage) error { return nil })
}

// TestUsageExportBusy: while MaxExports exports run (slow: held by the
// source), one more is answered 429 export_busy with Retry-After, at once;
// once they end, exports are served again.
func TestUsageExportBusy(t *testing.T) {
	t.Parallel()
	src := &blockingExport{started: make(chan struct{}, 8), release: make(chan struct{})}
	e := newEnv(t, envOptions{adjustOpts: func(o *Options) { o.Export, o.MaxExports = src, 2 }})
	tok := e.token("busy", nil)
	if r := e.do("GET", "/v1/api-credits", tok, nil); r.status != http.StatusOK {
		t.Fatalf("first use: %d %s", r.status, r.raw)
	}
	get := func(query string) (int, string) {
		req, _ := http.NewRequest("GET", e.http.URL+"/api/billing/usage/export?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 2)
	for _, g := range []string{"call", "day"} {
		go func() { st, body := get("granularity=" + g); done <- result{st, body} }()
	}
	<-src.started
	<-src.started
	r := e.do("GET", "/api/billing/usage/export", tok, nil)
	if r.status != http.StatusTooManyRequests || r.str("error.code") != "export_busy" || r.str("error.type") != "rate_limit_error" ||
		r.header.Get("Retry-After") != "5" {
		t.Fatalf("a third export while two run: %d %v %s", r.status, r.header, r.raw)
	}
	close(src.release)
	for range 2 {
		if r := <-done; r.status != http.StatusOK {
			t.Fatalf("a held export: %d %s", r.status, r.body)
		}
	}
	if st, body := get("granularity=call"); st != http.StatusOK || !strings.Contains(body, "req-1") {
		t.Fatalf("an export after they ended: %d %s", st, body)
	}
}
