package books

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testjwt"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// What billing reads of the books' store, guarded here (books must not
// import billing outside its tests).
var (
	_ billing.Store       = (*Store)(nil)
	_ billing.UsageExport = (*Store)(nil)
	_ billing.DailyUsage  = (*Store)(nil)
)

const (
	testJWTSecret = "jwt-secret-0123456789abcdef-0123456789"
	testAdmin     = "admin-token-0123456789abcdef-0123456789"
)

// billingOver serves the billing API over the books' store, as the billing
// process does with a database configured, and returns a GET function
// (bearer: a JWT for the account, or the admin token for /admin paths).
func billingOver(t *testing.T, st *Store) func(path, account string) (int, http.Header, string) {
	t.Helper()
	data, err := os.ReadFile("../configs/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cat, err := pricing.New(cfg.Pricing)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := billing.New(billing.Options{Catalog: cat, Store: st, Config: config.Billing{AdminToken: testAdmin,
		JWT: config.JWT{Secret: testJWTSecret, AccountClaim: "sub"}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return func(path, account string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", hs.URL+path, nil)
		tok := testAdmin
		if !strings.HasPrefix(path, "/admin/") {
			tok = testjwt.Sign(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": account, "exp": time.Now().Add(time.Hour).Unix()}, []byte(testJWTSecret))
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, string(body)
	}
}

// TestLedgerAfterTrim: entries the shipper trimmed from Redis (in the
// journal, past retention) are still listed — the ledger pages (newest
// first, by cursor, and oldest first), the credits page's transactions and
// the admin ledger — each entry once, in order; entries not shipped yet are
// listed too.
func TestLedgerAfterTrim(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acct-h", 100_000_000)
	for i := range 6 {
		e.call(t, e.St, "acct-h", fmt.Sprintf("m-%d", i%2), int64(1000+i))
	}
	sh := e.b.NewShipper(e.St, ShipperOptions{Retention: time.Hour})
	if _, err := sh.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	all := e.Entries(t, "acct-h") // oldest first: the purchase, six calls
	if n, err := sh.Trim(ctx, time.Now().Add(2*time.Hour)); err != nil || n != int64(len(all)-1) {
		t.Fatalf("Trim = %d, %v; want %d", n, err, len(all)-1)
	}
	e.call(t, e.St, "acct-h", "m-late", 5) // not shipped
	all = append(all, e.Entries(t, "acct-h")[1])
	if hot, _ := e.St.Ledger(ctx, "acct-h", metering.LedgerQuery{Limit: 100}); len(hot) != 2 {
		t.Fatalf("Redis still holds %d entries, want 2 (the newest shipped and the unshipped one)", len(hot))
	}

	bs := e.b.NewStore(e.St)
	ids := func(es []metering.Entry) string {
		var s []string
		for _, en := range es {
			s = append(s, en.ID)
		}
		return strings.Join(s, " ")
	}
	var newest []metering.Entry
	for i := len(all) - 1; i >= 0; i-- {
		newest = append(newest, all[i])
	}
	// Newest first, three at a time.
	var paged []metering.Entry
	before := ""
	for {
		p, err := bs.Ledger(ctx, "acct-h", metering.LedgerQuery{Limit: 3, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, p...)
		if len(p) < 3 {
			break
		}
		before = p[len(p)-1].ID
	}
	if ids(paged) != ids(newest) {
		t.Fatalf("paged newest first:\n%s\nwant\n%s", ids(paged), ids(newest))
	}
	asc, err := bs.Ledger(ctx, "acct-h", metering.LedgerQuery{Limit: 100, After: "0-0"})
	if err != nil || ids(asc) != ids(all) {
		t.Fatalf("oldest first: %s %v\nwant %s", ids(asc), err, ids(all))
	}
	for i, en := range asc {
		if en.Type != all[i].Type || en.Amount != all[i].Amount || en.BalanceAfter != all[i].BalanceAfter ||
			en.Reference != all[i].Reference || !en.CreatedAt.Equal(all[i].CreatedAt) || en.Fields["model"] != all[i].Fields["model"] {
			t.Fatalf("entry %d from the books %+v, Redis had %+v", i, en, all[i])
		}
	}
	if _, err := bs.Ledger(ctx, "acct-h", metering.LedgerQuery{Before: "nope"}); err == nil {
		t.Fatal("a bad cursor was accepted")
	}

	// Over HTTP: the credits page shows the purchase and every model's usage.
	get := billingOver(t, bs)
	status, _, body := get("/api/billing/credits?limit=50", "acct-h")
	if status != http.StatusOK {
		t.Fatalf("credits: %d %s", status, body)
	}
	var credits struct {
		Transactions []struct{ Type, Description string }
	}
	if err := json.Unmarshal([]byte(body), &credits); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, tx := range credits.Transactions {
		seen = append(seen, tx.Type+":"+strings.SplitN(tx.Description, ":", 2)[0])
	}
	if got := strings.Join(seen, " "); got != "usage:m-late usage:m-1 usage:m-0 purchase:Credit pack" &&
		got != "usage:m-late usage:m-0 usage:m-1 purchase:Credit pack" {
		t.Fatalf("transactions after the trim: %s\n%s", got, body)
	}
	status, _, body = get("/admin/v1/accounts/acct-h/ledger?limit=100", "")
	var page struct{ Data []struct{ ID string } }
	if err := json.Unmarshal([]byte(body), &page); status != http.StatusOK || err != nil || len(page.Data) != len(all) {
		t.Fatalf("admin ledger: %d %v %d entries, want %d", status, err, len(page.Data), len(all))
	}
}

// TestUsageExportJournal: the usage export reads the journal — calls
// trimmed from Redis are exported, calls not shipped yet are shipped first —
// one row per call with its key, or per day and model, equal to each other
// and to the account's consumption.
func TestUsageExportJournal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acct-x", 100_000_000)
	bs := e.b.NewStore(e.St)
	k, _, err := bs.CreateKey(ctx, "acct-x", "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Add(-time.Second)
	for i := range 4 {
		keyCall(t, e.St, "acct-x", k.ID, fmt.Sprintf("x-%d", i), int64(1500+i))
	}
	sh := e.b.NewShipper(e.St, ShipperOptions{Retention: time.Hour})
	if _, err := sh.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Trim(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	e.call(t, e.St, "acct-x", "m-2", 2) // no key, not shipped
	end := time.Now().UTC().Add(time.Second)

	get := billingOver(t, bs)
	rng := "from=" + start.Format(time.RFC3339) + "&to=" + end.Add(time.Second).Format(time.RFC3339)
	csvOf := func(q string) [][]string {
		t.Helper()
		status, h, body := get("/api/billing/usage/export?"+q, "acct-x")
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") {
			t.Fatalf("%s: %d %s", q, status, body)
		}
		rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	calls := csvOf(rng + "&granularity=call")
	if len(calls) != 6 || strings.Join(calls[0], ",") != "created_at,request_id,key_id,model,input_tokens,output_tokens,credits" {
		t.Fatalf("calls: %q", calls)
	}
	for i, row := range calls[1:5] {
		if want := fmt.Sprintf("x-%d,%s,m,10,5,%s", i, k.ID, pricing.AppendCredits(nil, int64(1500+i))); strings.Join(row[1:], ",") != want {
			t.Errorf("call %d: %q, want %q", i, row, want)
		}
	}
	if row := strings.Join(calls[5][2:], ","); row != ",m-2,10,5,0.002" {
		t.Errorf("the unshipped call: %q", calls[5])
	}
	days := csvOf(rng + "&granularity=day")
	var sum int64
	for _, d := range days[1:] {
		mc, err := pricing.ParseCredits(d[5])
		if err != nil {
			t.Fatal(err)
		}
		sum += mc
	}
	if a := e.Acct(t, "acct-x"); sum != a.Consumed || len(days) < 3 {
		t.Fatalf("days %q sum to %d mc, consumed %d", days, sum, a.Consumed)
	}

	// The daily chart from the books' usage_daily equals Redis's day counters.
	now := time.Now()
	fromBooks, err := bs.DailyUsage(ctx, "acct-x", now.AddDate(0, 0, -2), now)
	if err != nil {
		t.Fatal(err)
	}
	fromRedis, err := e.St.DailyUsage(ctx, "acct-x", now.AddDate(0, 0, -2), now)
	if err != nil || len(fromBooks) == 0 || fmt.Sprint(fromBooks) != fmt.Sprint(fromRedis) {
		t.Fatalf("daily usage from the books %+v, from Redis %+v %v", fromBooks, fromRedis, err)
	}
	status, _, body := get("/api/billing/usage/daily?days=2", "acct-x")
	if status != http.StatusOK || !strings.Contains(body, `"model":"m-2"`) {
		t.Fatalf("usage/daily: %d %s", status, body)
	}
	// …and survives Redis losing its data.
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	e.Srv.Flush(t)
	if _, err := e.b.Restore(ctx, e.St, io.Discard); err != nil {
		t.Fatal(err)
	}
	if after, err := bs.DailyUsage(ctx, "acct-x", now.AddDate(0, 0, -2), now); err != nil || fmt.Sprint(after) != fmt.Sprint(fromBooks) {
		t.Fatalf("daily usage after a restore %+v %v, before %+v", after, err, fromBooks)
	}
}

// TestUsageExportChunks: the call export reads the journal in chunks and
// calls its callback holding no connection (a slow client never holds one
// of the pool), and lists every call once, in order, across chunk edges
// (many calls in one millisecond).
func TestUsageExportChunks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bs := e.b.NewStore(e.St)
	const calls = 2*exportChunk + 5
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	if _, err := e.b.pool.Exec(ctx, `INSERT INTO journal (account, at, seq, type, amount, balance_after, ref, created_at, model, fields)
		SELECT 'acct-c', $1::timestamptz + (i / 7) * interval '1 millisecond', i % 7, 'usage', -1, -i, 'r-' || i, now(), 'm',
			jsonb_build_object('model', 'm', 'input_tokens', '1')
		FROM generate_series(0, $2 - 1) i`, base, calls); err != nil {
		t.Fatal(err)
	}
	var n int
	var prev time.Time
	err := bs.UsageCalls(ctx, "acct-c", base, base.Add(time.Hour), func(u metering.CallUsage) error {
		if held := e.b.pool.Stat().AcquiredConns(); held != 0 {
			return fmt.Errorf("call %d: %d connections held while the client is written to", n, held)
		}
		if want := fmt.Sprintf("r-%d", n); u.RequestID != want || u.At.Before(prev) {
			return fmt.Errorf("call %d is %s at %s (after %s), want %s", n, u.RequestID, u.At, prev, want)
		}
		n, prev = n+1, u.At
		return nil
	})
	if err != nil || n != calls {
		t.Fatalf("UsageCalls: %d calls, want %d: %v", n, calls, err)
	}
}

// TestUsageDaysFromUsageDaily: the day export takes whole days from
// usage_daily and the partial days at either end from the journal. The
// whole day's usage_daily row is marked (credits 1 mc off the journal's) to
// see which answered.
func TestUsageDaysFromUsageDaily(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bs := e.b.NewStore(e.St)
	d0 := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	// Per day d0, d0+1, d0+2: a call at 03:00 and one at 15:00, 1000 mc each.
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.b.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO journal (account, at, seq, type, amount, balance_after, ref, created_at, model, fields)
		SELECT 'acct-d', $1::timestamptz + d * interval '1 day' + h * interval '1 hour', 0, 'usage', -1000, 0, 'r', now(), 'm',
			jsonb_build_object('model', 'm', 'input_tokens', '10', 'cache_write_tokens', '2', 'output_tokens', '5')
		FROM generate_series(0, 2) d, unnest(ARRAY[3, 15]) h`, d0)
	exec(`INSERT INTO usage_daily (account, day, model, calls, input_tokens, cache_write_tokens, output_tokens, credits)
		SELECT account, (at AT TIME ZONE 'UTC')::date, model, count(*), count(*) * 10, count(*) * 2, count(*) * 5, sum(-amount)
		FROM journal WHERE account = 'acct-d' GROUP BY 1, 2, 3`)
	exec(`UPDATE usage_daily SET credits = credits + 1 WHERE account = 'acct-d' AND day = $1::date`, d0.AddDate(0, 0, 1))

	days := func(from, to time.Time) string {
		t.Helper()
		var out []string
		err := bs.UsageDays(ctx, "acct-d", from, to, func(d metering.DayUsage) error {
			out = append(out, fmt.Sprintf("%s %s %d %d %d %d", d.Date, d.Model, d.Requests, d.Input, d.Output, d.Credits))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "; ")
	}
	day := func(i int) string { return d0.AddDate(0, 0, i).Format(time.DateOnly) }
	for _, c := range []struct {
		name     string
		from, to time.Time
		want     string
	}{
		{"partial, whole, partial", d0.Add(12 * time.Hour), d0.AddDate(0, 0, 2).Add(6 * time.Hour),
			day(0) + " m 1 12 5 1000; " + day(1) + " m 2 24 10 2001; " + day(2) + " m 1 12 5 1000"},
		{"whole days only", d0, d0.AddDate(0, 0, 2),
			day(0) + " m 2 24 10 2000; " + day(1) + " m 2 24 10 2001"},
		{"within one day", d0.Add(time.Hour), d0.Add(4 * time.Hour), day(0) + " m 1 12 5 1000"},
		{"across one midnight", d0.Add(12 * time.Hour), d0.AddDate(0, 0, 1).Add(4 * time.Hour),
			day(0) + " m 1 12 5 1000; " + day(1) + " m 1 12 5 1000"},
	} {
		if got := days(c.from, c.to); got != c.want {
			t.Errorf("%s: %s\nwant %s", c.name, got, c.want)
		}
	}
}
