package proxy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/pricing"
)

// Live is the part of a Server's configuration that Reload replaces while it
// serves: the price catalog, the providers and the limiter (plans).
type Live struct {
	Catalog   *pricing.Catalog // required
	Providers []Provider       // required: every provider the catalog names
	Limiter   Limiter          // optional plan/rate limits
}

// liveConf is one configuration as the handler uses it. It is immutable once
// built: Reload builds a new one and swaps it in whole. A call loads the
// current liveConf once, at its start, and uses that one to its end (its
// stream included), so a call in flight keeps the prices, providers and
// limits it started with while calls that start after a reload get the new
// ones.
type liveConf struct {
	catalog   *pricing.Catalog
	upstreams map[string]*upstream
	// models are the pre-rendered GET /v1/models and /v1/models/{id}
	// bodies, rendered again when a scheduled price comes into force (the
	// one part of a liveConf that changes: it caches what the catalog says).
	models  atomic.Pointer[modelBodies]
	limiter Limiter
	// breakers are each model's deployments' breakers, in the order of its
	// Deployments (breaker.go); the same breaker across reloads.
	breakers map[*pricing.Model][]*breaker
}

// buildRuntime checks live and builds its liveConf. An upstream whose provider
// is unchanged from prev is kept (with its connections); the others are new.
func (s *Server) buildRuntime(live Live, prev *liveConf) (*liveConf, error) {
	if live.Catalog == nil {
		return nil, errors.New("proxy: Catalog is required")
	}
	rt := &liveConf{catalog: live.Catalog, limiter: live.Limiter, upstreams: make(map[string]*upstream, len(live.Providers))}
	for _, p := range live.Providers {
		if _, dup := rt.upstreams[p.Name]; dup {
			return nil, fmt.Errorf("proxy: provider %q configured twice", p.Name)
		}
		if prev != nil {
			if u := prev.upstreams[p.Name]; u != nil && sameProvider(u.cfg, p) {
				rt.upstreams[p.Name] = u
				continue
			}
		}
		u, err := newUpstream(p, s.opts.Timeouts, s.opts.MaxResponseBytes)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		rt.upstreams[p.Name] = u
	}
	models := live.Catalog.Models()
	rt.breakers = make(map[*pricing.Model][]*breaker, len(models))
	for _, m := range models {
		brs := make([]*breaker, len(m.Deployments))
		for i, d := range m.Deployments {
			if _, ok := rt.upstreams[d.Provider]; !ok {
				return nil, fmt.Errorf("proxy: model %q names unknown provider %q", m.ID, d.Provider)
			}
			brs[i] = s.breakerFor(d)
		}
		rt.breakers[m] = brs
	}
	rt.models.Store(renderModels(live.Catalog, time.Now()))
	return rt, nil
}

func sameProvider(a, b Provider) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.BaseURL == b.BaseURL && a.NativeBaseURL == b.NativeBaseURL &&
		a.APIKey == b.APIKey && slices.Equal(a.APIKeys, b.APIKeys) && maps.Equal(a.Headers, b.Headers)
}

// Reload replaces the catalog, providers and limiter for calls that start
// from now on; calls in flight finish with those they started with. A live
// that does not build (a model naming an unknown provider, a bad base URL)
// is refused and the current configuration keeps serving.
func (s *Server) Reload(live Live) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	rt, err := s.buildRuntime(live, s.rt.Load())
	if err != nil {
		return err
	}
	s.rt.Store(rt)
	return nil
}

// servesNative reports whether one of m's deployments is on an Anthropic
// provider, which /v1/messages and /v1/messages/count_tokens need.
func (rt *liveConf) servesNative(m *pricing.Model) bool {
	for _, d := range m.Deployments {
		if rt.upstreams[d.Provider].kind == "anthropic" {
			return true
		}
	}
	return false
}

// nativeAfter reports whether an Anthropic deployment of m follows the i-th.
func (rt *liveConf) nativeAfter(m *pricing.Model, i int) bool {
	for _, d := range m.Deployments[i+1:] {
		if rt.upstreams[d.Provider].kind == "anthropic" {
			return true
		}
	}
	return false
}
