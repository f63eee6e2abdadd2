package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// Payments is what direct purchases and auto-recharge need of the payment
// provider: the customer's saved card, and an off-session charge on it.
// stripePayments implements it over a client.API; tests substitute declines
// and 3-D Secure, which stripe-mock cannot produce.
type Payments interface {
	// DefaultCard returns the customer's card for off-session charges: the
	// invoice default payment method, else its most recent card; "" when it
	// has none.
	DefaultCard(ctx context.Context, customer string) (string, error)
	// ChargeOffSession creates and confirms an off-session PaymentIntent.
	// What the bank answers (declined, authentication required) is a result,
	// not an error; errors wrap errStripe and say whether a retry may help
	// (transient).
	ChargeOffSession(ctx context.Context, c OffSessionCharge) (PaymentResult, error)
}

// OffSessionCharge is a charge of a saved card without the cardholder.
type OffSessionCharge struct {
	Customer       string
	PaymentMethod  string
	AmountMinor    int64
	Currency       string
	Description    string
	IdempotencyKey string // the same key twice is the same PaymentIntent (Stripe keeps keys 24h)
	Metadata       map[string]string
}

// PaymentStatus is what became of an off-session charge.
type PaymentStatus string

// Payment statuses.
const (
	PaymentSucceeded   PaymentStatus = "succeeded"
	PaymentProcessing  PaymentStatus = "processing"      // the outcome arrives by webhook
	PaymentNeedsAction PaymentStatus = "requires_action" // the bank asks the cardholder to authenticate
	PaymentDeclined    PaymentStatus = "declined"
)

// PaymentResult is an off-session charge's outcome.
type PaymentResult struct {
	ID          string // the PaymentIntent ("" when none was created)
	Status      PaymentStatus
	AmountMinor int64
	Currency    string
	Code        string // the provider's decline or error code, when not succeeded
	Message     string // the provider's explanation, when not succeeded
}

// transientError is a provider failure worth retrying (network, 429, 5xx).
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// isTransient reports whether err is worth retrying later.
func isTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

// stripeFailure wraps a Stripe client error: transient unless Stripe
// answered with a client error (4xx other than 429).
func stripeFailure(op string, err error) error {
	wrapped := fmt.Errorf("%s: %w: %w", op, errStripe, err)
	var se *stripe.Error
	if errors.As(err, &se) && se.HTTPStatusCode >= 400 && se.HTTPStatusCode < 500 &&
		se.HTTPStatusCode != http.StatusTooManyRequests && se.HTTPStatusCode != http.StatusConflict { // 409: the same idempotency key is still in flight
		return wrapped
	}
	return &transientError{wrapped}
}

// stripePayments is Payments over a Stripe client.
type stripePayments struct{ api *client.API }

// NewStripePayments returns the Payments of a Stripe client.
func NewStripePayments(api *client.API) Payments { return stripePayments{api} }

func (p stripePayments) DefaultCard(ctx context.Context, customer string) (string, error) {
	params := &stripe.CustomerParams{}
	params.Context = ctx
	params.AddExpand("invoice_settings.default_payment_method")
	c, err := p.api.Customers.Get(customer, params)
	if err != nil {
		var se *stripe.Error
		if errors.As(err, &se) && se.HTTPStatusCode == http.StatusNotFound {
			return "", nil
		}
		return "", stripeFailure("reading the customer", err)
	}
	if c.Deleted {
		return "", nil
	}
	if s := c.InvoiceSettings; s != nil && s.DefaultPaymentMethod != nil && s.DefaultPaymentMethod.ID != "" {
		return s.DefaultPaymentMethod.ID, nil
	}
	lp := &stripe.CustomerListPaymentMethodsParams{Customer: stripe.String(customer), Type: stripe.String("card")}
	lp.Context = ctx
	lp.Limit = stripe.Int64(1)
	lp.Single = true
	it := p.api.Customers.ListPaymentMethods(lp)
	if it.Next() {
		return it.PaymentMethod().ID, nil
	}
	if err := it.Err(); err != nil {
		return "", stripeFailure("listing the customer's cards", err)
	}
	return "", nil
}

func (p stripePayments) ChargeOffSession(ctx context.Context, c OffSessionCharge) (PaymentResult, error) {
	params := &stripe.PaymentIntentParams{
		Amount: stripe.Int64(c.AmountMinor), Currency: stripe.String(c.Currency),
		Customer: stripe.String(c.Customer), PaymentMethod: stripe.String(c.PaymentMethod),
		OffSession: stripe.Bool(true), Confirm: stripe.Bool(true),
		Description: stripe.String(c.Description), Metadata: c.Metadata,
	}
	params.Context = ctx
	if c.IdempotencyKey != "" {
		params.SetIdempotencyKey(c.IdempotencyKey)
	}
	pi, err := p.api.PaymentIntents.New(params)
	if err != nil {
		var se *stripe.Error
		if errors.As(err, &se) && se.Type == stripe.ErrorTypeCard {
			// The bank's answer: Stripe reports a declined or unauthenticated
			// off-session confirmation as a card error (402).
			res := PaymentResult{Status: PaymentDeclined, Code: string(se.Code), Message: se.Msg,
				AmountMinor: c.AmountMinor, Currency: c.Currency}
			if se.DeclineCode != "" {
				res.Code = string(se.DeclineCode)
			}
			if se.Code == stripe.ErrorCodeAuthenticationRequired {
				res.Status = PaymentNeedsAction
			}
			if se.PaymentIntent != nil {
				res.ID = se.PaymentIntent.ID
				if se.PaymentIntent.Status == stripe.PaymentIntentStatusRequiresAction {
					res.Status = PaymentNeedsAction
				}
			}
			return res, nil
		}
		return PaymentResult{}, stripeFailure("charging off session", err)
	}
	return paymentResult(pi), nil
}

func paymentResult(pi *stripe.PaymentIntent) PaymentResult {
	res := PaymentResult{ID: pi.ID, AmountMinor: pi.Amount, Currency: string(pi.Currency)}
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		res.Status = PaymentSucceeded
	case stripe.PaymentIntentStatusProcessing, stripe.PaymentIntentStatusRequiresCapture:
		res.Status = PaymentProcessing
	case stripe.PaymentIntentStatusRequiresAction, stripe.PaymentIntentStatusRequiresConfirmation:
		res.Status, res.Code = PaymentNeedsAction, string(stripe.ErrorCodeAuthenticationRequired)
	default: // requires_payment_method, canceled
		res.Status, res.Code = PaymentDeclined, "card_declined"
		if e := pi.LastPaymentError; e != nil {
			if e.Code != "" {
				res.Code = string(e.Code)
			}
			if e.DeclineCode != "" {
				res.Code = string(e.DeclineCode)
			}
			res.Message = e.Msg
		}
	}
	return res
}
