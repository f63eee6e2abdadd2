package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// loadSize is the size of a load suite.
type loadSize struct {
	replicas, accounts, calls, workers int
}

func (s loadSize) String() string {
	return fmt.Sprintf("%d replicas, %d accounts, %d calls, %d clients", s.replicas, s.accounts, s.calls, s.workers)
}

// soakSize: small in `make test`, full under TOLLGATE_SOAK=full (`make soak`).
func soakSize() loadSize {
	if os.Getenv("TOLLGATE_SOAK") == "full" {
		return loadSize{replicas: 3, accounts: 2000, calls: 50000, workers: 96}
	}
	return loadSize{replicas: 3, accounts: 50, calls: 3000, workers: 24}
}

func fullSoak() bool { return os.Getenv("TOLLGATE_SOAK") == "full" }

// seed is the workload's random seed: TOLLGATE_SOAK_SEED replays a run.
func seed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("TOLLGATE_SOAK_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TOLLGATE_SOAK_SEED: %v", err)
		}
		return n
	}
	n := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d (TOLLGATE_SOAK_SEED=%d replays it)", n, n)
	return n
}

// TestSoakLoad: N proxy replicas on one standalone Redis, configured by the
// shipped configuration and the environment only (REDIS_URL, provider URLs),
// under a mix of streams and non-streams on three endpoints, with 5% upstream
// failures (the mock fails every 20th request), 1% upstream stream cuts and
// 1% client hang-ups. Every account's ledger is then audited call by call.
func TestSoakLoad(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	cfg := writeConfig(t, nil) // the shipped file, as is
	runLoad(t, st, cfg, []string{"REDIS_URL=" + rs.URL()}, soakSize())
}

// TestSoakCluster: the same suite, unchanged, on a three-master Redis Cluster.
// The shipped file takes the cluster's seed list only as redis.addrs (there is
// no environment variable for a list), so the proxies get a copy of it with
// redis.addrs set and redis.url empty.
func TestSoakCluster(t *testing.T) {
	rc := testredis.StartCluster(t)
	cc := rc.Client(t)
	st := metering.New(cc, metering.Options{KeyCacheTTL: -1})
	cfg := writeConfig(t, map[string]any{"redis.addrs": rc.Addrs(), "redis.url": ""})
	runLoad(t, st, cfg, nil, soakSize())
}

// loadStats are the figures of one run.
type loadStats struct {
	ok, upstreamFailed, cut, hungUp, refused, other int
	charged                                         int64
	mismatches                                      int
}

func runLoad(t *testing.T, st *metering.Store, cfg string, env []string, size loadSize) {
	prices := loadPrices(t)
	setup := time.Now()
	mock := startMock(t, mockllm.Config{FailEvery: 20})
	var proxies []*proc
	for i := 0; i < size.replicas; i++ {
		proxies = append(proxies, startProxy(t, fmt.Sprintf("proxy-%d", i), cfg, procEnv(mock.URL, env...)))
	}
	// One account in ten is poor: it runs dry and is refused with 402
	// while calls on it are in flight on other replicas.
	accts := createAccounts(t, st, "load", size.accounts, func(i int) int64 {
		if i%10 == 9 {
			return 3_000
		}
		return 500_000
	})
	t.Logf("setup (%s): %s", size, time.Since(setup).Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(seed(t), 6))
	specs := make([]*callSpec, size.calls)
	for i := range specs {
		specs[i] = randomCall(rng, int64(i+1), accts[rng.IntN(len(accts))], proxies[i%len(proxies)].URL)
	}

	start := time.Now()
	results := make([]*callResult, len(specs))
	client := newClient(size.workers)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < size.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = specs[i].do(client)
			}
		}()
	}
	for i := range specs {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	client.CloseIdleConnections()
	// Calls that clients hung up on settle when the proxy notices.
	waitUnreserved(st, accts, 30*time.Second)

	auditStart := time.Now()
	stats, problems := auditLoad(t, st, prices, mock, accts, results, proxies)
	t.Logf("audit: %s", time.Since(auditStart).Round(time.Millisecond))
	for _, p := range proxies {
		p.assertAlive(t)
	}
	faults := stats.upstreamFailed + stats.cut + stats.hungUp
	summary := fmt.Sprintf("soak summary: calls=%d accounts=%d replicas=%d faults_injected=%d (upstream_5xx=%d stream_cuts=%d client_hangups=%d) "+
		"ok=%d refused_402=%d other=%d charged=%d mc ledger_mismatches=%d elapsed=%s (%.0f calls/s)",
		len(specs), len(accts), len(proxies), faults, stats.upstreamFailed, stats.cut, stats.hungUp,
		stats.ok, stats.refused, stats.other, stats.charged, stats.mismatches, elapsed.Round(time.Millisecond),
		float64(len(specs))/elapsed.Seconds())
	t.Log(summary)
	if fullSoak() {
		fmt.Println(summary)
	}
	for i, p := range problems {
		if i == 40 {
			t.Errorf("… and %d more problems", len(problems)-40)
			break
		}
		t.Error(p)
	}
	// The run must have exercised what it claims to.
	if stats.ok == 0 || stats.upstreamFailed == 0 || stats.hungUp == 0 || stats.cut == 0 {
		t.Errorf("the workload did not exercise every outcome: %+v", stats)
	}
}

