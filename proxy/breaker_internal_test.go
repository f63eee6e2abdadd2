package proxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/pricing"
)

// transitions counts the breaker changes a BreakerObserver is told.
type transitions struct {
	mu sync.Mutex
	n  map[[2]string]int
}

func (o *transitions) CallEnded(CallEvent)           {}
func (o *transitions) UpstreamFailed(string, string) {}
func (o *transitions) BreakerChanged(_, _, from, to string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[[2]string{from, to}]++
}

func (o *transitions) count(from, to string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[[2]string{from, to}]
}

// Many goroutines failing at once open a breaker once; past the cool-down
// exactly one of many concurrent callers gets the probe; its success closes
// the breaker once.
func TestBreakerConcurrent(t *testing.T) {
	obs := &transitions{n: map[[2]string]int{}}
	var clock atomic.Int64
	s := &Server{log: zap.NewNop(), opts: Options{Observer: obs, Breaker: Breaker{Failures: 5, CoolDown: time.Minute}},
		now: func() time.Time { return time.Unix(0, clock.Load()) }}
	b := s.breakerFor(pricing.Deployment{Provider: "p", Model: "m"})
	if s.breakerFor(pricing.Deployment{Provider: "p", Model: "m"}) != b {
		t.Fatal("a deployment got two breakers")
	}
	const workers = 64
	run := func(f func()) {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() { defer wg.Done(); f() }()
		}
		wg.Wait()
	}
	run(func() {
		for range 50 {
			if b.allow() {
				b.report(false)
			}
		}
	})
	if st := s.BreakerState("p", "m"); st != BreakerOpen || obs.count(BreakerClosed, BreakerOpen) != 1 {
		t.Fatalf("state %s, opened %d times; want open, once", st, obs.count(BreakerClosed, BreakerOpen))
	}
	var allowed atomic.Int64
	run(func() {
		if b.allow() {
			allowed.Add(1)
		}
	})
	if allowed.Load() != 0 {
		t.Fatalf("%d calls allowed during the cool-down", allowed.Load())
	}
	clock.Add(int64(time.Minute))
	run(func() {
		if b.allow() {
			allowed.Add(1)
		}
	})
	if allowed.Load() != 1 || obs.count(BreakerOpen, BreakerHalfOpen) != 1 {
		t.Fatalf("%d probes after the cool-down (half-open %d times), want 1", allowed.Load(), obs.count(BreakerOpen, BreakerHalfOpen))
	}
	run(func() { b.report(true) })
	if st := s.BreakerState("p", "m"); st != BreakerClosed || obs.count(BreakerHalfOpen, BreakerClosed) != 1 {
		t.Fatalf("state %s after the probe succeeded (closed %d times)", st, obs.count(BreakerHalfOpen, BreakerClosed))
	}
	// A probe that never reports holds the deployment for one cool-down only.
	run(func() {
		for range 10 {
			b.report(false)
		}
	})
	clock.Add(int64(time.Minute))
	if !b.allow() || b.allow() {
		t.Fatal("want one probe")
	}
	clock.Add(int64(time.Minute))
	if !b.allow() {
		t.Fatal("a probe that never reported keeps the deployment shut past its lease")
	}
}

// The backoff doubles up to its cap, each wait between half of it and all.
func TestRetryWait(t *testing.T) {
	r := Retry{Attempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	r.init()
	for n, full := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		full *= time.Millisecond
		for range 200 {
			if w := r.wait(n); w < full/2 || w > full {
				t.Fatalf("wait(%d) = %s, want within [%s, %s]", n, w, full/2, full)
			}
		}
	}
	if w := r.wait(200); w < r.MaxBackoff/2 || w > r.MaxBackoff {
		t.Fatalf("wait(200) = %s", w)
	}
}

// A provider's Retry-After lengthens the wait, never past MaxBackoff.
func TestHonourRetryAfter(t *testing.T) {
	r := Retry{Backoff: 100 * time.Millisecond, MaxBackoff: 3 * time.Second}
	r.init()
	for _, tc := range []struct {
		header     string
		wait, want time.Duration
	}{
		{"", 150 * time.Millisecond, 150 * time.Millisecond},
		{"2", 150 * time.Millisecond, 2 * time.Second},
		{"60", 150 * time.Millisecond, 3 * time.Second},
		{"0", 150 * time.Millisecond, 150 * time.Millisecond},
		{"-1", 150 * time.Millisecond, 150 * time.Millisecond},
		{"Wed, 21 Oct 2015 07:28:00 GMT", 150 * time.Millisecond, 150 * time.Millisecond},
		{"1", 2 * time.Second, 2 * time.Second},
	} {
		if got := r.honourRetryAfter(tc.wait, []byte(tc.header)); got != tc.want {
			t.Errorf("Retry-After %q, wait %s: %s, want %s", tc.header, tc.wait, got, tc.want)
		}
	}
}
