package soak

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// openStreams starts specs concurrently and returns once each has received
// two events (or failed); the calls go on in the background and their
// results arrive when they end.
func openStreams(t *testing.T, client *http.Client, specs []*callSpec, within time.Duration) (wait func() []*callResult) {
	t.Helper()
	var (
		opened  sync.WaitGroup
		ended   sync.WaitGroup
		results = make([]*callResult, len(specs))
	)
	for i, c := range specs {
		opened.Add(1)
		ended.Add(1)
		once := sync.Once{}
		c.opened = func() { once.Do(opened.Done) }
		go func() {
			defer ended.Done()
			results[i] = c.do(client)
			once.Do(opened.Done) // failed before opening
		}()
	}
	done := make(chan struct{})
	go func() { opened.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("%d streams did not open within %s", len(specs), within)
	}
	return func() []*callResult { ended.Wait(); return results }
}

// TestFaultProxySIGKILL kills a proxy (SIGKILL: no drain, no settle) while
// 200 streams are open on it. Their holds stay reserved — nobody releases
// them — until the hold TTL passes; then the next reserve on each account
// (a call through the surviving replica) drops them, and every balance is
// exact: nothing was charged for the killed calls.
func TestFaultProxySIGKILL(t *testing.T) {
	// Per-call holds, and the credit leases the gateway runs by default (one
	// lease per account, renewed while its calls run).
	for _, lease := range []bool{false, true} {
		name := map[bool]string{false: "per-call", true: "lease"}[lease]
		t.Run(name, func(t *testing.T) { proxySIGKILL(t, lease) })
	}
}