// randomCall draws one call of the load mix.
func randomCall(rng *rand.Rand, tag int64, a *account, base string) *callSpec {
	c := &callSpec{tag: tag, account: a, base: base, stream: rng.IntN(2) == 0}
	switch r := rng.IntN(100); {
	case r < 70:
		c.ep = epChat
		c.model = []string{"gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1", "deepseek-chat", "gemini-flash", "claude-sonnet"}[rng.IntN(6)]
	case r < 85:
		c.ep = epResponses
		c.model = []string{"gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1"}[rng.IntN(3)]
	default:
		c.ep = epMessages
		c.model = []string{"claude-sonnet", "claude-opus"}[rng.IntN(2)]
	}
	if c.ep == epMessages || rng.IntN(100) < 85 {
		c.maxTokens = 1 + rng.IntN(48)
	}
	dirs := []string{"tokens=" + strconv.Itoa(1+rng.IntN(40))}
	if rng.IntN(5) == 0 {
		dirs = append(dirs, "cached=2")
	}
	if rng.IntN(10) == 0 {
		dirs = append(dirs, "reasoning=2")
	}
	switch r := rng.IntN(100); {
	case r < 1: // the client hangs up mid-stream: a long, paced stream
		c.stream, c.hangup = true, true
		if c.ep != epMessages {
			c.maxTokens = 0
		} else {
			c.maxTokens = 400
		}
		dirs = []string{"tokens=400", "rate=400"}
	case r < 2: // the provider cuts the stream
		c.stream = true
		dirs = append(dirs, "cut=2")
	}
	c.directives = strings.Join(dirs, ",")
	return c
}

