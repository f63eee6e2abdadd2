package metering_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

func BenchmarkReserveSettle(b *testing.B) {
	e := newEnv(b, metering.Options{})
	ctx := context.Background()
	e.account(b, "bench", 1<<50)
	req := metering.HoldRequest{Account: "bench", Fixed: 1200, PerOutput: 16, MinOutput: 1, MaxOutput: 4096}
	rec := metering.Record{Model: "claude-sonnet", Provider: "anthropic", Endpoint: "chat.completions", Input: 150, Output: 300, Status: 200}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := "h" + strconv.Itoa(i)
		req.HoldID = id
		h, err := e.st.Reserve(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		rec.RequestID = id
		if _, err := e.st.Settle(ctx, metering.Settlement{Account: "bench", HoldID: h.ID, Cost: 5000, Record: rec}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReserveSettleKey is one call of a limited key (held in Redis
// call by call): with a key budget only, and under its member's budget too
// (keygov.lua's member lookups: one more HGET in reserve and in the drop,
// and the member's period in settle).
func BenchmarkReserveSettleKey(b *testing.B) {
	for _, member := range []bool{false, true} {
		name := "key-budget"
		if member {
			name = "member-budget"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, metering.Options{})
			ctx := context.Background()
			e.account(b, "bench", 1<<50)
			nk := metering.NewKey{Account: "bench", Name: "k",
				Settings: metering.KeySettings{Budget: 1 << 50, BudgetPeriod: metering.PeriodMonth}}
			if member {
				if _, err := e.st.ChangeMember(ctx, metering.MemberChange{Account: "bench", User: "max", Role: metering.RoleMember, ByOwner: true}); err != nil {
					b.Fatal(err)
				}
				if err := e.st.SetMemberBudget(ctx, "bench", "max", 1<<50, metering.PeriodMonth); err != nil {
					b.Fatal(err)
				}
				nk.CreatedBy = "max"
			}
			k, _, err := e.st.IssueKey(ctx, nk)
			if err != nil {
				b.Fatal(err)
			}
			req := metering.HoldRequest{Account: "bench", KeyID: k.ID, KeyLimited: true, Model: "m",
				Fixed: 1200, PerOutput: 16, MinOutput: 1, MaxOutput: 4096}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				req.HoldID = "h" + strconv.Itoa(i)
				h, err := e.st.Reserve(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := e.st.Settle(ctx, metering.Settlement{Account: "bench", KeyID: k.ID, HoldID: h.ID, Cost: 5000}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	e := newEnv(b, metering.Options{KeyCacheTTL: time.Hour})
	ctx := context.Background()
	e.account(b, "bench", 0)
	_, secret, err := e.st.CreateKey(ctx, "bench", "k", 0)
	if err != nil {
		b.Fatal(err)
	}
	key := []byte(secret)
	if _, err := e.st.Authenticate(ctx, key); err != nil { // warm the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.st.Authenticate(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestoreCostRecords: how fast a restore writes back cost records
// (a thousand per pipeline, as books.Restore sends them). Reports records/s.
func BenchmarkRestoreCostRecords(b *testing.B) {
	e := newEnv(b, metering.Options{})
	ctx := context.Background()
	recs := make([]metering.CostRecord, 1000)
	now := time.Now()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range recs {
			n++
			recs[i] = metering.CostRecord{RequestID: "req-" + strconv.Itoa(n), Entry: strconv.Itoa(n) + "-0",
				Charged: 1234, BalanceAfter: 99_000, At: now}
		}
		if err := e.st.RestoreCostRecords(ctx, "bench", recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkMemberRole is the cost billing adds to every JWT request: one
// pipelined round trip (HGET + EXISTS).
func BenchmarkMemberRole(b *testing.B) {
	e := newEnv(b, metering.Options{})
	ctx := context.Background()
	e.account(b, "bench", 0)
	if _, err := e.st.ChangeMember(ctx, metering.MemberChange{Account: "bench", User: "ann", Role: metering.RoleAdmin, ByOwner: true}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r, err := e.st.MemberRole(ctx, "bench", "ann"); err != nil || r != metering.RoleAdmin {
			b.Fatal(r, err)
		}
	}
}
