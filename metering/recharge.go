package metering

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Auto-recharge: proxies ask for a recharge when a settle leaves an account's
// balance under its threshold; the billing worker charges the account's card
// and credits the pack. Keys, in addition to those listed in doc.go:
//
//	{a:ID}:ar          hash    settings: enabled, threshold_mc, pack, price_minor, currency,
//	                           limit_minor (spending limit per billing period);
//	                           state: state ("" | queued | inflight), rid (the request),
//	                           state_at (ms), spent_period, spent_minor, spent_currency,
//	                           inflight_price, inflight_period, failures, last_error,
//	                           next_at (ms, no request before), disabled_reason, last_skip, ...
//	{a:ID}:co:<rid>    hash    what a recharge sells (as a checkout's record): pack, credits_mc,
//	                           price_minor, currency, kind=auto_recharge
//	tg:recharge        stream  requests: account, id (consumer group of the billing workers)
//
// At most one recharge is queued or in flight per account: the enqueue script
// names one request id in {a:ID}:ar, and the worker acts only on the request
// the account still names. The spending limit is checked, and the price added
// to the period's spend, in the same script that puts the request in flight
// (recharge_begin), so that no two recharges can both fit under the limit.

var (
	//go:embed scripts/recharge_enqueue.lua
	rechargeEnqueueSrc string
	//go:embed scripts/recharge_begin.lua
	rechargeBeginSrc string
	//go:embed scripts/recharge_credit.lua
	rechargeCreditSrc string
	//go:embed scripts/recharge_fail.lua
	rechargeFailSrc string

	rechargeEnqueueScript = redis.NewScript(periodSrc + rechargeEnqueueSrc)
	rechargeBeginScript   = redis.NewScript(periodSrc + rechargeBeginSrc)
	rechargeCreditScript  = redis.NewScript(sellSrc + eventsSrc + rechargeCreditSrc)
	rechargeFailScript    = redis.NewScript(eventsSrc + rechargeFailSrc)
)

// RechargeStream is the stream of auto-recharge requests.
const RechargeStream = "tg:recharge"

// maxRechargeBacklog bounds the stream (approximately).
const maxRechargeBacklog = 100_000

func rechargeKey(id string) string { return "{a:" + id + "}:ar" }

// AutoRechargeSettings are what an account chooses.
type AutoRechargeSettings struct {
	Enabled   bool
	Threshold int64  // mc: a settle leaving the balance under it asks for a recharge
	Pack      string // the pack bought
	// PriceMinor and Currency are the pack's price when chosen (the worker
	// charges the catalog's price at the time; this one pre-filters requests).
	PriceMinor int64
	Currency   string
	// SpendingLimit caps what auto-recharge spends per billing period, in
	// minor units of Currency.
	SpendingLimit int64
}

// AutoRecharge is an account's auto-recharge settings and state.
type AutoRecharge struct {
	AutoRechargeSettings
	Configured     bool   // settings were ever saved
	Spent          int64  // minor units spent in the current billing period
	Failures       int    // failed charges in a row
	LastError      string // why the last charge failed
	DisabledReason string // why auto-recharge turned itself off ("" when it did not)
	LastSkip       string // why the last request was dropped (spending_limit, above_threshold, ...)
	State          string // "", queued or inflight
	RequestID      string
	LastRechargeAt time.Time
}

// AutoRecharge returns the account's settings and state; Spent counts the
// current billing period only.
func (s *Store) AutoRecharge(ctx context.Context, account string) (AutoRecharge, error) {
	if !ValidAccountID(account) {
		return AutoRecharge{}, notAccount("reading auto-recharge of", account)
	}
	pipe := s.rdb.Pipeline()
	arc := pipe.HGetAll(ctx, rechargeKey(account))
	plan := pipe.HGetAll(ctx, planKey(account))
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return AutoRecharge{}, unavailable("reading auto-recharge", err)
	}
	m := arc.Val()
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	a := AutoRecharge{
		AutoRechargeSettings: AutoRechargeSettings{
			Enabled: m["enabled"] == "1", Threshold: n("threshold_mc"), Pack: m["pack"], PriceMinor: n("price_minor"),
			Currency: m["currency"], SpendingLimit: n("limit_minor"),
		},
		Configured: m["pack"] != "", Failures: int(n("failures")), LastError: m["last_error"],
		DisabledReason: m["disabled_reason"], LastSkip: m["last_skip"], State: m["state"], RequestID: m["rid"],
	}
	if ms := n("last_recharge_at"); ms > 0 {
		a.LastRechargeAt = time.UnixMilli(ms).UTC()
	}
	period := BillingPeriod(subscriptionFrom(plan.Val()), time.Now())
	if n("spent_period") == period.Start.Unix() && m["spent_currency"] == a.Currency {
		a.Spent = n("spent_minor")
	}
	return a, nil
}

