package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
)

// Subscription, invoice and PaymentIntent events. Their objects are decoded
// into the few fields read here, in the shapes of both older and newer Stripe
// API versions (current_period_* moved onto subscription items; an invoice's
// subscription moved under parent.subscription_details).

// stripeRef is an id that Stripe sends as a string or as an expanded object.
type stripeRef string

func (r *stripeRef) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*r = stripeRef(s)
		return nil
	}
	var o struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	*r = stripeRef(o.ID)
	return nil
}

type subscriptionObject struct {
	ID                 string            `json:"id"`
	Customer           stripeRef         `json:"customer"`
	Status             string            `json:"status"`
	Metadata           map[string]string `json:"metadata"`
	CurrentPeriodStart int64             `json:"current_period_start"`
	CurrentPeriodEnd   int64             `json:"current_period_end"`
	CancelAtPeriodEnd  bool              `json:"cancel_at_period_end"`
	CancelAt           int64             `json:"cancel_at"`
	EndedAt            int64             `json:"ended_at"`
	Items              struct {
		Data []struct {
			Price              stripeRef `json:"price"`
			Quantity           int64     `json:"quantity"`
			CurrentPeriodStart int64     `json:"current_period_start"`
			CurrentPeriodEnd   int64     `json:"current_period_end"`
		} `json:"data"`
	} `json:"items"`
}

type invoiceObject struct {
	ID           string    `json:"id"`
	Customer     stripeRef `json:"customer"`
	Subscription stripeRef `json:"subscription"`
	AttemptCount int64     `json:"attempt_count"`
	Parent       *struct {
		SubscriptionDetails *struct {
			Subscription stripeRef `json:"subscription"`
		} `json:"subscription_details"`
	} `json:"parent"`
	Lines struct {
		Data []struct {
			Period struct {
				Start int64 `json:"start"`
				End   int64 `json:"end"`
			} `json:"period"`
		} `json:"data"`
	} `json:"lines"`
}

type paymentIntentObject struct {
	ID               string            `json:"id"`
	Amount           int64             `json:"amount"`
	AmountReceived   int64             `json:"amount_received"`
	Currency         string            `json:"currency"`
	Metadata         map[string]string `json:"metadata"`
	LastPaymentError *struct {
		Code        string `json:"code"`
		DeclineCode string `json:"decline_code"`
		Message     string `json:"message"`
	} `json:"last_payment_error"`
}