func proxySIGKILL(t *testing.T, lease bool) {
	const (
		holdTTL  = 10 * time.Second // stream_timeout + config.HoldMargin
		accounts = 20
		perAcct  = 10
	)
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	prices := loadPrices(t)
	mock := startMock(t, mockllm.Config{})
	cfg := writeConfig(t, map[string]any{
		"proxy.hold_ttl": holdTTL.String(), "proxy.stream_timeout": "5s", "proxy.request_timeout": "5s",
		"proxy.credit_lease": lease,
	})
	env := procEnv(mock.URL, "REDIS_URL="+rs.URL())
	victim := startProxy(t, "victim", cfg, env)
	survivor := startProxy(t, "survivor", cfg, env)
	accts := createAccounts(t, st, "kill", accounts, func(int) int64 { return 100_000 })

	var specs []*callSpec
	for i := 0; i < accounts*perAcct; i++ {
		// 1,000 tokens at 20 a second: 50 s, far longer than the test.
		specs = append(specs, &callSpec{tag: int64(i + 1), account: accts[i%accounts], base: victim.URL, ep: epChat,
			model: "gpt-4o-mini", stream: true, maxTokens: 1000, directives: "tokens=1000,rate=20"})
	}
	client := newClient(len(specs))
	openedFrom := time.Now()
	wait := openStreams(t, client, specs, 30*time.Second)
	openedTo := time.Now()

	// Every stream holds credits, with an expiry of about its start + TTL
	// (a lease: of its last renewal + TTL).
	var holds int
	for _, a := range accts {
		hs, err := holdExpiries(st.Client(), a.id)
		if err != nil {
			t.Fatal(err)
		}
		holds += len(hs)
		for id, exp := range hs {
			at := time.UnixMilli(exp)
			latest := openedTo
			if lease {
				latest = time.Now()
			}
			if at.Before(openedFrom.Add(holdTTL-time.Second)) || at.After(latest.Add(holdTTL+time.Second)) {
				t.Errorf("%s: hold %s expires at %s, want about %s after it was placed (%s…%s)", a.id, id,
					at.Format(time.StampMilli), holdTTL, openedFrom.Format(time.StampMilli), openedTo.Format(time.StampMilli))
			}
		}
	}
	if want := map[bool]int{false: len(specs), true: accounts}[lease]; holds != want {
		t.Fatalf("%d holds for %d open streams on %d accounts, want %d", holds, len(specs), accounts, want)
	}

	victim.signal(syscall.SIGKILL)
	killed := time.Now()
	if err, ok := victim.waitExit(5 * time.Second); !ok {
		t.Fatal("the proxy survived SIGKILL")
	} else if err == nil {
		t.Fatal("the proxy exited 0 after SIGKILL")
	}
	results := wait()
	for _, r := range results {
		if r.err == nil && r.terminal {
			t.Errorf("call-%d completed although its proxy was killed", r.spec.tag)
		}
	}
	// Before the TTL the holds are still there: a reserve now frees nothing.
	for _, a := range accts {
		if err := sweep(st, a.id); err != nil {
			t.Fatal(err)
		}
		if ac, _ := st.Account(context.Background(), a.id); ac.Reserved == 0 && time.Since(killed) < holdTTL/2 {
			t.Errorf("%s: holds of the killed proxy vanished before their TTL", a.id)
		}
	}

	// After the TTL, the next reserve on each account — a call through the
	// surviving replica — drops the dead holds.
	expiry := openedTo
	if lease {
		expiry = killed // a lease is renewed while its calls run
	}
	time.Sleep(time.Until(expiry.Add(holdTTL + 300*time.Millisecond)))
	var after []*callResult
	for i, a := range accts {
		c := &callSpec{tag: 10_000 + int64(i), account: a, base: survivor.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8, directives: "tokens=8"}
		after = append(after, c.do(client))
	}
	client.CloseIdleConnections()
	freed := time.Since(killed)

	seen, _ := mock.snapshot()
	var problems []string
	for _, r := range results {
		if seen[r.spec.tag] != 1 {
			problems = append(problems, fmt.Sprintf("call-%d forwarded %d times", r.spec.tag, seen[r.spec.tag]))
		}
	}
	charged := map[string]int64{}
	for _, r := range after {
		if r.status != http.StatusOK {
			problems = append(problems, fmt.Sprintf("%s: call through the survivor: %d %s %v", r.spec.account.id, r.status, r.code, r.err))
			continue
		}
		_, entries, _ := ledgerInvariant(st, r.spec.account.id)
		want, msgs := auditServed(t, prices, r, usageByRef(entries)[r.reqID])
		for _, m := range msgs {
			problems = append(problems, fmt.Sprintf("%s: %s", r.spec.account.id, m))
		}
		charged[r.spec.account.id] += want
	}
	for _, a := range accts {
		ac, entries, inv := ledgerInvariant(st, a.id)
		problems = append(problems, inv...)
		if ac.Balance != a.funded-charged[a.id] {
			problems = append(problems, fmt.Sprintf("%s: balance %d, want %d funded − %d charged since", a.id, ac.Balance, a.funded, charged[a.id]))
		}
		if n := len(usageByRef(entries)); n != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d usage entries, want only the survivor's call", a.id, n))
		}
	}
	t.Logf("SIGKILL: streams_open=%d holds=%d freed_after=%s (hold_ttl %s) ledger_mismatches=%d",
		len(specs), holds, freed.Round(time.Millisecond), holdTTL, len(problems))
	for _, p := range problems {
		t.Error(p)
	}
}

