package billing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// DefaultRechargeBackoff is how long after a failed auto-recharge charge the
// next one may be asked for.
const DefaultRechargeBackoff = 10 * time.Minute

// WorkerOptions configure a RechargeWorker. Zero values mean the documented defaults.
type WorkerOptions struct {
	// Group is the stream's consumer group, shared by every billing replica. Default "billing".
	Group string
	// Consumer names this worker in the group; unique per process. Default host-pid-random.
	Consumer string
	// Block is how long one read waits for a new request. Default 2s.
	Block time.Duration
	// ClaimIdle: a request read by a worker and not acknowledged for this long
	// (the worker crashed, or its charge failed transiently) is taken over.
	// Default 1m.
	ClaimIdle time.Duration
	// Batch is how many requests one read takes. Default 16.
	Batch int64
	// Backoff is how long after a failed charge the next request may come.
	// Default DefaultRechargeBackoff.
	Backoff time.Duration
	// GiveUpAfter: a request still failing transiently after this long is
	// ended without a charge, while Stripe's idempotency keys (kept 24h) still
	// protect a retry from charging twice. Default 12h.
	GiveUpAfter time.Duration
	// Timeout bounds the work on one request. Default 60s.
	Timeout time.Duration
}

func (o *WorkerOptions) init() {
	defer func() {
		// A batch is worked through one request at a time: never take over
		// a request its reader may still reach.
		if o.ClaimIdle <= 0 {
			o.ClaimIdle = max(time.Minute, 2*time.Duration(o.Batch)*o.Timeout)
		}
	}()
	if o.Group == "" {
		o.Group = "billing"
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		o.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(4))
	}
	if o.Block <= 0 {
		o.Block = 2 * time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 16
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultRechargeBackoff
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = 12 * time.Hour
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
}

// RechargeWorker consumes the auto-recharge requests that proxies enqueue:
// it charges each account's saved card off session for its pack and credits
// it. Requests are read in a consumer group and acknowledged only when their
// outcome is stored, so that a crashed worker's requests are taken over by
// another (XAUTOCLAIM); a taken-over charge reuses the request's idempotency
// key, so Stripe answers with the same PaymentIntent instead of charging
// again. Any number of workers may run, in any number of billing replicas.
type RechargeWorker struct {
	s    *Server
	opts WorkerOptions
	log  *zap.Logger
}

// RechargeWorker returns the auto-recharge worker of this server, or nil when
// payments are not configured.
func (s *Server) RechargeWorker(opts WorkerOptions) *RechargeWorker {
	if s.stripe == nil || s.payments == nil {
		return nil
	}
	opts.init()
	return &RechargeWorker{s: s, opts: opts, log: s.log.Named("recharge").With(zap.String("consumer", opts.Consumer))}
}

