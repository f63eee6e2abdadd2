package limits

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// Store is what the limiter needs of the ledger; *metering.Store implements it.
type Store interface {
	Admit(ctx context.Context, r metering.AdmitRequest) (metering.Admission, error)
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
	subs  map[string]seen // account → its subscription as last seen
	plans map[string]config.Plan
}

// seen is an account's subscription as the store last answered: a plan (and
// seats) whose limits the next Admit sends, checked by the store; or none,
// trusted until free.
type seen struct {
	plan  string // "": no live subscription (or one to a plan not configured)
	seats int64
	free  int64 // unix nanos until which an account without a plan is admitted without asking
}

const maxCached = 100_000

// New returns a Limiter reading subscriptions and counters from store.
func New(store Store, opts Options) *Limiter {
	opts.init()
	l := &Limiter{store: store, opts: opts, subs: make(map[string]seen), plans: make(map[string]config.Plan, len(opts.Plans))}
	for _, p := range opts.Plans {
		l.plans[p.ID] = p
	}
	return l
}

// Limit names, as the errors say them.
const (
	LimitRequestsPerMinute = metering.LimitRequestsPerMinute
	LimitRequests          = metering.LimitRequests
	LimitInputTokens       = metering.LimitInputTokens
	LimitOutputTokens      = metering.LimitOutputTokens
	LimitCredits           = metering.LimitCredits
)

// Admit admits call c when its account has no plan, or when the plan's
// limits leave room for it: then the call is counted as a request and its
// worst case is held against the period's allowance until it is settled or
// released, and the Grant caps its output by what is left of the output
// token and credit allowances. It returns a *proxy.LimitError (429 with
// Retry-After) when a limit refuses the call, or the store's error
// (metering.ErrUnavailable: 503).
//
// Accounts without a live subscription cost no round trip for CacheTTL after
// the store said so; others cost one (two on this replica's first call of the
// account, or when its subscription changed).
func (l *Limiter) Admit(ctx context.Context, c proxy.LimitedCall) (proxy.Grant, error) {
	now := l.opts.Now()
	account := c.Hold.Account
	l.mu.RLock()
	s, ok := l.subs[account]
	l.mu.RUnlock()
	if ok && s.plan == "" && now.UnixNano() < s.free {
		return proxy.Grant{MaxOutput: c.Hold.MaxOutput}, nil
	}
	r := metering.AdmitRequest{Hold: c.Hold, InputTokens: c.InputTokens, Choices: c.Choices}
	plan, known := l.plans[s.plan]
	if known {
		r.Plan, r.Seats, r.Limits = plan.ID, s.seats, limitsOf(plan, s.seats)
	}
	// The store admits only against the limits of the subscription it holds:
	// when it changed (or was not known here), ask again with its limits.
	for range 3 {
		a, err := l.store.Admit(ctx, r)
		if err != nil {
			return proxy.Grant{}, fmt.Errorf("checking plan limits: %w", err)
		}
		if a.Live {
			plan, known = l.plans[a.Plan]
		}
		switch {
		case !a.Live || !known:
			// No live subscription, or one to a plan no longer configured: no plan limits.
			l.remember(account, seen{free: now.Add(l.opts.CacheTTL).UnixNano()})
			return proxy.Grant{MaxOutput: c.Hold.MaxOutput}, nil
		case a.Stale:
			l.remember(account, seen{plan: a.Plan, seats: a.Seats})
			r.Plan, r.Seats, r.Limits = a.Plan, a.Seats, limitsOf(plan, a.Seats)
		case a.Limit != "":
			return proxy.Grant{}, refusal(plan, a, now)
		default:
			return proxy.Grant{MaxOutput: a.MaxOutput, Held: true}, nil
		}
	}
	return proxy.Grant{}, fmt.Errorf("checking plan limits of %q: the subscription kept changing: %w", account, metering.ErrUnavailable)
}

// remember keeps what the store said of account's subscription (bounded:
// when full, the cache starts afresh).
func (l *Limiter) remember(account string, s seen) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.plan == "" && l.opts.CacheTTL <= 0 {
		delete(l.subs, account) // nothing to keep: no plan, and no cache
		return
	}
	if len(l.subs) >= maxCached {
		l.subs = make(map[string]seen)
	}
	l.subs[account] = s
}

// limitsOf is plan's limits for a subscription of seats, as the store takes them.
func limitsOf(plan config.Plan, seats int64) metering.Limits {
	lim := plan.Effective(seats)
	return metering.Limits{
		Requests: lim.Requests, InputTokens: lim.InputTokens, OutputTokens: lim.OutputTokens,
		Credits: lim.Credits * pricing.MilliPerCredit, RequestsPerMinute: lim.RequestsPerMinute,
	}
}

// refusal is the 429 for a call the store refused under plan.
func refusal(plan config.Plan, a metering.Admission, now time.Time) error {
	if a.Limit == LimitRequestsPerMinute {
		wait := max(int(a.MinuteLeft/time.Second), 1)
		return &proxy.LimitError{Limit: a.Limit, RetryAfter: wait, Message: fmt.Sprintf(
			"Plan limit reached: %s. The %s plan allows %d requests per minute; retry in %ds.",
			a.Limit, plan.Name, a.Max, wait)}
	}
	renew := a.Period.End
	wait := max(int(renew.Sub(now)/time.Second), 1)
	left := ""
	if a.Used < a.Max {
		// Not reached, but what is left is less than this call's least.
		left = fmt.Sprintf(", too few for this call (it needs %s)", amount(a.Needed, a.Limit))
	}
	return &proxy.LimitError{Limit: a.Limit, RetryAfter: wait, Message: fmt.Sprintf(
		"Plan limit reached: %s. The %s plan allows %s %s per billing period; %s are used or held by calls in progress%s. The period renews at %s.",
		a.Limit, plan.Name, amount(a.Max, a.Limit), strings.ReplaceAll(a.Limit, "_", " "), amount(a.Used, a.Limit), left,
		renew.UTC().Format(time.RFC3339))}
}

// amount renders a count (credits from milli-credits).
func amount(n int64, limit string) string {
	if limit == LimitCredits {
		return pricing.FormatCredits(n)
	}
	return strconv.FormatInt(n, 10)
}
