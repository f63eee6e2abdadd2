package billing

import (
	"context"

	"github.com/tollgate/tollgate/metering"
)

// Store is what billing needs of the ledger. *metering.Store implements it;
// billing never builds a Redis command itself.
type Store interface {
	Ping(ctx context.Context) error

	CreateAccount(ctx context.Context, id string) (metering.Account, error)
	EnsureAccount(ctx context.Context, id string) (created bool, err error)
	Account(ctx context.Context, id string) (metering.Account, error)
	Credit(ctx context.Context, c metering.Credit) (metering.Credited, error)
	Ledger(ctx context.Context, account string, q metering.LedgerQuery) ([]metering.Entry, error)

	CreateKey(ctx context.Context, account, name string, creditLimit int64) (metering.Key, string, error)
	RevokeKey(ctx context.Context, account, keyID string) error
	Keys(ctx context.Context, account string) ([]metering.KeyUsage, error)

	StripeCustomer(ctx context.Context, account string) (string, error)
	RememberStripeCustomer(ctx context.Context, account, customer string) (string, error)
	SaveCheckout(ctx context.Context, c metering.Checkout) error
	FulfilCheckout(ctx context.Context, f metering.Fulfilment) (metering.Fulfilled, error)
	AccountForPayment(ctx context.Context, payment string) (string, error)
	ReversePurchase(ctx context.Context, r metering.Reversal) (metering.Reversed, error)
	BillingHistory(ctx context.Context, account string, q metering.LedgerQuery) ([]metering.Entry, error)
}

var _ Store = (*metering.Store)(nil)