// SetAutoRecharge saves an account's settings. Enabling clears the failures
// and the reason of an earlier automatic disable. What was spent in the
// period is kept.
func (s *Store) SetAutoRecharge(ctx context.Context, account string, st AutoRechargeSettings) error {
	if !ValidAccountID(account) {
		return notAccount("saving auto-recharge of", account)
	}
	if st.Threshold < 0 || st.SpendingLimit < 0 || st.PriceMinor < 0 {
		return fmt.Errorf("saving auto-recharge of %q: negative amounts", account)
	}
	enabled := "0"
	args := []any{"threshold_mc", st.Threshold, "pack", st.Pack, "price_minor", st.PriceMinor,
		"currency", st.Currency, "limit_minor", st.SpendingLimit}
	if st.Enabled {
		enabled = "1"
		args = append(args, "failures", 0, "disabled_reason", "", "last_error", "", "next_at", 0)
	}
	if err := s.rdb.HSet(ctx, rechargeKey(account), append([]any{"enabled", enabled}, args...)...).Err(); err != nil {
		return unavailable("saving auto-recharge", err)
	}
	return nil
}

// newRequestID makes an auto-recharge request id.
func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "ar_" + hex.EncodeToString(b[:])
}

// EnqueueOutcome is what an enqueue did.
type EnqueueOutcome int

// Enqueue outcomes.
const (
	EnqueueOff     EnqueueOutcome = iota // auto-recharge is off (or unconfigured)
	EnqueueQueued                        // a request was queued now
	EnqueueAbove                         // the balance is not under the threshold
	EnqueueBusy                          // a request is already queued or in flight
	EnqueueBackoff                       // waiting after a failed charge
	EnqueueLimit                         // the spending limit leaves no room for the pack
)

// RechargeRequest is one request read from the stream.
type RechargeRequest struct {
	StreamID string // the stream entry, to acknowledge
	Account  string
	ID       string // the request id the account names while it is queued or in flight
}

// EnqueueRecharge queues an auto-recharge for account when its balance is
// under its threshold and none is queued or in flight; it reports what it
// found, with the threshold (for callers that cache it).
func (s *Store) EnqueueRecharge(ctx context.Context, account string, o RechargeQueueOptions) (EnqueueOutcome, int64, error) {
	o.init()
	if !ValidAccountID(account) {
		return EnqueueOff, 0, notAccount("enqueuing a recharge of", account)
	}
	rid, now := newRequestID(), time.Now()
	res, err := rechargeEnqueueScript.Run(ctx, s.rdb, []string{acctKey(account), rechargeKey(account), planKey(account)},
		rid, now.UnixMilli(), o.StaleAfter.Milliseconds(), o.InflightStaleAfter.Milliseconds(), MonthStart(now).Unix()).Int64Slice()
	if err != nil {
		return EnqueueOff, 0, unavailable("enqueuing a recharge", err)
	}
	out, threshold := EnqueueOutcome(res[0]), res[1]
	if out != EnqueueQueued {
		return out, threshold, nil
	}
	// Another slot (the stream is not the account's): a crash between the two
	// leaves the account naming a request nobody will read, which the next
	// enqueue replaces after StaleAfter.
	// Bounded: with no worker running (payments not configured) requests pile
	// up; a trimmed request is replaced like a lost one.
	err = s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: RechargeStream, MaxLen: maxRechargeBacklog, Approx: true,
		Values: []any{"account", account, "id", rid}}).Err()
	if err != nil {
		return EnqueueOff, threshold, unavailable("enqueuing a recharge", err)
	}
	return EnqueueQueued, threshold, nil
}

// EnsureRechargeGroup creates the consumer group (and the stream) unless it exists.
func (s *Store) EnsureRechargeGroup(ctx context.Context, group string) error {
	err := s.rdb.XGroupCreateMkStream(ctx, RechargeStream, group, "0").Err()
	if err != nil && !isBusyGroup(err) {
		return unavailable("creating the recharge consumer group", err)
	}
	return nil
}

