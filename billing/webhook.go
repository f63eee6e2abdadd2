package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// maxWebhookBody caps a webhook payload; Stripe's events are far smaller.
const maxWebhookBody = 1 << 20

// errIgnored marks an event that is verified but not for us (or not
// actionable); it is answered 200 so that Stripe stops sending it.
var errIgnored = errors.New("billing: event ignored")

// POST /v1/billing/webhook — Stripe-signed. 400 on a bad or stale signature;
// 2xx only once the event's effect is stored; non-2xx (Stripe retries) when
// the store is unavailable.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) (err error) {
	typ, result := "unknown", "processed"
	if s.opts.OnWebhook != nil {
		defer func() { s.opts.OnWebhook(typ, webhookResult(result, err)) }()
	}
	secret := s.cfg.Stripe.WebhookSecret
	if secret == "" {
		result = "disabled"
		return errWebhooksOff
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest, code: "body_too_large",
				message: "webhook payload larger than " + strconv.Itoa(maxWebhookBody) + " bytes"}
		}
		return badRequest("invalid_body", "", "could not read the request body")
	}
	// The library's API version and the account's may differ: the fields we
	// read are stable across versions.
	ev, err := webhook.ConstructEventWithOptions(body, r.Header.Get("Stripe-Signature"), secret,
		webhook.ConstructEventOptions{IgnoreAPIVersionMismatch: true})
	if err != nil {
		s.log.Warn("webhook refused", zap.String("request_id", infoFrom(r.Context()).id), zap.Error(err))
		result = "bad_signature"
		return errBadSignature
	}
	typ = "other"
	if ev.Data == nil || len(ev.Data.Raw) == 0 {
		return badRequest("invalid_event", "", "event without data.object")
	}
	log := s.log.With(zap.String("request_id", infoFrom(r.Context()).id), zap.String("event_id", ev.ID),
		zap.String("event_type", string(ev.Type)))
	switch ev.Type {
	case stripe.EventTypeCheckoutSessionCompleted, stripe.EventTypeCheckoutSessionAsyncPaymentSucceeded:
		err = s.onCheckoutPaid(r.Context(), log, ev)
	case stripe.EventTypeChargeRefunded:
		err = s.onRefund(r.Context(), log, ev)
	case stripe.EventTypeChargeDisputeCreated, stripe.EventTypeChargeDisputeClosed:
		err = s.onDispute(r.Context(), log, ev)
	case stripe.EventTypeCustomerSubscriptionCreated, stripe.EventTypeCustomerSubscriptionUpdated,
		stripe.EventTypeCustomerSubscriptionDeleted:
		err = s.onSubscription(r.Context(), log, ev)
	case stripe.EventTypeInvoicePaid, stripe.EventTypeInvoicePaymentFailed:
		err = s.onInvoice(r.Context(), log, ev)
	case stripe.EventTypePaymentIntentSucceeded, stripe.EventTypePaymentIntentPaymentFailed:
		err = s.onPaymentIntent(r.Context(), log, ev)
	default:
		err = errIgnored
	}
	if knownEvent(ev.Type) {
		typ = string(ev.Type) // one of the few types handled above
	}
	ignored := errors.Is(err, errIgnored)
	if ignored {
		result = "ignored"
	}
	if err != nil && !ignored {
		return fmt.Errorf("handling %s %s: %w", ev.Type, ev.ID, err)
	}
	writeJSON(w, http.StatusOK, struct {
		Received bool `json:"received"`
		Ignored  bool `json:"ignored,omitempty"`
	}{true, ignored})
	return nil
}

func decodeObject(ev stripe.Event, dst any) error {
	if err := json.Unmarshal(ev.Data.Raw, dst); err != nil {
		return badRequest("invalid_event", "", "data.object of %s is not a valid object", ev.Type)
	}
	return nil
}

