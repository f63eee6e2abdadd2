package metering

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Plans: an account's subscription and what it used in the billing period.
// Keys, in addition to those listed in doc.go:
//
//	{a:ID}:plan    hash  the subscription as Stripe's events last described it: sub, plan, seats,
//	                     status, period_start, period_end (unix s), cancel_at_period_end, cancel_at,
//	                     customer, ended_at, last_payment_error, event_at (event time applied)
//	{a:ID}:usage   hash  the billing period's counters: period (its start, unix s), requests,
//	                     input_tokens, output_tokens, credits_mc — reset when the period changes;
//	                     and held_in, held_out, held_mc: the sums of the live period holds (never reset)
//	{a:ID}:phexp   zset  period hold (request id) → expiry (ms)
//	{a:ID}:phval   hash  period hold (request id) → "mc:in:out", the call's worst case
//	{a:ID}:rpm     hash  w (unix minute), n (calls admitted or refused in it); TTL 2 min
//
// The billing period is the subscription's current period while it is live
// (active, trialing, past_due), else the calendar month (UTC). One Lua
// snippet (scripts/period.lua) decides it for every script that counts.
//
// Counting: a call admitted under a plan (Admit) is counted as a request at
// once, marked so in its cost record (admitted = period), and holds its
// worst case — input estimate, the output tokens it may be granted, the
// credits of its hold — as a period hold until it ends; Admit refuses a call
// while a counter plus what period holds hold of it has reached its limit.
// Settle (or a lease batch) drops the period hold and adds the call's tokens
// and credits, and its request when Admit did not count it (accounts without
// a plan). Release drops the period hold and gives back the request Admit
// counted: a failed call is not a request. Period holds expire at the hold
// TTL (a proxy that died mid-call), swept by the account's next Admit; the
// request stays counted then. scripts/period_holds.lua has the rules.

var (
	//go:embed scripts/period.lua
	periodSrc string
	//go:embed scripts/subscription.lua
	subscriptionSrc string
	//go:embed scripts/period_holds.lua
	periodHoldsSrc string
	//go:embed scripts/admit.lua
	admitSrc string

	subscriptionScript = redis.NewScript(subscriptionSrc)
	admitScript        = redis.NewScript(periodSrc + periodHoldsSrc + eventsSrc + admitSrc)
)

func planKey(id string) string          { return "{a:" + id + "}:plan" }
func usageKey(id string) string         { return "{a:" + id + "}:usage" }
func rateKey(id string) string          { return "{a:" + id + "}:rpm" }
func periodHoldExpKey(id string) string { return "{a:" + id + "}:phexp" }
func periodHoldValKey(id string) string { return "{a:" + id + "}:phval" }

// MonthStart is the start of t's calendar month in UTC: the billing period of
// an account without a live subscription.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// Live reports whether a Stripe subscription status grants its plan: active,
// trialing, or past_due (Stripe still retries the payment).
func Live(status string) bool {
	return status == "active" || status == "trialing" || status == "past_due"
}

// Subscription is an account's subscription as Stripe's events last described it.
type Subscription struct {
	ID                string // Stripe subscription id; "" when the account never subscribed
	Customer          string
	Plan              string // plan id from the configuration
	Seats             int64
	Status            string // Stripe's status; canceled once deleted
	PeriodStart       time.Time
	PeriodEnd         time.Time
	CancelAtPeriodEnd bool
	CancelAt          time.Time // zero unless a cancellation is scheduled
	EndedAt           time.Time
	LastPaymentError  string
	EventAt           time.Time // time of the last event applied
}

// Live reports whether the subscription grants its plan now.
func (s Subscription) Live() bool { return s.ID != "" && Live(s.Status) }