func isBusyGroup(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && len(rerr.Error()) >= 9 && rerr.Error()[:9] == "BUSYGROUP"
}

func rechargeRequests(msgs []redis.XMessage) []RechargeRequest {
	out := make([]RechargeRequest, 0, len(msgs))
	for _, m := range msgs {
		a, _ := m.Values["account"].(string)
		id, _ := m.Values["id"].(string)
		out = append(out, RechargeRequest{StreamID: m.ID, Account: a, ID: id})
	}
	return out
}

// ReadRecharges reads up to count new requests for consumer, waiting up to
// block for one (0: do not wait). They stay pending until AckRecharge.
func (s *Store) ReadRecharges(ctx context.Context, group, consumer string, count int64, block time.Duration) ([]RechargeRequest, error) {
	if block <= 0 {
		block = -1 // go-redis: no BLOCK argument
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{RechargeStream, ">"}, Count: count, Block: block,
	}).Result()
	if isNil(err) {
		return nil, nil
	}
	if err != nil {
		if isNoGroup(err) {
			if err := s.EnsureRechargeGroup(ctx, group); err != nil {
				return nil, err
			}
			return nil, nil
		}
		return nil, unavailable("reading recharge requests", err)
	}
	var out []RechargeRequest
	for _, st := range res {
		out = append(out, rechargeRequests(st.Messages)...)
	}
	return out, nil
}

func isNoGroup(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && len(rerr.Error()) >= 7 && rerr.Error()[:7] == "NOGROUP"
}

// ClaimRecharges takes over up to count requests that another consumer read
// and did not acknowledge for minIdle (it crashed, or its charge failed
// transiently): they are handed to consumer, which processes them again.
func (s *Store) ClaimRecharges(ctx context.Context, group, consumer string, minIdle time.Duration, count int64) ([]RechargeRequest, error) {
	msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: RechargeStream, Group: group, Consumer: consumer, MinIdle: minIdle, Start: "0-0", Count: count,
	}).Result()
	if err != nil && !isNil(err) {
		if isNoGroup(err) {
			return nil, s.EnsureRechargeGroup(ctx, group)
		}
		return nil, unavailable("claiming recharge requests", err)
	}
	return rechargeRequests(msgs), nil
}

// AckRecharge acknowledges a request and deletes it from the stream.
func (s *Store) AckRecharge(ctx context.Context, group, streamID string) error {
	pipe := s.rdb.TxPipeline()
	pipe.XAck(ctx, RechargeStream, group, streamID)
	pipe.XDel(ctx, RechargeStream, streamID)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("acknowledging a recharge request", err)
	}
	return nil
}

// RechargeSale is what a recharge sells: the pack at its price.
type RechargeSale struct {
	Pack       string
	PriceMinor int64
	Currency   string
	Credits    int64 // mc
}

// RechargeBegun is the answer of BeginRecharge.
type RechargeBegun struct {
	Proceed bool   // charge the card for Sale
	Resumed bool   // a worker began this request before and did not finish it
	Reason  string // why not, when !Proceed: stale, lost, disabled, pack_changed, currency_changed, above_threshold, spending_limit
	Sale    RechargeSale
	Spent   int64 // with spending_limit: spent in the period; Limit the limit
	Limit   int64
}

