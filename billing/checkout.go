package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/stripe/stripe-go/v76"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Metadata keys set on Stripe objects, for people reading the Stripe
// dashboard and as hints; credits always come from our own record. The
// PaymentIntent's metadata is copied by Stripe onto its charge, which lets a
// refund that overtakes its purchase be retried rather than dropped.
const (
	metaAccount    = "account"
	metaPack       = "pack"
	metaCredits    = "credits_mc"
	metaPriceMinor = "price_minor"
	metaCurrency   = "currency"
)

type checkoutRequest struct {
	Pack string `json:"pack"`
}

// POST /v1/billing/checkout {"pack":"growth"} → {"id","url"}: a Stripe
// Checkout Session in payment mode. Credits arrive only through the webhook.
func (s *Server) checkout(w http.ResponseWriter, r *http.Request, account string) error {
	var req checkoutRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	pack, err := s.catalog.Pack(req.Pack)
	if err != nil {
		return badRequest("unknown_pack", "pack", "unknown pack %q; valid packs: %s", req.Pack, strings.Join(s.packKeys(), ", "))
	}
	if s.stripe == nil {
		return errPaymentsOff
	}
	ctx := r.Context()
	sess, err := s.packSession(ctx, account, pack, s.checkoutIdempotencyKey(r, account, pack.Key), false)
	if err != nil {
		return err
	}
	s.log.Info("checkout created", zap.String("request_id", infoFrom(ctx).id), zap.String("account", account),
		zap.String("pack", pack.Key), zap.String("session_id", sess.ID), zap.Int64("price_minor", pack.PriceMinor))
	writeJSON(w, http.StatusOK, struct {
		ID      string  `json:"id"`
		URL     string  `json:"url"`
		Pack    string  `json:"pack"`
		Credits Credits `json:"credits"`
	}{sess.ID, sess.URL, pack.Key, Credits(pack.Credits)})
	return nil
}

// packSession creates a Checkout Session (payment mode) selling pack to
// account, and records it for the webhook's fulfilment. saveCard asks Stripe
// to keep the card for later off-session charges (direct purchases,
// auto-recharge).
func (s *Server) packSession(ctx context.Context, account string, pack pricing.Pack, idempotencyKey string, saveCard bool) (*stripe.CheckoutSession, error) {
	customer, err := s.customer(ctx, account)
	if err != nil {
		return nil, err
	}
	credits := pricing.FormatCredits(pack.Credits)
	meta := map[string]string{
		metaAccount: account, metaPack: pack.Key, metaCredits: strconv.FormatInt(pack.Credits, 10),
		metaPriceMinor: strconv.FormatInt(pack.PriceMinor, 10), metaCurrency: pack.Currency,
	}
	desc := groupThousands(strings.TrimSuffix(credits, ".000")) + " credits"
	if pack.Note != "" {
		desc += " (" + pack.Note + ")"
	}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModePayment)),
		Customer:          stripe.String(customer),
		ClientReferenceID: stripe.String(account),
		SuccessURL:        stripe.String(s.successURL),
		CancelURL:         stripe.String(s.cancelURL),
		LineItems: []*stripe.CheckoutSessionLineItemParams{{
			Quantity: stripe.Int64(1),
			PriceData: &stripe.CheckoutSessionLineItemPriceDataParams{
				Currency:   stripe.String(pack.Currency),
				UnitAmount: stripe.Int64(pack.PriceMinor),
				ProductData: &stripe.CheckoutSessionLineItemPriceDataProductDataParams{
					Name:        stripe.String(pack.Name + " credit pack"),
					Description: stripe.String(desc),
				},
			},
		}},
		Metadata: meta,
		PaymentIntentData: &stripe.CheckoutSessionPaymentIntentDataParams{
			Description: stripe.String(pack.Name + " credit pack: " + desc),
			Metadata:    map[string]string{metaAccount: account, metaPack: pack.Key},
		},
	}
	if saveCard {
		params.PaymentIntentData.SetupFutureUsage = stripe.String(string(stripe.PaymentIntentSetupFutureUsageOffSession))
	}
	params.Context = ctx
	params.SetIdempotencyKey(idempotencyKey)
	sess, err := s.stripe.CheckoutSessions.New(params)
	if err != nil {
		return nil, fmt.Errorf("creating checkout session: %w: %w", errStripe, err)
	}
	if sess.ID == "" || sess.URL == "" {
		return nil, fmt.Errorf("creating checkout session: %w: response without id or url", errStripe)
	}
	err = s.store.SaveCheckout(ctx, metering.Checkout{
		SessionID: sess.ID, Account: account, Pack: pack.Key, Credits: pack.Credits,
		PriceMinor: pack.PriceMinor, Currency: pack.Currency,
	})
	if err != nil {
		// The session exists at Stripe, but without our record it would not
		// be credited: the buyer never sees its URL.
		return nil, fmt.Errorf("recording checkout: %w", err)
	}
	return sess, nil
}

// customer returns the account's Stripe customer, creating it once. Two
// first checkouts racing share one customer: Stripe answers the same
// idempotency key with the same customer, and the store keeps the first one
// remembered.
func (s *Server) customer(ctx context.Context, account string) (string, error) {
	id, err := s.store.StripeCustomer(ctx, account)
	if err != nil {
		return "", fmt.Errorf("reading Stripe customer: %w", err)
	}
	if id != "" {
		return id, nil
	}
	params := &stripe.CustomerParams{
		Description: stripe.String("Tollgate account " + account),
		Metadata:    map[string]string{metaAccount: account},
	}
	params.Context = ctx
	params.SetIdempotencyKey("customer-" + account)
	c, err := s.stripe.Customers.New(params)
	if err != nil {
		return "", fmt.Errorf("creating Stripe customer: %w: %w", errStripe, err)
	}
	if c.ID == "" {
		return "", fmt.Errorf("creating Stripe customer: %w: response without id", errStripe)
	}
	id, err = s.store.RememberStripeCustomer(ctx, account, c.ID)
	if err != nil {
		if errors.Is(err, metering.ErrNotFound) { // an id we could not store as a key
			return "", fmt.Errorf("remembering Stripe customer: %w: %w", errStripe, err)
		}
		return "", fmt.Errorf("remembering Stripe customer: %w", err)
	}
	return id, nil
}

// checkoutIdempotencyKey: a caller's Idempotency-Key header makes a retried
// checkout return the same session; otherwise each checkout is new (the
// library retries with the key it is given).
func (s *Server) checkoutIdempotencyKey(r *http.Request, account, pack string) string {
	if k := r.Header.Get("Idempotency-Key"); k != "" && len(k) <= 64 && plainID(k) {
		return "checkout-" + account + "-" + pack + "-" + k
	}
	return "checkout-" + account + "-" + randomHex(16)
}

func (s *Server) packKeys() []string {
	packs := s.catalog.Packs()
	keys := make([]string, len(packs))
	for i, p := range packs {
		keys[i] = p.Key
	}
	return keys
}

// groupThousands writes the integer part of a decimal with commas: "2374050" → "2,374,050".
func groupThousands(s string) string {
	intPart, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		b.WriteString("." + frac)
	}
	return b.String()
}