func unixTime(v string) time.Time {
	n, _ := strconv.ParseInt(v, 10, 64)
	if n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

func unixArg(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func subscriptionFrom(m map[string]string) Subscription {
	seats, _ := strconv.ParseInt(m["seats"], 10, 64)
	return Subscription{
		ID: m["sub"], Customer: m["customer"], Plan: m["plan"], Seats: max(seats, 1), Status: m["status"],
		PeriodStart: unixTime(m["period_start"]), PeriodEnd: unixTime(m["period_end"]),
		CancelAtPeriodEnd: m["cancel_at_period_end"] == "1", CancelAt: unixTime(m["cancel_at"]),
		EndedAt: unixTime(m["ended_at"]), LastPaymentError: m["last_payment_error"], EventAt: unixTime(m["event_at"]),
	}
}

// Subscription returns the account's subscription (ID "" when it never had one).
func (s *Store) Subscription(ctx context.Context, account string) (Subscription, error) {
	if !ValidAccountID(account) {
		return Subscription{}, notAccount("reading subscription of", account)
	}
	m, err := s.rdb.HGetAll(ctx, planKey(account)).Result()
	if err != nil {
		return Subscription{}, unavailable("reading subscription", err)
	}
	return subscriptionFrom(m), nil
}

func (s *Store) runSubscription(ctx context.Context, account, mode, sub string, at time.Time, args ...any) (bool, error) {
	if !ValidAccountID(account) {
		return false, notAccount("updating subscription of", account)
	}
	if !validStripeID(sub) {
		return false, badStripeID("updating subscription", sub)
	}
	argv := append([]any{mode, sub, unixArg(at)}, args...)
	n, err := subscriptionScript.Run(ctx, s.rdb, []string{planKey(account)}, argv...).Int()
	if err != nil {
		return false, unavailable("updating subscription", err)
	}
	return n == 1, nil
}

// SaveSubscription records a subscription as a customer.subscription.created
// or .updated event of time at describes it. An event older than the last one
// applied changes nothing, a deleted subscription stays deleted, and another
// subscription replaces a live one only when it is live itself. applied says
// whether anything changed.
func (s *Store) SaveSubscription(ctx context.Context, account string, sub Subscription, at time.Time) (applied bool, err error) {
	cancel := "0"
	if sub.CancelAtPeriodEnd {
		cancel = "1"
	}
	return s.runSubscription(ctx, account, "set", sub.ID, at, sub.Status,
		"plan", sub.Plan, "seats", max(sub.Seats, 1), "customer", sub.Customer,
		"period_start", unixArg(sub.PeriodStart), "period_end", unixArg(sub.PeriodEnd),
		"cancel_at_period_end", cancel, "cancel_at", unixArg(sub.CancelAt), "ended_at", unixArg(sub.EndedAt))
}

// EndSubscription marks the account's subscription sub as canceled (a
// customer.subscription.deleted event): its plan ends now. Another
// subscription's end changes nothing.
func (s *Store) EndSubscription(ctx context.Context, account, sub string, endedAt, at time.Time) (bool, error) {
	return s.runSubscription(ctx, account, "deleted", sub, at, unixArg(endedAt))
}

// SubscriptionPaid records a paid invoice of sub: a past_due (or unpaid,
// incomplete) subscription is active again, and a later period (from the
// invoice's lines) replaces the stored one. A canceled one stays canceled.
func (s *Store) SubscriptionPaid(ctx context.Context, account, sub string, periodStart, periodEnd, at time.Time) (bool, error) {
	ps, pe := "", ""
	if !periodStart.IsZero() && periodEnd.After(periodStart) {
		ps, pe = strconv.FormatInt(periodStart.Unix(), 10), strconv.FormatInt(periodEnd.Unix(), 10)
	}
	return s.runSubscription(ctx, account, "paid", sub, at, ps, pe)
}

// SubscriptionPaymentFailed records a failed invoice of sub: an active
// subscription becomes past_due (its plan still applies while Stripe
// retries), and the reason is kept.
func (s *Store) SubscriptionPaymentFailed(ctx context.Context, account, sub, reason string, at time.Time) (bool, error) {
	return s.runSubscription(ctx, account, "failed", sub, at, reason)
}

// ScheduleCancel records that sub ends at cancelAt (cancel at period end).
func (s *Store) ScheduleCancel(ctx context.Context, account, sub string, cancelAt time.Time) (bool, error) {
	return s.runSubscription(ctx, account, "cancel", sub, time.Now(), unixArg(cancelAt))
}

// Period is a billing period: [Start, End).
type Period struct {
	Start, End time.Time
}

// BillingPeriod is the account's billing period at now for a subscription as
// read: the subscription's period while it is live, else the calendar month.
func BillingPeriod(sub Subscription, now time.Time) Period {
	if sub.Live() && !sub.PeriodStart.IsZero() {
		p := Period{Start: sub.PeriodStart, End: sub.PeriodEnd}
		if !p.End.After(p.Start) {
			p.End = p.Start.AddDate(0, 1, 0)
		}
		return p
	}
	m := MonthStart(now)
	return Period{Start: m, End: m.AddDate(0, 1, 0)}
}

// Usage is what an account used in its billing period.
type Usage struct {
	Period       Period
	Requests     int64 // calls admitted under a plan (failed ones given back), or settled without one
	InputTokens  int64 // cached input included
	OutputTokens int64 // reasoning included
	Credits      int64 // mc charged
	// Held is the worst case of the calls admitted under a plan that have not
	// ended yet (their period holds), whatever period they were admitted in.
	HeldInputTokens  int64
	HeldOutputTokens int64
	HeldCredits      int64 // mc
	// RequestsThisMinute counts the calls the limiter saw in the current clock
	// minute (only for accounts with a live subscription).
	RequestsThisMinute int64
}

// PlanUsage returns the account's subscription and its counters in the
// current billing period: the same counters the proxy's limiter reads.
func (s *Store) PlanUsage(ctx context.Context, account string) (Subscription, Usage, error) {
	if !ValidAccountID(account) {
		return Subscription{}, Usage{}, notAccount("reading usage of", account)
	}
	pipe := s.rdb.Pipeline()
	plan := pipe.HGetAll(ctx, planKey(account))
	use := pipe.HMGet(ctx, usageKey(account), "period", "requests", "input_tokens", "output_tokens", "credits_mc",
		"held_in", "held_out", "held_mc")
	rate := pipe.HMGet(ctx, rateKey(account), "w", "n")
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return Subscription{}, Usage{}, unavailable("reading usage", err)
	}
	now := time.Now()
	sub := subscriptionFrom(plan.Val())
	u := Usage{Period: BillingPeriod(sub, now)}
	if v := use.Val(); len(v) == 8 {
		if atoi(v[0]) == u.Period.Start.Unix() {
			u.Requests, u.InputTokens, u.OutputTokens, u.Credits = atoi(v[1]), atoi(v[2]), atoi(v[3]), atoi(v[4])
		}
		u.HeldInputTokens, u.HeldOutputTokens, u.HeldCredits = atoi(v[5]), atoi(v[6]), atoi(v[7])
	}
	if v := rate.Val(); len(v) == 2 && atoi(v[0]) == now.Unix()/60 {
		u.RequestsThisMinute = atoi(v[1])
	}
	return sub, u, nil
}

// Limit names: the limits Admit enforces, as it names them.
const (
	LimitRequestsPerMinute = "requests_per_minute"
	LimitRequests          = "requests"
	LimitInputTokens       = "input_tokens"
	LimitOutputTokens      = "output_tokens"
	LimitCredits           = "credits"
)

// Limits are a plan's limits for one subscription (seats applied); 0 means
// no limit.
type Limits struct {
	Requests          int64 // per billing period, as are the next three
	InputTokens       int64
	OutputTokens      int64
	Credits           int64 // mc
	RequestsPerMinute int64 // per clock minute
}

// AdmitRequest asks to admit one call against its account's plan.
type AdmitRequest struct {
	// Plan and Seats name the subscription that Limits are for: an account
	// subscribed otherwise is not admitted but answered Stale.
	Plan   string
	Seats  int64
	Limits Limits
	// Hold is the call's hold request: its account, its request id (HoldID,
	// by which the call's settle or release drops what Admit holds), and its
	// worst case in credits and output.
	Hold        HoldRequest
	InputTokens int64 // input tokens Hold.Fixed covers
	Choices     int64 // output tokens billed per output token granted ("n"; at least 1)
}

// Admission is Admit's answer.
type Admission struct {
	// Live: the account has a live subscription. When false nothing was
	// counted: the account has no plan limits.
	Live bool
	// Plan and Seats are the live subscription's. Stale: they are not the
	// request's, and nothing was counted; ask again with their limits.
	Plan  string
	Seats int64
	Stale bool
	// Limit names the limit that refused the call ("" when it was admitted):
	// Used (held by calls in progress included) had reached Max, or what is
	// left is less than Needed, the least this call needs (0 when not the
	// reason).
	Limit              string
	Used, Max, Needed  int64
	MaxOutput          int64  // admitted: the most output tokens the call may be granted
	Period             Period // the billing period counted in
	RequestsThisMinute int64  // this call included
	MinuteLeft         time.Duration
}

// Admit decides, atomically and in one round trip, whether a call of an
// account with a live subscription to r.Plan may start: it sweeps expired
// period holds, counts the call in the current clock minute, and refuses it
// when a limit is reached; else it counts the call as a request, holds its
// worst case against the period's allowance (dropped by the call's Settle,
// Release or lease batch, or at the hold TTL), and says how much output it
// may be granted. A request admitted twice (a retry) is admitted once.
func (s *Store) Admit(ctx context.Context, r AdmitRequest) (Admission, error) {
	h := &r.Hold
	a := h.Account
	if !ValidAccountID(a) {
		return Admission{}, notAccount("admitting a call of", a)
	}
	if h.Fixed < 0 || h.PerOutput < 0 || h.MinOutput < 0 || h.MaxOutput < h.MinOutput || r.InputTokens < 0 {
		return Admission{}, fmt.Errorf("admitting a call: invalid request %+v", r)
	}
	l := &r.Limits
	res, err := s.pipe.run(ctx, admitScript,
		[]string{planKey(a), usageKey(a), rateKey(a), periodHoldExpKey(a), periodHoldValKey(a), genKey(a, h.HoldID), eventsKey(a)},
		MonthStart(time.Now()).Unix(), r.Plan, max(r.Seats, 1),
		l.Requests, l.InputTokens, l.OutputTokens, l.Credits, l.RequestsPerMinute,
		h.HoldID, r.InputTokens, h.Fixed, h.PerOutput, max(r.Choices, 1), h.MinOutput, h.MaxOutput,
		s.opts.HoldTTL.Milliseconds(), int64(s.opts.RecordTTL/time.Second),
	).Slice()
	if err != nil {
		return Admission{}, unavailable("admitting a call", err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	switch toInt(res[0]) {
	case 0:
		return Admission{}, nil
	case 2:
		return Admission{Live: true, Plan: str(res[1]), Seats: toInt(res[2]), Stale: true}, nil
	}
	ad := Admission{Live: true, Plan: r.Plan, Seats: max(r.Seats, 1)}
	at := 2
	if toInt(res[0]) == 1 {
		ad.MaxOutput = toInt(res[1])
	} else {
		ad.Limit, ad.Used, ad.Max, ad.Needed = str(res[1]), toInt(res[2]), toInt(res[3]), toInt(res[4])
		at = 5
		if len(res) > 9 && toInt(res[9]) == 1 {
			s.markEvents(a)
		}
	}
	ad.Period = Period{Start: unixTime(str(res[at])), End: unixTime(str(res[at+1]))}
	if !ad.Period.End.After(ad.Period.Start) { // a live subscription whose period is not known yet
		ad.Period.End = ad.Period.Start.AddDate(0, 1, 0)
	}
	ad.RequestsThisMinute, ad.MinuteLeft = toInt(res[at+2]), time.Duration(toInt(res[at+3]))*time.Second
	return ad, nil
}