// onCheckoutPaid credits a paid checkout session, once per session whatever
// events announce it (completed and async_payment_succeeded, retried,
// reordered): FulfilCheckout's reference is the session.
func (s *Server) onCheckoutPaid(ctx context.Context, log *zap.Logger, ev stripe.Event) error {
	var sess stripe.CheckoutSession
	if err := decodeObject(ev, &sess); err != nil {
		return err
	}
	log = log.With(zap.String("session_id", sess.ID))
	if sess.Mode != stripe.CheckoutSessionModePayment {
		log.Debug("checkout ignored: not a payment session", zap.String("mode", string(sess.Mode)))
		return errIgnored
	}
	if ev.Type == stripe.EventTypeCheckoutSessionCompleted && sess.PaymentStatus != stripe.CheckoutSessionPaymentStatusPaid {
		// A delayed payment method: async_payment_succeeded will follow.
		log.Info("checkout completed, payment pending", zap.String("payment_status", string(sess.PaymentStatus)))
		return errIgnored
	}
	account := sess.ClientReferenceID
	if account == "" {
		account = sess.Metadata[metaAccount]
	}
	if !metering.ValidAccountID(account) || sess.ID == "" {
		log.Warn("checkout ignored: no account of ours", zap.String("client_reference_id", sess.ClientReferenceID))
		return errIgnored
	}
	var payment string
	if sess.PaymentIntent != nil {
		payment = sess.PaymentIntent.ID
	}
	log = log.With(zap.String("account", account), zap.String("payment_intent", payment))
	desc := "Credit pack"
	if p, err := s.catalog.Pack(sess.Metadata[metaPack]); err == nil {
		desc = p.Name + " credit pack"
	}
	res, err := s.store.FulfilCheckout(ctx, metering.Fulfilment{
		Account: account, SessionID: sess.ID, PaymentID: payment,
		AmountMinor: sess.AmountTotal, Currency: strings.ToLower(string(sess.Currency)),
		Fields: map[string]string{"description": desc, "stripe_event_id": ev.ID},
	})
	var mismatch *metering.MismatchError
	switch {
	case errors.As(err, &mismatch):
		// Refused, and answered 200: the session's amount will never change,
		// so Stripe's retries could not fix it. It needs a person: logged as
		// an error, with both amounts.
		log.Error("checkout NOT credited: amount paid differs from the pack sold",
			zap.Int64("amount_total", sess.AmountTotal), zap.String("currency", string(sess.Currency)),
			zap.Int64("expected_minor", mismatch.ExpectedMinor), zap.String("expected_currency", mismatch.ExpectedCurrency))
		return errIgnored
	case errors.Is(err, metering.ErrNotFound), errors.Is(err, metering.ErrNoAccount):
		// Not sold here (another integration on the same Stripe account), or
		// its record expired: nothing of ours to credit.
		log.Warn("checkout ignored: no checkout of ours", zap.Error(err))
		return errIgnored
	case err != nil:
		return err
	}
	if res.Applied {
		log.Info("checkout credited", zap.Int64("credits_mc", res.Credits), zap.Int64("balance_after", res.BalanceAfter))
	} else {
		log.Info("checkout already credited")
	}
	return nil
}

// onRefund takes back the credits of a refunded payment, in proportion to
// Stripe's cumulative amount_refunded: repeated, partial and reordered refund
// events never take more than the purchase bought.
func (s *Server) onRefund(ctx context.Context, log *zap.Logger, ev stripe.Event) error {
	var ch stripe.Charge
	if err := decodeObject(ev, &ch); err != nil {
		return err
	}
	if ch.PaymentIntent == nil || ch.PaymentIntent.ID == "" || ch.ID == "" {
		log.Info("refund ignored: charge without payment intent", zap.String("charge", ch.ID))
		return errIgnored
	}
	payment := ch.PaymentIntent.ID
	account, err := s.paymentAccount(ctx, payment, ch.Metadata[metaAccount])
	if err != nil {
		return err
	}
	log = log.With(zap.String("account", account), zap.String("payment_intent", payment), zap.String("charge", ch.ID))
	res, err := s.store.ReversePurchase(ctx, metering.Reversal{
		Account: account, PaymentID: payment, Kind: metering.Refund,
		Reference: "refund:" + ch.ID + ":" + strconv.FormatInt(ch.AmountRefunded, 10),
		Minor:     ch.AmountRefunded,
		Fields: map[string]string{
			"description": "Refund", "charge_id": ch.ID, "stripe_event_id": ev.ID,
			"refunded_minor": strconv.FormatInt(ch.AmountRefunded, 10),
		},
	})
	if err != nil {
		return err
	}
	log.Info("refund applied", zap.Bool("applied", res.Applied), zap.Int64("removed_mc", res.Removed),
		zap.Int64("balance_after", res.BalanceAfter), zap.Int64("amount_refunded", ch.AmountRefunded))
	return nil
}

