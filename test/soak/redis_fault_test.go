package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// driver makes calls from workers concurrent clients until stopped.
type driver struct {
	mu      sync.Mutex
	results []*callResult
	tag     atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

// drive starts workers clients, each making the calls gen draws, until halt.
func drive(client *http.Client, workers int, gen func(rng *rand.Rand, tag int64) *callSpec, seed uint64, firstTag int64) *driver {
	d := &driver{stop: make(chan struct{})}
	d.tag.Store(firstTag)
	for w := 0; w < workers; w++ {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				select {
				case <-d.stop:
					return
				default:
				}
				r := gen(rng, d.tag.Add(1)).do(client)
				d.mu.Lock()
				d.results = append(d.results, r)
				d.mu.Unlock()
			}
		}()
	}
	return d
}

// halt stops the clients, waits for the calls in flight and returns every result.
func (d *driver) halt() []*callResult {
	close(d.stop)
	d.wg.Wait()
	return d.results
}

// TestFaultRedisRestart kills redis-server (SIGKILL) under load, keeps it down
// for 1.5 s, and restarts it on the same port, while two proxy replicas keep
// serving. Every call must either complete and be charged exactly, or be
// refused with 503 and not be charged; nothing may be forwarded without a
// hold (a call's own, or its replica's credit lease); and both replicas must
// serve again without being restarted.
//
// Redis runs with --appendonly yes --appendfsync always: every write it
// acknowledged survives the kill, as it must for a production ledger (a Redis
// that forgets acknowledged debits cannot keep any ledger exact, whatever the
// proxy does; that is an operations requirement, documented, not a proxy
// behaviour to test). So the audit can be exact: every hold, debit and cost
// record the proxies were told about is still there after the restart.
func TestFaultRedisRestart(t *testing.T) {
	rs := testredis.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	prices := loadPrices(t)
	mock := startMock(t, mockllm.Config{})
	const holdTTL = 10 * time.Second // stream_timeout + config.HoldMargin
	cfg := writeConfig(t, map[string]any{
		"proxy.hold_ttl": holdTTL.String(), "proxy.stream_timeout": "5s", "proxy.request_timeout": "5s",
		"proxy.redis_timeout": "1s",
	})
	env := procEnv(mock.URL, "REDIS_URL="+rs.URL())
	proxies := []*proc{startProxy(t, "proxy-0", cfg, env), startProxy(t, "proxy-1", cfg, env)}
	accts := createAccounts(t, st, "rr", 20, func(int) int64 { return 500_000 })

	gen := func(rng *rand.Rand, tag int64) *callSpec {
		c := &callSpec{tag: tag, account: accts[rng.IntN(len(accts))], base: proxies[tag%2].URL,
			ep: epChat, model: "gpt-4o-mini", maxTokens: 32}
		switch rng.IntN(3) {
		case 0: // a stream of ~200 ms: its settle may fall in the outage
			c.stream, c.directives = true, "tokens=20,rate=100"
		case 1:
			c.ep, c.model, c.stream, c.directives = epMessages, "claude-sonnet", true, "tokens=10,rate=50"
		default: // non-streaming, 100 ms upstream latency
			c.directives = "tokens=12,delay=100ms"
		}
		return c
	}
	client := newClient(32)
	sd := seed(t)
	d := drive(client, 16, gen, sd, 0)
	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	rs.Stop()
	// Calls that start while Redis is down (the ones above may all be
	// waiting to settle): each is either held from its replica's live
	// credit lease (within proxy.lease_offline, the lease being a hold that
	// Redis keeps) and charged once Redis is back, or refused with 503 and
	// not forwarded.
	time.Sleep(200 * time.Millisecond)
	during := drive(client, 4, gen, sd+1, 500_000)
	time.Sleep(1300 * time.Millisecond)
	rs.Restart(t)
	restarted := time.Now()
	time.Sleep(3 * time.Second)
	results := append(d.halt(), during.halt()...)
	client.CloseIdleConnections()

	// The replicas recovered without a restart: each serves a call now.
	for i, p := range proxies {
		p.assertAlive(t)
		c := &callSpec{tag: 1_000_000 + int64(i), account: accts[i], base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8}
		r := c.do(client)
		if r.status != http.StatusOK {
			t.Errorf("%s after the restart: %d %s %v", p.name, r.status, r.code, r.err)
		}
		results = append(results, r)
	}

	// Holds of calls whose settle never reached Redis are left to expire.
	// Read them (with their expiry) before sweeping.
	orphans := map[string]int64{}
	var latest int64
	for _, a := range accts {
		hs, err := holdExpiries(st.Client(), a.id)
		if err != nil {
			t.Fatal(err)
		}
		for id, exp := range hs {
			orphans[id] = exp
			latest = max(latest, exp)
		}
	}
	if wait := time.Until(time.UnixMilli(latest)); wait > 0 {
		time.Sleep(wait + 100*time.Millisecond)
	}
	for _, a := range accts {
		if err := sweep(st, a.id); err != nil {
			t.Fatalf("sweeping %s: %v", a.id, err)
		}
	}

	var (
		ok, refused, servedFree, refusedCharged, forwardedRefused int
		problems                                                  []string
	)
	bad := func(r *callResult, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("call-%d (%s stream=%v, req %s, %s after the kill): %s", r.spec.tag, r.spec.ep,
			r.spec.stream, r.reqID, r.start.Sub(killed).Round(time.Millisecond), fmt.Sprintf(format, args...)))
	}
	seen, untagged := mock.snapshot()
	var forwarded int64
	for _, n := range seen {
		forwarded += int64(n)
	}
	if untagged != 0 || forwarded != mock.Requests() {
		problems = append(problems, fmt.Sprintf("the provider got %d requests, %d of them from the calls made (%d untagged)",
			mock.Requests(), forwarded, untagged))
	}
	byAcct := map[string][]*callResult{}
	for _, r := range results {
		byAcct[r.spec.account.id] = append(byAcct[r.spec.account.id], r)
	}
	ctx := context.Background()
	for _, a := range accts {
		_, entries, inv := ledgerInvariant(st, a.id)
		problems = append(problems, inv...)
		refs := usageByRef(entries)
		known := map[string]bool{}
		for _, r := range byAcct[a.id] {
			known[r.reqID] = true
			fwd := seen[r.spec.tag]
			charges := refs[r.reqID]
			if fwd > 1 {
				bad(r, "forwarded %d times", fwd)
			}
			if fwd == 1 {
				// Forwarded: the call must have had a hold — settled,
				// released (cost record), or left to expire.
				_, orphan := orphans[r.reqID]
				_, err := st.Generation(ctx, a.id, r.reqID)
				if len(charges) == 0 && err != nil && !orphan {
					bad(r, "forwarded without a hold (no debit, no cost record, no live hold)")
				}
			}
			switch {
			case r.err != nil:
				bad(r, "transport error: %v", r.err)
			case r.status == http.StatusOK:
				if r.terminal && r.charged < 0 && len(charges) == 0 {
					servedFree++
					bad(r, "served in full but never charged (no X-Credits-Charged, no debit): a free call")
					continue
				}
				ok++
				_, msgs := auditServed(t, prices, r, charges)
				for _, m := range msgs {
					bad(r, "%s", m)
				}
			case r.status == http.StatusServiceUnavailable && r.code == "store_unavailable":
				refused++
				if fwd > 0 {
					forwardedRefused++
					// The provider served it: the message must not say otherwise.
					if strings.Contains(r.message, "not forwarded") {
						bad(r, "refused after the provider served it, with the message %q", r.message)
					}
				}
				if len(charges) != 0 {
					refusedCharged++
					bad(r, "refused with 503 but charged %v", amounts(charges))
				}
			default:
				bad(r, "unexpected status %d (%s)", r.status, r.code)
			}
		}
		for ref, es := range refs {
			if !known[ref] {
				problems = append(problems, fmt.Sprintf("%s: ledger charges %v for %s, a call no client made", a.id, amounts(es), ref))
			}
		}
	}
	t.Logf("redis restart: calls=%d ok=%d refused_503=%d (of which forwarded, then refused: %d) served_free=%d refused_but_charged=%d "+
		"holds_left_to_expire=%d outage=%s ledger_mismatches=%d",
		len(results), ok, refused, forwardedRefused, servedFree, refusedCharged, len(orphans),
		restarted.Sub(killed).Round(time.Millisecond), len(problems))
	for i, p := range problems {
		if i == 30 {
			t.Errorf("… and %d more", len(problems)-30)
			break
		}
		t.Error(p)
	}
	if refused == 0 || ok == 0 {
		t.Errorf("the outage was not exercised: %d ok, %d refused", ok, refused)
	}
}