// auditLoad checks every call against the ledger of its account and every
// account's invariant; it returns the figures and the problems found.
func auditLoad(t *testing.T, st *metering.Store, prices priceList, mock *mockUpstream, accts []*account, results []*callResult, proxies []*proc) (loadStats, []string) {
	var (
		stats    loadStats
		problems []string
	)
	bad := func(r *callResult, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("call-%d (%s %s %s stream=%v max=%d, %s, req %s, resp %s): %s", r.spec.tag, r.spec.account.id,
			r.spec.ep, r.spec.model, r.spec.stream, r.spec.maxTokens, r.spec.directives, r.reqID, r.respID, fmt.Sprintf(format, args...)))
	}
	byAcct := map[string][]*callResult{}
	for _, r := range results {
		byAcct[r.spec.account.id] = append(byAcct[r.spec.account.id], r)
	}
	seen, untagged := mock.snapshot()
	var forwardedTotal int64
	ctx := context.Background()
	for _, a := range accts {
		_, entries, inv := ledgerInvariant(st, a.id)
		problems = append(problems, inv...)
		refs := usageByRef(entries)
		known := map[string]bool{}
		for _, r := range byAcct[a.id] {
			if r.reqID != "" {
				known[r.reqID] = true
			}
			fwd := seen[r.spec.tag]
			forwardedTotal += int64(fwd)
			charges := refs[r.reqID]
			switch {
			case r.err != nil:
				stats.other++
				bad(r, "transport error: %v", r.err)
			case r.hungUp:
				stats.hungUp++
				if fwd != 1 {
					bad(r, "forwarded %d times", fwd)
				}
				g, err := st.Generation(ctx, a.id, r.reqID)
				if err != nil {
					bad(r, "hung-up call has no cost record: %v", err)
					continue
				}
				want := prices.cost(t, r.spec.model, usage{in: g.Input, cached: g.CachedInput, out: g.Output, cw: g.CacheWrite, cw1h: g.CacheWrite1h, ws: g.WebSearch})
				switch {
				case g.Failed && len(charges) != 0:
					bad(r, "failed call charged %v", amounts(charges))
				case g.Failed:
				case len(charges) != 1 || -charges[0].Amount != g.Charged:
					bad(r, "ledger %v for a record charged %d", amounts(charges), g.Charged)
				case g.Charged != want || g.Capped:
					bad(r, "charged %d for recorded usage %d/%d/%d priced %d (capped %v)", g.Charged, g.Input, g.CachedInput, g.Output, want, g.Capped)
				default:
					stats.charged += g.Charged
				}
			case r.status == http.StatusOK && r.cut:
				stats.cut++
				if len(charges) != 0 {
					bad(r, "stream cut by the provider was charged %v", amounts(charges))
				}
				if fwd != 1 {
					bad(r, "forwarded %d times", fwd)
				}
			case r.status == http.StatusOK:
				stats.ok++
				if fwd != 1 {
					bad(r, "forwarded %d times", fwd)
				}
				want, msgs := auditServed(t, prices, r, charges)
				for _, m := range msgs {
					bad(r, "%s", m)
				}
				stats.charged += want
			case r.status == http.StatusBadGateway:
				stats.upstreamFailed++
				if len(charges) != 0 {
					bad(r, "failed call charged %v", amounts(charges))
				}
				if fwd != 1 {
					var logs string
					if len(problems) < 20 {
						logs = logLines(proxies, r.reqID)
					}
					bad(r, "502 %s, forwarded %d times; proxy log: %s", r.code, fwd, logs)
				}
			case r.status == http.StatusPaymentRequired:
				stats.refused++
				if len(charges) != 0 {
					bad(r, "refused call charged %v", amounts(charges))
				}
				if fwd != 0 {
					bad(r, "a call refused with 402 was forwarded %d times", fwd)
				}
			default:
				stats.other++
				bad(r, "unexpected status %d (%s)", r.status, r.code)
			}
		}
		for ref, es := range refs {
			if !known[ref] {
				problems = append(problems, fmt.Sprintf("%s: ledger charges %v for %s, a call no client made", a.id, amounts(es), ref))
			}
		}
	}
	if untagged != 0 || forwardedTotal != mock.Requests() {
		problems = append(problems, fmt.Sprintf("the provider got %d requests, %d of them from the calls made (%d untagged)",
			mock.Requests(), forwardedTotal, untagged))
	}
	stats.mismatches = len(problems)
	return stats, problems
}

// auditServed checks a call answered 200 in full: the usage is this call's,
// the client was told the charge (header, trailer, usage.credits) and the
// ledger holds exactly one debit of usage × rate. It returns that figure.
func auditServed(t testing.TB, prices priceList, r *callResult, charges []metering.Entry) (int64, []string) {
	var msgs []string
	bad := func(format string, args ...any) { msgs = append(msgs, fmt.Sprintf(format, args...)) }
	if !r.terminal {
		bad("200 without the end of the stream and without an error event (%d events)", r.events)
		return 0, msgs
	}
	if !r.usage.seen {
		bad("no usage reported to the client")
		return 0, msgs
	}
	if exp, exact := r.spec.expectedUsage(); r.usage.in != exp.in || r.usage.cached != exp.cached ||
		r.usage.out > exp.out || (exact && r.spec.account.funded >= 500_000 && r.usage.out != exp.out) {
		bad("usage %+v is not this call's: want %+v", r.usage, exp)
	}
	want := prices.cost(t, r.spec.model, r.usage)
	if r.charged != want {
		bad("X-Credits-Charged %d mc, usage %+v priced %d", r.charged, r.usage, want)
	}
	if r.spec.ep == epChat && r.spec.stream && r.credits != want {
		bad("usage.credits %d mc, usage priced %d", r.credits, want)
	}
	if len(charges) != 1 || -charges[0].Amount != want {
		bad("ledger %v, usage priced %d", amounts(charges), want)
	}
	return want, msgs
}

func amounts(es []metering.Entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Amount
	}
	return out
}

// logLines returns the proxies' log lines that mention id.
func logLines(procs []*proc, id string) string {
	var out []string
	for _, p := range procs {
		for _, l := range strings.Split(p.fullLog(), "\n") {
			if id != "" && strings.Contains(l, id) {
				out = append(out, p.name+": "+l)
			}
		}
	}
	return strings.Join(out, "\n")
}
