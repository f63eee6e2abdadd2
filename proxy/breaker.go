package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/pricing"
)

// Breaker configures the circuit breaker each deployment (a provider and
// the provider's model name) has. Zero values mean the documented defaults.
type Breaker struct {
	// Failures is how many consecutive failed calls (connect errors,
	// timeouts, 429 and 5xx answers) open a deployment's breaker. Default 5.
	Failures int
	// CoolDown is how long an open deployment is skipped while a fallback
	// exists; after it one call probes it (half-open): a success closes the
	// breaker, a failure opens it for another cool-down. Default 30s.
	CoolDown time.Duration
}

func (b *Breaker) init() {
	if b.Failures <= 0 {
		b.Failures = 5
	}
	if b.CoolDown <= 0 {
		b.CoolDown = 30 * time.Second
	}
}

// Breaker states, as BreakerObserver is told them.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

// BreakerObserver is told of each state change of a deployment's breaker.
// An Observer that also implements it (telemetry does) gets the changes.
type BreakerObserver interface {
	BreakerChanged(provider, model, from, to string)
}

const (
	stClosed uint32 = iota
	stOpen
	stHalfOpen
)

var stateNames = [...]string{stClosed: BreakerClosed, stOpen: BreakerOpen, stHalfOpen: BreakerHalfOpen}

// breaker is one deployment's circuit breaker. Closed, a call costs two
// atomic loads (and a store after a failure streak): no lock, no
// allocation. The half-open probe is leased for one cool-down: a probe that
// never reports (its caller went away) does not keep the deployment shut.
type breaker struct {
	provider, model string
	s               *Server
	state           atomic.Uint32
	fails           atomic.Int64 // consecutive failures while closed
	mu              sync.Mutex   // transitions
	until           time.Time    // open: end of the cool-down; half-open: end of the probe's lease
}

// allow reports whether a call may go to the deployment now. Past an open
// breaker's cool-down the first caller gets the probe.
func (b *breaker) allow() bool {
	if b.state.Load() == stClosed {
		return true
	}
	now := b.s.now()
	b.mu.Lock()
	st := b.state.Load()
	ok := st == stClosed || !now.Before(b.until)
	if ok && st != stClosed {
		b.until = now.Add(b.s.opts.Breaker.CoolDown) // the probe's lease
		b.state.Store(stHalfOpen)
		if st == stOpen { // under the lock: changes reach the metric in order
			b.s.breakerChanged(b, stOpen, stHalfOpen)
		}
	}
	b.mu.Unlock()
	return ok
}

// report records the outcome of a call the deployment answered (or failed).
func (b *breaker) report(ok bool) {
	st := b.state.Load()
	if st == stClosed {
		if ok {
			if b.fails.Load() != 0 {
				b.fails.Store(0)
			}
			return
		}
		if b.fails.Add(1) < int64(b.s.opts.Breaker.Failures) {
			return
		}
	}
	now := b.s.now()
	b.mu.Lock()
	from := b.state.Load()
	to := from
	switch {
	case from == stClosed && !ok && b.fails.Load() >= int64(b.s.opts.Breaker.Failures):
		to = stOpen
	case from == stHalfOpen && ok:
		to = stClosed
	case from == stHalfOpen:
		to = stOpen
	}
	if to != from {
		b.fails.Store(0)
		if to == stOpen {
			b.until = now.Add(b.s.opts.Breaker.CoolDown)
		}
		b.state.Store(to)
		b.s.breakerChanged(b, from, to) // under the lock: changes reach the metric in order
	}
	b.mu.Unlock()
}

// breakerFor returns the breaker of a deployment, the same one across
// reloads (its state survives them).
func (s *Server) breakerFor(d pricing.Deployment) *breaker {
	s.breakersMu.Lock()
	defer s.breakersMu.Unlock()
	k := d.Provider + "\x00" + d.Model
	b := s.breakers[k]
	if b == nil {
		b = &breaker{provider: d.Provider, model: d.Model, s: s}
		if s.breakers == nil {
			s.breakers = make(map[string]*breaker)
		}
		s.breakers[k] = b
	}
	return b
}

// breakerChanged logs a state change and tells the Observer.
func (s *Server) breakerChanged(b *breaker, from, to uint32) {
	f, t := stateNames[from], stateNames[to]
	s.log.Warn("deployment breaker", zap.String("provider", b.provider), zap.String("model", b.model),
		zap.String("from", f), zap.String("to", t))
	if o, ok := s.opts.Observer.(BreakerObserver); ok {
		o.BreakerChanged(b.provider, b.model, f, t)
	}
}

// BreakerState returns the state of the breaker of provider's model
// (closed for a deployment that has none yet): for tests and status pages.
func (s *Server) BreakerState(provider, model string) string {
	s.breakersMu.Lock()
	b := s.breakers[provider+"\x00"+model]
	s.breakersMu.Unlock()
	if b == nil {
		return BreakerClosed
	}
	return stateNames[b.state.Load()]
}