// BeginRecharge puts request id of account in flight, atomically: only when
// the account still names it, auto-recharge is on for the same pack, the
// balance is still under the threshold, and the period's spend plus the price
// stays within the spending limit — the price is then added to the spend. A
// request begun before (a crashed worker) resumes with what it sold; a zero
// sale can do nothing else.
func (s *Store) BeginRecharge(ctx context.Context, account, id string, sale RechargeSale) (RechargeBegun, error) {
	if !ValidAccountID(account) {
		return RechargeBegun{}, notAccount("beginning a recharge of", account)
	}
	if !validStripeID(id) {
		return RechargeBegun{}, badStripeID("beginning a recharge", id)
	}
	if sale != (RechargeSale{}) && (sale.PriceMinor <= 0 || sale.Credits <= 0 || sale.Currency == "" || sale.Pack == "") {
		return RechargeBegun{}, fmt.Errorf("beginning a recharge of %q: invalid sale %+v", account, sale)
	}
	now := time.Now()
	res, err := rechargeBeginScript.Run(ctx, s.rdb,
		[]string{acctKey(account), rechargeKey(account), planKey(account), checkoutKey(account, id)},
		id, now.UnixMilli(), MonthStart(now).Unix(), sale.Pack, sale.PriceMinor, sale.Currency, sale.Credits,
		int64(CheckoutTTL/time.Second)).Slice()
	if err != nil {
		return RechargeBegun{}, unavailable("beginning a recharge", err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	if toInt(res[0]) != 1 {
		return RechargeBegun{Reason: str(res[1]), Spent: toInt(res[2]), Limit: toInt(res[3])}, nil
	}
	return RechargeBegun{
		Proceed: true, Resumed: str(res[1]) == "resumed",
		Sale: RechargeSale{Pack: str(res[2]), PriceMinor: toInt(res[3]), Currency: str(res[4]), Credits: toInt(res[5])},
	}, nil
}

// RechargeReference is the credit reference of an auto-recharge request: the
// worker and the webhook both credit it through this one reference.
func RechargeReference(id string) string { return CheckoutReference(id) }

// RechargePayment is a successful charge of a recharge.
type RechargePayment struct {
	Account     string
	ID          string // the request
	PaymentID   string
	AmountMinor int64
	Currency    string
	Fields      map[string]string // extra ledger fields
}

// CompleteRecharge credits a paid recharge from the record BeginRecharge made,
// at most once per request, as an auto_recharge ledger entry (also in the
// billing history), and ends the request. It fails like FulfilCheckout.
func (s *Store) CompleteRecharge(ctx context.Context, p RechargePayment) (Fulfilled, error) {
	a := p.Account
	if !ValidAccountID(a) {
		return Fulfilled{}, notAccount("crediting a recharge of", a)
	}
	if !validStripeID(p.ID) {
		return Fulfilled{}, badStripeID("crediting a recharge", p.ID)
	}
	if p.PaymentID == "" || !validStripeID(p.PaymentID) {
		return Fulfilled{}, badStripeID("crediting a recharge", p.PaymentID)
	}
	args := make([]any, 0, 6+2*len(p.Fields))
	args = append(args, RechargeReference(p.ID), p.ID, p.AmountMinor, p.Currency, p.PaymentID, nowMillis())
	args = appendFields(args, p.Fields)
	res, err := rechargeCreditScript.Run(ctx, s.rdb,
		[]string{acctKey(a), refsKey(a), ledgerKey(a), checkoutKey(a, p.ID), paymentKey(a, p.PaymentID), historyKey(a), rechargeKey(a), eventsKey(a)},
		args...).Slice()
	if err != nil {
		return Fulfilled{}, unavailable("crediting a recharge", err)
	}
	out, err := fulfilled(s, res, "crediting recharge", p.ID, p.AmountMinor, p.Currency, a)
	if err != nil {
		return Fulfilled{}, err
	}
	// As for checkouts: refunds and disputes find the purchase through it.
	if err := s.rdb.Set(ctx, paymentLookupKey(p.PaymentID), a, 0).Err(); err != nil {
		return Fulfilled{}, unavailable("crediting a recharge", err)
	}
	return out, nil
}

// RechargeFailure ends a recharge that charged nothing.
type RechargeFailure struct {
	Account string
	ID      string
	Reason  string // kept as the last error (and as the disable reason)
	// Counts: a failure of the card (declined, authentication required, no
	// card); false for a request dropped without trying.
	Counts      bool
	MaxFailures int           // failures in a row that turn auto-recharge off
	Backoff     time.Duration // no new request before it
}

// FailRecharge ends request ID without credit: its price leaves the period's
// spend, a counted failure is added and, at MaxFailures in a row,
// auto-recharge is turned off with the reason kept. ended is false when the
// request was no longer the account's current one.
func (s *Store) FailRecharge(ctx context.Context, f RechargeFailure) (ended bool, failures int, disabled bool, err error) {
	if !ValidAccountID(f.Account) {
		return false, 0, false, notAccount("failing a recharge of", f.Account)
	}
	count := "0"
	if f.Counts {
		count = "1"
	}
	res, err := rechargeFailScript.Run(ctx, s.rdb, []string{rechargeKey(f.Account), eventsKey(f.Account)},
		f.ID, f.Reason, max(f.MaxFailures, 1), time.Now().UnixMilli(), f.Backoff.Milliseconds(), count).Int64Slice()
	if err != nil {
		return false, 0, false, unavailable("failing a recharge", err)
	}
	if res[0] != 1 {
		return false, 0, false, nil
	}
	if f.Counts {
		s.markEvents(f.Account)
	}
	return true, int(res[1]), res[2] == 1, nil
}