// onDispute takes back the disputed share of a payment's credits when a
// dispute opens, once per dispute, and gives it back when the dispute closes
// won — or closes as an inquiry that never became a chargeback
// (warning_closed). A lost dispute keeps what was taken. The two events may
// arrive in either order: a win recorded first means the opening takes nothing.
func (s *Server) onDispute(ctx context.Context, log *zap.Logger, ev stripe.Event) error {
	var d stripe.Dispute
	if err := decodeObject(ev, &d); err != nil {
		return err
	}
	opened, won := disputeRef(d.ID), disputeWonRef(d.ID)
	rev := metering.Reversal{Kind: metering.Dispute, Reference: opened, Linked: won, Minor: d.Amount}
	if ev.Type == stripe.EventTypeChargeDisputeClosed {
		if d.Status != stripe.DisputeStatusWon && d.Status != stripe.DisputeStatusWarningClosed {
			log.Info("dispute closed; the credits stay taken back", zap.String("dispute", d.ID), zap.String("status", string(d.Status)))
			return errIgnored
		}
		rev = metering.Reversal{Kind: metering.DisputeWon, Reference: won, Linked: opened}
	}
	var payment, charge, hint string
	if d.PaymentIntent != nil {
		payment = d.PaymentIntent.ID
	}
	if d.Charge != nil {
		charge = d.Charge.ID
	}
	if payment == "" && charge != "" && s.stripe != nil {
		// Older API versions name only the charge: ask Stripe for its payment.
		params := &stripe.ChargeParams{}
		params.Context = ctx
		ch, err := s.stripe.Charges.Get(charge, params)
		if err != nil {
			return fmt.Errorf("reading disputed charge: %w: %w", errStripe, err)
		}
		if ch.PaymentIntent != nil {
			payment = ch.PaymentIntent.ID
		}
		hint = ch.Metadata[metaAccount]
	}
	if payment == "" || d.ID == "" {
		log.Warn("dispute ignored: no payment intent", zap.String("dispute", d.ID), zap.String("charge", charge))
		return errIgnored
	}
	account, err := s.paymentAccount(ctx, payment, hint)
	if err != nil {
		return err
	}
	log = log.With(zap.String("account", account), zap.String("payment_intent", payment), zap.String("dispute", d.ID))
	rev.Account, rev.PaymentID = account, payment
	rev.Fields = map[string]string{
		"description": "Dispute", "dispute_id": d.ID, "charge_id": charge, "stripe_event_id": ev.ID,
		"disputed_minor": strconv.FormatInt(d.Amount, 10), "dispute_status": string(d.Status),
	}
	if rev.Kind == metering.DisputeWon {
		rev.Fields["description"] = "Dispute won"
	}
	res, err := s.store.ReversePurchase(ctx, rev)
	if err != nil {
		return err
	}
	log.Info("dispute applied", zap.String("kind", string(rev.Kind)), zap.Bool("applied", res.Applied),
		zap.Int64("removed_mc", res.Removed), zap.Int64("balance_after", res.BalanceAfter))
	return nil
}

func disputeRef(id string) string    { return "dispute:" + id }
func disputeWonRef(id string) string { return "dispute_won:" + id }

// paymentAccount finds the account a payment credited. A payment we never
// credited is ignored — unless Stripe's metadata says it is ours, in which
// case its purchase is still to be credited and the event is retried.
func (s *Server) paymentAccount(ctx context.Context, payment, hint string) (string, error) {
	account, err := s.store.AccountForPayment(ctx, payment)
	switch {
	case err == nil:
		return account, nil
	case !errors.Is(err, metering.ErrNotFound):
		return "", err
	case metering.ValidAccountID(hint):
		return hint, nil // ReversePurchase answers ErrPending until the purchase is credited
	}
	return "", fmt.Errorf("payment %q is not a purchase of ours: %w", payment, errIgnored)
}

// knownEvent: a type the webhook acts on (the switch in webhook), which
// metrics name; any other is counted as "other", so that a label stays a
// short fixed set whatever Stripe sends.
func knownEvent(t stripe.EventType) bool {
	switch t {
	case stripe.EventTypeCheckoutSessionCompleted, stripe.EventTypeCheckoutSessionAsyncPaymentSucceeded,
		stripe.EventTypeChargeRefunded, stripe.EventTypeChargeDisputeCreated, stripe.EventTypeChargeDisputeClosed,
		stripe.EventTypeCustomerSubscriptionCreated, stripe.EventTypeCustomerSubscriptionUpdated,
		stripe.EventTypeCustomerSubscriptionDeleted, stripe.EventTypeInvoicePaid, stripe.EventTypeInvoicePaymentFailed,
		stripe.EventTypePaymentIntentSucceeded, stripe.EventTypePaymentIntentPaymentFailed:
		return true
	}
	return false
}

// webhookResult is a delivery's result once answered: an error that is no
// signature or switch-off turns it into "invalid" (400) or "error".
func webhookResult(result string, err error) string {
	if err == nil || result != "processed" {
		return result
	}
	var ae *apiError
	if errors.As(err, &ae) && ae.status < 500 {
		return "invalid"
	}
	return "error"
}
