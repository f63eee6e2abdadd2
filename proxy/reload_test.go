package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// reloadedSpec is testSpec with every tier's rates multiplied by k.
func reloadedSpec(k int64) pricing.Spec {
	s := testSpec()
	tiers := map[string]pricing.TierSpec{}
	for name, t := range s.Tiers {
		t.Input, t.Output = pricing.Per1K(t.Input.CeilMilli()*k), pricing.Per1K(t.Output.CeilMilli()*k) // whole rates in testSpec
		tiers[name] = t
	}
	s.Tiers = tiers
	return s
}

func (e *env) reload(spec pricing.Spec) *pricing.Catalog {
	e.t.Helper()
	cat, err := pricing.New(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.srv.Reload(proxy.Live{Catalog: cat, Providers: e.opts.Providers, Limiter: e.opts.Limiter}); err != nil {
		e.t.Fatal(err)
	}
	return cat
}

// TestReloadPricesInFlight changes the prices while streams are open: each
// stream is charged at the prices it started with, every call started after
// the reload at the new ones, and the ledger balances.
func TestReloadPricesInFlight(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("reload", 1000)
	oldCat := e.catalog
	const streams = 8
	type open struct {
		id   string
		resp *http.Response
		br   *bufio.Reader
	}
	opened := make([]open, streams)
	for i := range opened {
		body := `{"model":"gpt-4o-mini","stream":true,"max_tokens":64,"messages":` + msg(fmt.Sprintf("stream %d [mock:tokens=20,rate=40]", i)) + `}`
		req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: status %d", i, resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil { // the first event: the call is past its start
			t.Fatal(err)
		}
		opened[i] = open{id: resp.Header.Get("X-Request-Id"), resp: resp, br: br}
	}
	newCat := e.reload(reloadedSpec(10))

	// New calls, while the old streams still run, pay the new prices.
	var newIDs []string
	for i := 0; i < 4; i++ {
		r := e.post("/v1/chat/completions", key, `{"model":"gpt-4o-mini","max_tokens":16,"messages":`+msg(fmt.Sprintf("after %d [mock:tokens=5]", i))+`}`)
		if r.status != 200 {
			t.Fatalf("call after reload: %d %s", r.status, r.body)
		}
		newIDs = append(newIDs, r.header.Get("X-Request-Id"))
	}
	for _, o := range opened {
		for {
			if _, err := o.br.ReadString('\n'); err != nil {
				break
			}
		}
		o.resp.Body.Close()
	}
	e.sync()
	check := func(id string, cat *pricing.Catalog, name string) {
		t.Helper()
		g, err := e.store.Generation(context.Background(), "reload", id)
		if err != nil {
			t.Fatalf("%s %s: %v", name, id, err)
		}
		m, _ := cat.Lookup("gpt-4o-mini")
		want := m.Cost(pricing.Usage{Input: g.Input, CachedInput: g.CachedInput, Output: g.Output, CacheWrite: g.CacheWrite, CacheWrite1h: g.CacheWrite1h}, g.CreatedAt)
		if g.Charged != want || want == 0 || g.Failed {
			t.Errorf("%s %s: charged %d, want %d at the %s prices (record %+v)", name, id, g.Charged, want, name, g)
		}
	}
	for _, o := range opened {
		check(o.id, oldCat, "old")
	}
	for _, id := range newIDs {
		check(id, newCat, "new")
	}
	testledger.Assert(t, e.store, "reload")
	e.assertLedger("reload")
}

// TestReloadUnderLoad reloads prices again and again while many goroutines
// call: no call fails, every call is charged at one of the configurations
// (the one it started with), and the ledger balances.
func TestReloadUnderLoad(t *testing.T) {
	e := newEnv(t, envOpts{})
	const workers, calls = 16, 12
	keys := make([]string, workers)
	for i := range keys {
		keys[i] = e.account(fmt.Sprintf("load%d", i), 1000)
	}
	cats := []*pricing.Catalog{e.catalog}
	for k := int64(2); k <= 4; k++ {
		c, err := pricing.New(reloadedSpec(k))
		if err != nil {
			t.Fatal(err)
		}
		cats = append(cats, c)
	}
	var stop atomic.Bool
	var reloads sync.WaitGroup
	reloads.Add(1)
	go func() {
		defer reloads.Done()
		for i := 1; !stop.Load(); i++ {
			if err := e.srv.Reload(proxy.Live{Catalog: cats[i%len(cats)], Providers: e.opts.Providers}); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	ids := make([][]string, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				stream := i%2 == 0
				body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%t,"max_tokens":32,"messages":%s}`, stream, msg(fmt.Sprintf("w%d c%d [mock:tokens=8]", w, i)))
				req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keys[w])
				resp, err := e.client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("w%d c%d: status %d", w, i, resp.StatusCode)
				}
				ids[w] = append(ids[w], resp.Header.Get("X-Request-Id"))
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	reloads.Wait()
	e.sync()
	for w := range ids {
		acct := fmt.Sprintf("load%d", w)
		for _, id := range ids[w] {
			g, err := e.store.Generation(context.Background(), acct, id)
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			u := pricing.Usage{Input: g.Input, CachedInput: g.CachedInput, Output: g.Output}
			ok := false
			for _, c := range cats {
				m, _ := c.Lookup("gpt-4o-mini")
				ok = ok || m.Cost(u, g.CreatedAt) == g.Charged
			}
			if !ok || g.Charged == 0 {
				t.Errorf("%s charged %d: no configuration's price for %+v", id, g.Charged, u)
			}
		}
		testledger.Assert(t, e.store, acct)
		e.assertLedger(acct)
	}
}

// TestReloadRefusesBadLive keeps the current configuration when a reload
// names a provider it lacks.
func TestReloadRefusesBadLive(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("bad", 10)
	cat, err := pricing.New(reloadedSpec(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reload(proxy.Live{Catalog: cat, Providers: e.opts.Providers[:1]}); err == nil {
		t.Fatal("a catalog naming a provider the reload lacks was accepted")
	}
	r := e.post("/v1/chat/completions", key, `{"model":"gpt-4o-mini","max_tokens":16,"messages":`+msg("still [mock:tokens=4]")+`}`)
	if r.status != 200 {
		t.Fatalf("after a refused reload: %d %s", r.status, r.body)
	}
	m, _ := e.catalog.Lookup("gpt-4o-mini")
	e.sync()
	g, err := e.store.Generation(context.Background(), "bad", r.header.Get("X-Request-Id"))
	if err != nil {
		t.Fatal(err)
	}
	if want := m.Cost(pricing.Usage{Input: g.Input, Output: g.Output}, g.CreatedAt); g.Charged != want {
		t.Errorf("charged %d, want %d at the prices still in force", g.Charged, want)
	}
}
