package metering

import (
	"context"
	_ "embed"
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
//	                     input_tokens, output_tokens, credits_mc — bumped by settle, reset by the
//	                     first settle of a new period
//	{a:ID}:rpm     hash  w (unix minute), n (calls admitted or refused in it); TTL 2 min
//
// The billing period is the subscription's current period while it is live
// (active, trialing, past_due), else the calendar month (UTC). One Lua
// snippet (scripts/period.lua) decides it for every script that counts.

var (
	//go:embed scripts/period.lua
	periodSrc string
	//go:embed scripts/subscription.lua
	subscriptionSrc string
	//go:embed scripts/admit.lua
	admitSrc string

	subscriptionScript = redis.NewScript(subscriptionSrc)
	admitScript        = redis.NewScript(periodSrc + admitSrc)
)

func planKey(id string) string  { return "{a:" + id + "}:plan" }
func usageKey(id string) string { return "{a:" + id + "}:usage" }
func rateKey(id string) string  { return "{a:" + id + "}:rpm" }

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
	Requests     int64 // calls settled
	InputTokens  int64 // cached input included
	OutputTokens int64 // reasoning included
	Credits      int64 // mc charged
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
	use := pipe.HMGet(ctx, usageKey(account), "period", "requests", "input_tokens", "output_tokens", "credits_mc")
	rate := pipe.HMGet(ctx, rateKey(account), "w", "n")
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return Subscription{}, Usage{}, unavailable("reading usage", err)
	}
	now := time.Now()
	sub := subscriptionFrom(plan.Val())
	u := Usage{Period: BillingPeriod(sub, now)}
	if v := use.Val(); len(v) == 5 && atoi(v[0]) == u.Period.Start.Unix() {
		u.Requests, u.InputTokens, u.OutputTokens, u.Credits = atoi(v[1]), atoi(v[2]), atoi(v[3]), atoi(v[4])
	}
	if v := rate.Val(); len(v) == 2 && atoi(v[0]) == now.Unix()/60 {
		u.RequestsThisMinute = atoi(v[1])
	}
	return sub, u, nil
}

// Admission is what the limiter reads to admit one call of an account with a
// live subscription.
type Admission struct {
	Plan   string
	Seats  int64
	Status string
	Usage  Usage // the billing period's counters, and this minute's calls (this one included)
	// MinuteLeft is what is left of the current clock minute (Redis's clock).
	MinuteLeft time.Duration
}

// Admit reads, in one round trip, the account's live subscription and its
// counters, and counts this call in the current clock minute. ok is false
// (and nothing is counted) when the account has no live subscription.
func (s *Store) Admit(ctx context.Context, account string) (a Admission, ok bool, err error) {
	if !ValidAccountID(account) {
		return Admission{}, false, notAccount("admitting a call of", account)
	}
	res, err := admitScript.Run(ctx, s.rdb, []string{planKey(account), usageKey(account), rateKey(account)},
		MonthStart(time.Now()).Unix()).Slice()
	if err != nil {
		return Admission{}, false, unavailable("admitting a call", err)
	}
	if len(res) < 12 || toInt(res[0]) != 1 {
		return Admission{}, false, nil
	}
	str := func(v any) string { s, _ := v.(string); return s }
	a = Admission{Plan: str(res[1]), Seats: max(toInt(res[2]), 1), Status: str(res[3])}
	a.Usage = Usage{
		Period:   Period{Start: unixTime(str(res[4])), End: unixTime(str(res[5]))},
		Requests: toInt(res[6]), InputTokens: toInt(res[7]), OutputTokens: toInt(res[8]), Credits: toInt(res[9]),
		RequestsThisMinute: toInt(res[10]),
	}
	a.MinuteLeft = time.Duration(toInt(res[11])) * time.Second
	if p := &a.Usage.Period; !p.End.After(p.Start) { // a live subscription whose period is not known yet
		p.End = p.Start.AddDate(0, 1, 0)
	}
	return a, true, nil
}
