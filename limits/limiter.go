package limits

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// Store is what the limiter needs of the ledger; *metering.Store implements it.
type Store interface {
	Admit(ctx context.Context, account string) (metering.Admission, bool, error)
}

// Options configure a Limiter. Zero values mean the documented defaults.
type Options struct {
	// Plans are the configured plans (config.Config.Plans).
	Plans []config.Plan
	// CacheTTL is how long an account found without a live subscription is
	// admitted without asking Redis: a new subscription's limits apply at most
	// this late. Default 1s; negative disables the cache.
	CacheTTL time.Duration
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

func (o *Options) init() {
	if o.CacheTTL == 0 {
		o.CacheTTL = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Limiter admits calls against the accounts' plans. It implements proxy.Limiter.
type Limiter struct {
	store Store
	opts  Options

	mu    sync.RWMutex
	free  map[string]int64 // account → unix nanos until which it has no plan
	plans map[string]config.Plan
}

const maxCached = 100_000

// New returns a Limiter reading subscriptions and counters from store.
func New(store Store, opts Options) *Limiter {
	opts.init()
	l := &Limiter{store: store, opts: opts, free: make(map[string]int64), plans: make(map[string]config.Plan, len(opts.Plans))}
	for _, p := range opts.Plans {
		l.plans[p.ID] = p
	}
	return l
}

// Limit names, as the errors say them.
const (
	LimitRequestsPerMinute = "requests_per_minute"
	LimitRequests          = "requests"
	LimitInputTokens       = "input_tokens"
	LimitOutputTokens      = "output_tokens"
	LimitCredits           = "credits"
)

// Admit returns nil when account may make a call now, a *proxy.LimitError
// (429 with Retry-After) when a limit of its plan is reached, or the store's
// error (metering.ErrUnavailable: 503).
func (l *Limiter) Admit(ctx context.Context, account string) error {
	now := l.opts.Now()
	if l.opts.CacheTTL > 0 {
		l.mu.RLock()
		until, ok := l.free[account]
		l.mu.RUnlock()
		if ok && now.UnixNano() < until {
			return nil
		}
	}
	a, live, err := l.store.Admit(ctx, account)
	if err != nil {
		return fmt.Errorf("checking plan limits: %w", err)
	}
	plan, known := l.plans[a.Plan]
	if !live || !known {
		// No live subscription, or one to a plan no longer configured: no plan limits.
		if l.opts.CacheTTL > 0 {
			l.mu.Lock()
			if len(l.free) >= maxCached {
				l.free = make(map[string]int64)
			}
			l.free[account] = now.Add(l.opts.CacheTTL).UnixNano()
			l.mu.Unlock()
		}
		return nil
	}
	return Check(plan, a, now)
}

// Check decides one call of an account on plan with the counters of a
// (this call included in the minute's count). It is Admit without the store.
func Check(plan config.Plan, a metering.Admission, now time.Time) error {
	lim := plan.Effective(a.Seats)
	u := a.Usage
	if lim.RequestsPerMinute > 0 && u.RequestsThisMinute > lim.RequestsPerMinute {
		wait := max(int(a.MinuteLeft/time.Second), 1)
		return &proxy.LimitError{Limit: LimitRequestsPerMinute, RetryAfter: wait, Message: fmt.Sprintf(
			"Plan limit reached: %s. The %s plan allows %d requests per minute; retry in %ds.",
			LimitRequestsPerMinute, plan.Name, lim.RequestsPerMinute, wait)}
	}
	renew := u.Period.End
	wait := max(int(renew.Sub(now)/time.Second), 1)
	period := func(name, what string, used, limit int64) error {
		return &proxy.LimitError{Limit: name, RetryAfter: wait, Message: fmt.Sprintf(
			"Plan limit reached: %s. The %s plan allows %s %s per billing period and %s were used; the period renews at %s.",
			name, plan.Name, amount(limit, name), what, amount(used, name), renew.UTC().Format(time.RFC3339))}
	}
	switch {
	case lim.Requests > 0 && u.Requests >= lim.Requests:
		return period(LimitRequests, "requests", u.Requests, lim.Requests)
	case lim.InputTokens > 0 && u.InputTokens >= lim.InputTokens:
		return period(LimitInputTokens, "input tokens", u.InputTokens, lim.InputTokens)
	case lim.OutputTokens > 0 && u.OutputTokens >= lim.OutputTokens:
		return period(LimitOutputTokens, "output tokens", u.OutputTokens, lim.OutputTokens)
	case lim.Credits > 0 && u.Credits >= lim.Credits*pricing.MilliPerCredit:
		return period(LimitCredits, "credits", u.Credits, lim.Credits*pricing.MilliPerCredit)
	}
	return nil
}

// amount renders a count (credits from milli-credits).
func amount(n int64, limit string) string {
	if limit == LimitCredits {
		return pricing.FormatCredits(n)
	}
	return strconv.FormatInt(n, 10)
}