// TestFaultProxySIGTERM stops a proxy with SIGTERM while calls are in
// flight: short streams and non-streaming calls that end within
// proxy.drain_timeout, and long streams that do not. The proxy must answer
// /readyz 503 and refuse new calls (503) at once, let the short calls finish and charge them exactly, cut
// the long streams at the drain deadline and charge each for what was
// generated, leave no hold behind, and exit 0.
func TestFaultProxySIGTERM(t *testing.T) {
	const drain = 3 * time.Second
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	prices := loadPrices(t)
	mock := startMock(t, mockllm.Config{})
	// A long hold TTL: a hold the drain forgot would still be reserved at the end.
	cfg := writeConfig(t, map[string]any{"proxy.drain_timeout": drain.String(), "proxy.hold_ttl": "10m",
		"proxy.stream_timeout": "5m", "proxy.request_timeout": "5m"})
	p := startProxy(t, "proxy", cfg, procEnv(mock.URL, "REDIS_URL="+rs.URL()))
	accts := createAccounts(t, st, "term", 10, func(int) int64 { return 100_000 })

	var streams, plain []*callSpec
	tag := int64(0)
	for i := 0; i < 30; i++ {
		tag++
		c := &callSpec{tag: tag, account: accts[i%10], base: p.URL, ep: epChat, model: "gpt-4o-mini", stream: true, maxTokens: 400}
		if i < 20 {
			c.directives = "tokens=20,rate=20" // ~1 s: ends within the drain
		} else {
			c.directives = "tokens=400,rate=20" // ~20 s: cut at the drain deadline
		}
		streams = append(streams, c)
	}
	for i := 0; i < 10; i++ {
		tag++
		plain = append(plain, &callSpec{tag: tag, account: accts[i], base: p.URL, ep: epChat, model: "gpt-4.1-mini",
			maxTokens: 16, directives: "tokens=12,delay=1500ms"})
	}
	client := newClient(64)
	wait := openStreams(t, client, streams, 20*time.Second)
	plainRes := make([]*callResult, len(plain))
	var wg sync.WaitGroup
	for i, c := range plain {
		wg.Add(1)
		go func() { defer wg.Done(); plainRes[i] = c.do(client) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range plain {
		for mock.forwarded(c.tag) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}

	p.signal(syscall.SIGTERM)
	termAt := time.Now()
	// Draining: it still answers, /readyz with 503 (the load balancer takes
	// it out) and a new call with 503 draining, uncharged, while the calls
	// in flight finish.
	var readyStatus int
	for {
		resp, err := client.Get(p.URL + "/readyz")
		if err != nil {
			t.Fatalf("/readyz during the drain: %v", err)
		}
		resp.Body.Close()
		if readyStatus = resp.StatusCode; readyStatus == http.StatusServiceUnavailable || time.Since(termAt) > 2*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	refusedAfter := time.Since(termAt)
	if readyStatus != http.StatusServiceUnavailable {
		t.Errorf("/readyz answered %d 2s after SIGTERM; want 503 while draining", readyStatus)
	}
	late := (&callSpec{tag: 999, account: accts[0], base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8}).do(client)
	if late.status != http.StatusServiceUnavailable {
		t.Errorf("a call after SIGTERM was answered %d (%s) %v; want 503 while draining", late.status, late.code, late.err)
	}

	exitErr, exited := p.waitExit(drain + 10*time.Second)
	exitAfter := time.Since(termAt)
	if !exited {
		t.Fatalf("the proxy did not exit within %s of SIGTERM (drain_timeout %s)", exitAfter, drain)
	}
	var ee *exec.ExitError
	if exitErr != nil {
		if errors.As(exitErr, &ee) {
			t.Errorf("exit code %d after SIGTERM, want 0\n%s", ee.ExitCode(), p.log())
		} else {
			t.Errorf("exit: %v", exitErr)
		}
	}
	if exitAfter > drain+5*time.Second {
		t.Errorf("exited %s after SIGTERM: the drain took far longer than drain_timeout %s", exitAfter, drain)
	}
	wg.Wait()
	results := append(wait(), plainRes...)
	client.CloseIdleConnections()

	var problems []string
	bad := func(r *callResult, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("call-%d (%s, %s): %s", r.spec.tag, r.spec.directives, r.reqID, fmt.Sprintf(format, args...)))
	}
	var finished, cut int
	ctx := context.Background()
	for _, r := range results {
		_, entries, _ := ledgerInvariant(st, r.spec.account.id)
		charges := usageByRef(entries)[r.reqID]
		switch {
		case r.status != http.StatusOK:
			bad(r, "status %d (%s) %v", r.status, r.code, r.err)
		case r.spec.directives == "tokens=400,rate=20":
			// Cut at the deadline: charged for what was generated, and told so.
			cut++
			if r.terminal {
				bad(r, "a 20 s stream completed within a %s drain", drain)
			}
			g, err := st.Generation(ctx, r.spec.account.id, r.reqID)
			if err != nil {
				bad(r, "no cost record: %v", err)
				continue
			}
			want := prices.cost(t, r.spec.model, usage{in: g.Input, cached: g.CachedInput, out: g.Output, cw: g.CacheWrite, cw1h: g.CacheWrite1h, ws: g.WebSearch})
			if g.Failed || !g.Cancelled || g.Reason != "gateway_shutdown" || g.Charged != want || g.Charged == 0 {
				bad(r, "record %+v, usage priced %d", g, want)
			}
			if len(charges) != 1 || -charges[0].Amount != g.Charged || r.charged != g.Charged {
				bad(r, "ledger %v, trailer %d, record %d", amounts(charges), r.charged, g.Charged)
			}
		default:
			finished++
			_, msgs := auditServed(t, prices, r, charges)
			for _, m := range msgs {
				bad(r, "%s", m)
			}
		}
	}
	for _, a := range accts {
		_, _, inv := ledgerInvariant(st, a.id) // reserved must be 0: no hold left behind
		problems = append(problems, inv...)
	}
	t.Logf("SIGTERM: in_flight=%d finished=%d cut_at_deadline=%d not_ready_after=%s exited_after=%s (drain_timeout %s) ledger_mismatches=%d",
		len(results), finished, cut, refusedAfter.Round(time.Millisecond), exitAfter.Round(time.Millisecond), drain, len(problems))
	for _, p := range problems {
		t.Error(p)
	}
}

// TestFaultProxySIGHUP changes the prices with SIGHUP (systemctl reload)
// while calls run: the proxy keeps serving (no failed call), streams opened
// before the reload are charged at the old prices, calls started after it at
// the new ones, every ledger is exact; then a bad file is refused with every
// problem listed and the new prices keep serving.
func TestFaultProxySIGHUP(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	oldPrices := loadPrices(t)
	mock := startMock(t, mockllm.Config{})
	cfg := writeConfig(t, nil)
	p := startProxy(t, "proxy", cfg, procEnv(mock.URL, "REDIS_URL="+rs.URL(), "TOLLGATE_LOG_LEVEL=info"))
	accts := createAccounts(t, st, "hup", 8, func(int) int64 { return 500_000 })
	client := newClient(64)
	var tagMu sync.Mutex
	tag := int64(0)
	next := func() int64 { tagMu.Lock(); defer tagMu.Unlock(); tag++; return tag }

	// Streams of ~1 s, opened before the reload.
	var streams []*callSpec
	for i := 0; i < 16; i++ {
		streams = append(streams, &callSpec{tag: next(), account: accts[i%len(accts)], base: p.URL, ep: epChat, model: "gpt-4o-mini",
			stream: true, maxTokens: 64, directives: "tokens=20,rate=20"})
	}
	wait := openStreams(t, client, streams, 20*time.Second)

	// Load across the reload: short calls, each worker in turn.
	var (
		mu      sync.Mutex
		loadRes []*callResult
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				n := next()
				c := &callSpec{tag: n, account: accts[w], base: p.URL, ep: epChat, model: "gpt-4o-mini", stream: n%2 == 0, maxTokens: 16, directives: "tokens=6"}
				r := c.do(client)
				mu.Lock()
				loadRes = append(loadRes, r)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	newCore := map[string]any{"input": 5, "output": 9, "cache_write": 7, "cache_write_1h": 10}
	writeConfigTo(t, cfg, map[string]any{"pricing.tiers.core": newCore})
	p.signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.fullLog(), "configuration reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged within 10s of SIGHUP\n%s", p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	reloadedAt := time.Now()
	time.Sleep(300 * time.Millisecond)
	// Calls started now, while the old streams may still run.
	var after []*callSpec
	for i := 0; i < 8; i++ {
		after = append(after, &callSpec{tag: next(), account: accts[i], base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 16, directives: "tokens=7"})
	}
	afterRes := make([]*callResult, len(after))
	for i, c := range after {
		afterRes[i] = c.do(client)
	}
	stop.Store(true)
	wg.Wait()
	streamRes := wait()
	p.assertAlive(t)

	newPrices := priceList{tiers: map[string]card{}, models: map[string]card{}}
	for k, v := range oldPrices.models {
		newPrices.models[k] = v
	}
	newPrices.models["gpt-4o-mini"] = card{rates: rates{in: 5 * nano, cached: 5 * nano, out: 9 * nano, cw: 7 * nano, cw1h: 10 * nano}} // unstated cache reads: at input
	waitUnreserved(st, accts, 10*time.Second)
	charges := map[string][]metering.Entry{}
	for _, a := range accts {
		_, entries, problems := ledgerInvariant(st, a.id)
		for _, pr := range problems {
			// ledgerInvariant prices every entry at the shipped prices; a
			// call at the reloaded ones is checked by each call's audit below.
			if !strings.Contains(pr, "its usage prices at") {
				t.Error(pr)
			}
		}
		for ref, es := range usageByRef(entries) {
			charges[ref] = es
		}
	}
	check := func(what string, r *callResult, prices priceList) {
		t.Helper()
		if r.status != http.StatusOK {
			t.Errorf("%s call-%d: status %d (%s) %v", what, r.spec.tag, r.status, r.code, r.err)
			return
		}
		_, msgs := auditServed(t, prices, r, charges[r.reqID])
		for _, m := range msgs {
			t.Errorf("%s call-%d (%s): %s", what, r.spec.tag, r.reqID, m)
		}
	}
	for _, r := range streamRes {
		check("stream opened before the reload", r, oldPrices)
	}
	for _, r := range afterRes {
		check("call after the reload", r, newPrices)
	}
	var oldN, newN int
	for _, r := range loadRes {
		if r.status != http.StatusOK {
			t.Errorf("call-%d during the reload: status %d (%s) %v", r.spec.tag, r.status, r.code, r.err)
			continue
		}
		switch {
		case r.charged == oldPrices.cost(t, "gpt-4o-mini", r.usage):
			oldN++
		case r.charged == newPrices.cost(t, "gpt-4o-mini", r.usage):
			newN++
			if r.start.Before(reloadedAt.Add(-10 * time.Second)) {
				t.Errorf("call-%d started long before the reload was charged the new price", r.spec.tag)
			}
		default:
			t.Errorf("call-%d charged %d: neither price for %+v", r.spec.tag, r.charged, r.usage)
		}
		if r.start.After(reloadedAt) && r.charged != newPrices.cost(t, "gpt-4o-mini", r.usage) {
			t.Errorf("call-%d started after the reload was charged %d, not the new price", r.spec.tag, r.charged)
		}
	}
	t.Logf("SIGHUP under load: %d streams at the old prices, %d calls after at the new; load %d at old, %d at new", len(streamRes), len(afterRes), oldN, newN)

	// A bad file: refused with every problem, the new prices keep serving.
	writeConfigTo(t, cfg, map[string]any{"pricing.tiers.core": newCore, "proxy.drain_timeout": "soon", "proxy.bogus_key": 1, "log.level": "loud"})
	p.signal(syscall.SIGHUP)
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(p.fullLog(), "configuration refused") {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal logged within 10s of SIGHUP\n%s", p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	lg := p.fullLog()
	for _, want := range []string{"proxy.drain_timeout", "proxy.bogus_key", "log.level"} {
		if !strings.Contains(lg[strings.LastIndex(lg, "configuration refused"):], want) {
			t.Errorf("the refusal does not name %s:\n%s", want, lg[strings.LastIndex(lg, "configuration refused"):])
		}
	}
	r := (&callSpec{tag: next(), account: accts[0], base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 16, directives: "tokens=7"}).do(client)
	if r.status != 200 || r.charged != newPrices.cost(t, "gpt-4o-mini", r.usage) {
		t.Errorf("after a refused reload: %+v; want served at the prices in force", r)
	}
	p.assertAlive(t)
}