func unixOrZero(n int64) time.Time {
	if n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

// customerAccount finds the account of a Stripe customer: our lookup first,
// then the account our metadata names (remembering the customer for the
// invoices to come). errIgnored when it is not one of ours.
func (s *Server) customerAccount(ctx context.Context, customer, hint string) (string, error) {
	if customer != "" {
		account, err := s.store.AccountForCustomer(ctx, customer)
		switch {
		case err == nil:
			return account, nil
		case !errors.Is(err, metering.ErrNotFound):
			return "", err
		}
	}
	if !metering.ValidAccountID(hint) {
		return "", fmt.Errorf("customer %q is not one of ours: %w", customer, errIgnored)
	}
	if customer != "" {
		if _, err := s.store.EnsureAccount(ctx, hint); err != nil {
			return "", err
		}
		if _, err := s.store.RememberStripeCustomer(ctx, hint, customer); err != nil && !errors.Is(err, metering.ErrNotFound) {
			return "", err
		}
	}
	return hint, nil
}

// onSubscription keeps the account's plan, seats, status and period as a
// customer.subscription.created/updated/deleted event describes them; older
// events than the last applied change nothing.
func (s *Server) onSubscription(ctx context.Context, log *zap.Logger, ev stripe.Event) error {
	var sub subscriptionObject
	if err := decodeObject(ev, &sub); err != nil {
		return err
	}
	if sub.ID == "" || !metering.ValidAccountID(sub.ID) {
		return badRequest("invalid_event", "", "subscription without a valid id")
	}
	account, err := s.customerAccount(ctx, string(sub.Customer), sub.Metadata[metaAccount])
	if err != nil {
		return err
	}
	log = log.With(zap.String("account", account), zap.String("subscription", sub.ID), zap.String("status", sub.Status))
	at := time.Unix(ev.Created, 0).UTC()
	if ev.Type == stripe.EventTypeCustomerSubscriptionDeleted {
		ended := unixOrZero(sub.EndedAt)
		if ended.IsZero() {
			ended = at
		}
		applied, err := s.store.EndSubscription(ctx, account, sub.ID, ended, at)
		if err != nil {
			return err
		}
		log.Info("subscription ended", zap.Bool("applied", applied))
		return nil
	}
	var price string
	seats := int64(1)
	start, end := sub.CurrentPeriodStart, sub.CurrentPeriodEnd
	if len(sub.Items.Data) > 0 {
		it := sub.Items.Data[0]
		price, seats = string(it.Price), max(it.Quantity, 1)
		if start == 0 {
			start, end = it.CurrentPeriodStart, it.CurrentPeriodEnd
		}
	}
	plan, ok := config.FindPlanByPrice(s.plans, price)
	if !ok {
		plan, ok = config.FindPlan(s.plans, sub.Metadata[metaPlan])
	}
	if !ok {
		log.Error("subscription ignored: its price is not a configured plan", zap.String("price", price),
			zap.String("plan", sub.Metadata[metaPlan]))
		return errIgnored
	}
	applied, err := s.store.SaveSubscription(ctx, account, metering.Subscription{
		ID: sub.ID, Customer: string(sub.Customer), Plan: plan.ID, Seats: seats, Status: sub.Status,
		PeriodStart: unixOrZero(start), PeriodEnd: unixOrZero(end),
		CancelAtPeriodEnd: sub.CancelAtPeriodEnd, CancelAt: unixOrZero(sub.CancelAt),
	}, at)
	if err != nil {
		return err
	}
	log.Info("subscription recorded", zap.Bool("applied", applied), zap.String("plan", plan.ID), zap.Int64("seats", seats))
	return nil
}

// onInvoice: invoice.paid makes a past_due subscription active again and
// moves its period on; invoice.payment_failed makes an active one past_due.
func (s *Server) onInvoice(ctx context.Context, log *zap.Logger, ev stripe.Event) error {
	var inv invoiceObject
	if err := decodeObject(ev, &inv); err != nil {
		return err
	}
	sub := string(inv.Subscription)
	if sub == "" && inv.Parent != nil && inv.Parent.SubscriptionDetails != nil {
		sub = string(inv.Parent.SubscriptionDetails.Subscription)
	}
	if sub == "" || !metering.ValidAccountID(sub) {
		log.Debug("invoice ignored: not a subscription's", zap.String("invoice", inv.ID))
		return errIgnored
	}
	account, err := s.customerAccount(ctx, string(inv.Customer), "")
	if err != nil {
		return err
	}
	log = log.With(zap.String("account", account), zap.String("subscription", sub), zap.String("invoice", inv.ID))
	at := time.Unix(ev.Created, 0).UTC()
	var applied bool
	if ev.Type == stripe.EventTypeInvoicePaid {
		var start, end int64
		for _, l := range inv.Lines.Data {
			if l.Period.Start > start && l.Period.End > l.Period.Start {
				start, end = l.Period.Start, l.Period.End
			}
		}
		applied, err = s.store.SubscriptionPaid(ctx, account, sub, unixOrZero(start), unixOrZero(end), at)
	} else {
		reason := "invoice " + inv.ID + " payment failed (attempt " + strconv.FormatInt(inv.AttemptCount, 10) + ")"
		applied, err = s.store.SubscriptionPaymentFailed(ctx, account, sub, reason, at)
	}
	if err != nil {
		return err
	}
	log.Info("subscription invoice recorded", zap.Bool("applied", applied))
	return nil
}

// onPaymentIntent handles the PaymentIntents this server made off session:
// payment_intent.succeeded credits a direct purchase or an auto-recharge
// through the same reference as the request that made it (so once, whoever
// is first); payment_intent.payment_failed ends an auto-recharge that was
// left processing. PaymentIntents of Checkout sessions carry no purchase id
// and are credited by the checkout events.
func (s *Server) onPaymentIntent(ctx context.Context, log *zap.Logger, ev stripe.Event) error {
	var pi paymentIntentObject
	if err := decodeObject(ev, &pi); err != nil {
		return err
	}
	account, purchase, kind := pi.Metadata[metaAccount], pi.Metadata[metaPurchase], pi.Metadata[metaKind]
	if purchase == "" || pi.ID == "" || !metering.ValidAccountID(account) || !metering.ValidAccountID(purchase) {
		return errIgnored
	}
	log = log.With(zap.String("account", account), zap.String("purchase_id", purchase), zap.String("payment_intent", pi.ID),
		zap.String("kind", kind))
	if ev.Type == stripe.EventTypePaymentIntentPaymentFailed {
		if kind != kindRecharge {
			return errIgnored
		}
		reason := "payment_failed"
		if e := pi.LastPaymentError; e != nil {
			reason = strings.TrimSpace(firstNonEmpty(e.DeclineCode, e.Code, reason) + ": " + e.Message)
		}
		ended, failures, disabled, err := s.store.FailRecharge(ctx, metering.RechargeFailure{
			Account: account, ID: purchase, Reason: reason, Counts: true, MaxFailures: s.opts.MaxFailures,
			Backoff: DefaultRechargeBackoff,
		})
		if err != nil {
			return err
		}
		log.Info("auto-recharge payment failed", zap.Bool("ended", ended), zap.Int("failures", failures), zap.Bool("disabled", disabled))
		return nil
	}
	amount := pi.AmountReceived
	if amount <= 0 {
		amount = pi.Amount
	}
	fields := map[string]string{"stripe_event_id": ev.ID}
	var (
		res metering.Fulfilled
		err error
	)
	if kind == kindRecharge {
		fields["description"] = "Auto-recharge"
		if p, perr := s.catalog.Pack(pi.Metadata[metaPack]); perr == nil {
			fields["description"] = "Auto-recharge: " + p.Name + " credit pack"
		}
		res, err = s.store.CompleteRecharge(ctx, metering.RechargePayment{Account: account, ID: purchase, PaymentID: pi.ID,
			AmountMinor: amount, Currency: strings.ToLower(pi.Currency), Fields: fields})
	} else {
		fields["description"] = "Credit pack"
		if p, perr := s.catalog.Pack(pi.Metadata[metaPack]); perr == nil {
			fields["description"] = p.Name + " credit pack"
		}
		fields["source"] = "direct_purchase"
		res, err = s.store.FulfilCheckout(ctx, metering.Fulfilment{Account: account, SessionID: purchase, PaymentID: pi.ID,
			AmountMinor: amount, Currency: strings.ToLower(pi.Currency), Fields: fields})
	}
	var mismatch *metering.MismatchError
	switch {
	case errors.As(err, &mismatch):
		log.Error("payment NOT credited: amount paid differs from the pack sold", zap.Int64("amount", amount),
			zap.String("currency", pi.Currency), zap.Int64("expected_minor", mismatch.ExpectedMinor),
			zap.String("expected_currency", mismatch.ExpectedCurrency))
		return errIgnored
	case errors.Is(err, metering.ErrNotFound), errors.Is(err, metering.ErrNoAccount):
		log.Warn("payment ignored: no purchase of ours", zap.Error(err))
		return errIgnored
	case err != nil:
		return err
	}
	log.Info("payment credited", zap.Bool("applied", res.Applied), zap.Int64("credits_mc", res.Credits),
		zap.Int64("balance_after", res.BalanceAfter))
	return nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