// Run processes requests until ctx is done.
func (w *RechargeWorker) Run(ctx context.Context) error {
	w.log.Info("auto-recharge worker started", zap.String("group", w.opts.Group))
	defer w.log.Info("auto-recharge worker stopped")
	for ctx.Err() == nil {
		if _, err := w.Poll(ctx, w.opts.Block); err != nil && ctx.Err() == nil {
			w.log.Warn("reading auto-recharge requests", zap.Error(err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// Poll takes over the requests other workers left idle past ClaimIdle, reads
// new ones (waiting up to block; 0: not at all) and processes them, one after
// the other. It returns how many it processed.
func (w *RechargeWorker) Poll(ctx context.Context, block time.Duration) (int, error) {
	st := w.s.store
	claimed, err := st.ClaimRecharges(ctx, w.opts.Group, w.opts.Consumer, w.opts.ClaimIdle, w.opts.Batch)
	if err != nil {
		return 0, err
	}
	fresh, err := st.ReadRecharges(ctx, w.opts.Group, w.opts.Consumer, w.opts.Batch, block)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, req := range append(claimed, fresh...) {
		if ctx.Err() != nil {
			break
		}
		w.process(ctx, req)
		n++
	}
	return n, nil
}

// process handles one request and acknowledges it unless it must be retried.
func (w *RechargeWorker) process(parent context.Context, req metering.RechargeRequest) {
	// Not cancelled with the worker: a charge begun is seen through (bounded
	// by Timeout) rather than left for a successor to resume.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), w.opts.Timeout)
	defer cancel()
	log := w.log.With(zap.String("account", req.Account), zap.String("request", req.ID))
	done, err := w.handle(ctx, log, req)
	if err != nil {
		log.Warn("auto-recharge not finished; it will be retried", zap.Error(err))
	}
	if !done {
		return
	}
	if err := w.s.store.AckRecharge(ctx, w.opts.Group, req.StreamID); err != nil {
		log.Warn("acknowledging auto-recharge request", zap.Error(err))
	}
}

// handle reports whether the request is finished (to acknowledge); an error
// with done false means retry later.
func (w *RechargeWorker) handle(ctx context.Context, log *zap.Logger, req metering.RechargeRequest) (done bool, err error) {
	st := w.s.store
	if !metering.ValidAccountID(req.Account) || !metering.ValidAccountID(req.ID) {
		log.Warn("malformed auto-recharge request dropped")
		return true, nil
	}
	fail := func(reason string, counts bool) (bool, error) {
		ended, failures, disabled, err := st.FailRecharge(ctx, metering.RechargeFailure{
			Account: req.Account, ID: req.ID, Reason: reason, Counts: counts, MaxFailures: w.s.opts.MaxFailures,
			Backoff: w.opts.Backoff,
		})
		if err != nil {
			return false, err
		}
		if disabled {
			log.Warn("auto-recharge turned off after repeated failures", zap.String("reason", reason), zap.Int("failures", failures))
		} else {
			log.Info("auto-recharge failed", zap.Bool("ended", ended), zap.String("reason", reason), zap.Int("failures", failures))
		}
		return true, nil
	}
	ar, err := st.AutoRecharge(ctx, req.Account)
	if err != nil {
		return false, err
	}
	var sale metering.RechargeSale
	if pack, err := w.s.catalog.Pack(ar.Pack); err == nil {
		sale = metering.RechargeSale{Pack: pack.Key, PriceMinor: pack.PriceMinor, Currency: pack.Currency, Credits: pack.Credits}
	} else if ar.State != "inflight" || ar.RequestID != req.ID {
		return fail(fmt.Sprintf("pack_unavailable: pack %q is no longer on sale; choose another", ar.Pack), true)
	} // else: resuming a request whose pack left the catalog; it charges what it sold
	b, err := st.BeginRecharge(ctx, req.Account, req.ID, sale)
	if err != nil {
		return false, err
	}
	if !b.Proceed {
		if b.Reason == "spending_limit" {
			log.Info("auto-recharge skipped: spending limit reached", zap.Int64("spent_minor", b.Spent), zap.Int64("limit_minor", b.Limit))
		} else {
			log.Info("auto-recharge skipped", zap.String("reason", b.Reason))
		}
		return true, nil
	}
	sale = b.Sale
	log = log.With(zap.String("pack", sale.Pack), zap.Int64("price_minor", sale.PriceMinor), zap.Bool("resumed", b.Resumed))
	if age := requestAge(req); age > w.opts.GiveUpAfter {
		return fail(fmt.Sprintf("gave_up: no answer from the payment provider after %s", age.Round(time.Minute)), false)
	}
	customer, err := st.StripeCustomer(ctx, req.Account)
	if err != nil {
		return false, err
	}
	card := ""
	if customer != "" {
		if card, err = w.s.payments.DefaultCard(ctx, customer); err != nil {
			if isTransient(err) {
				return false, err
			}
			return fail("payment_error: "+err.Error(), true)
		}
	}
	if card == "" {
		return fail("no_payment_method: no saved card to charge (buy a pack at checkout once to save one)", true)
	}
	res, err := w.s.payments.ChargeOffSession(ctx, OffSessionCharge{
		Customer: customer, PaymentMethod: card, AmountMinor: sale.PriceMinor, Currency: sale.Currency,
		Description: "Auto-recharge: " + w.packName(sale.Pack) + " credit pack", IdempotencyKey: "recharge-" + req.ID,
		Metadata: map[string]string{metaAccount: req.Account, metaPack: sale.Pack, metaPurchase: req.ID, metaKind: kindRecharge},
	})
	if err != nil {
		if isTransient(err) {
			return false, err
		}
		return fail("payment_error: "+err.Error(), true)
	}
	log = log.With(zap.String("payment_intent", res.ID), zap.String("status", string(res.Status)))
	switch res.Status {
	case PaymentSucceeded:
		f, err := st.CompleteRecharge(ctx, metering.RechargePayment{
			Account: req.Account, ID: req.ID, PaymentID: res.ID, AmountMinor: res.AmountMinor,
			Currency: strings.ToLower(res.Currency),
			Fields:   map[string]string{"description": "Auto-recharge: " + w.packName(sale.Pack) + " credit pack"},
		})
		var mismatch *metering.MismatchError
		if errors.As(err, &mismatch) {
			log.Error("auto-recharge charged but NOT credited: the amount differs from the pack sold",
				zap.Int64("amount", res.AmountMinor), zap.String("currency", res.Currency))
			return fail("amount_mismatch: charged "+strconv.FormatInt(res.AmountMinor, 10)+" "+res.Currency, false)
		}
		if err != nil {
			return false, err // retried: the same key gives the same PaymentIntent, the same reference credits once
		}
		log.Info("auto-recharge credited", zap.Bool("applied", f.Applied), zap.Int64("credits_mc", f.Credits),
			zap.Int64("balance_after", f.BalanceAfter))
		return true, nil
	case PaymentProcessing:
		log.Info("auto-recharge processing; the payment_intent webhook ends it")
		return true, nil
	default:
		reason := res.Code
		if reason == "" {
			reason = string(res.Status)
		}
		if res.Message != "" {
			reason += ": " + res.Message
		}
		return fail(reason, true)
	}
}

func (w *RechargeWorker) packName(key string) string {
	if p, err := w.s.catalog.Pack(key); err == nil {
		return p.Name
	}
	return key
}

// requestAge is how long ago the request was queued (its stream id's time).
func requestAge(req metering.RechargeRequest) time.Duration {
	ms, _, _ := strings.Cut(req.StreamID, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Since(time.UnixMilli(n))
}
