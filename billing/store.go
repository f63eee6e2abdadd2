package billing

import (
	"context"
	"time"

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

	IssueKey(ctx context.Context, k metering.NewKey) (metering.Key, string, error)
	RevokeKey(ctx context.Context, account, keyID string) error
	Keys(ctx context.Context, account string) ([]metering.KeyUsage, error)
	SetKeySettings(ctx context.Context, account, keyID string, name *string, ks metering.KeySettings) (metering.Key, error)

	StripeCustomer(ctx context.Context, account string) (string, error)
	RememberStripeCustomer(ctx context.Context, account, customer string) (string, error)
	SaveCheckout(ctx context.Context, c metering.Checkout) error
	FulfilCheckout(ctx context.Context, f metering.Fulfilment) (metering.Fulfilled, error)
	AccountForPayment(ctx context.Context, payment string) (string, error)
	ReversePurchase(ctx context.Context, r metering.Reversal) (metering.Reversed, error)
	BillingHistory(ctx context.Context, account string, q metering.LedgerQuery) ([]metering.Entry, error)
	AccountForCustomer(ctx context.Context, customer string) (string, error)

	// Teams (members.go): members, their roles, the audit log.
	ChangeMember(ctx context.Context, c metering.MemberChange) (string, error)
	CheckMemberRemoval(ctx context.Context, c metering.MemberChange) error
	Members(ctx context.Context, account string) ([]metering.Member, error)
	MemberRole(ctx context.Context, account, user string) (string, error)
	AppendAudit(ctx context.Context, e metering.AuditEntry) (metering.AuditEntry, error)
	Audit(ctx context.Context, account string, limit int64) ([]metering.AuditEntry, error)
	SetMemberBudgetBy(ctx context.Context, account, user string, budget int64, period, actor string, byOwner bool) error
	MemberBudgets(ctx context.Context, account string) (map[string]metering.MemberBudget, error)

	// Subscriptions and plan usage.
	Subscription(ctx context.Context, account string) (metering.Subscription, error)
	SaveSubscription(ctx context.Context, account string, sub metering.Subscription, at time.Time) (bool, error)
	EndSubscription(ctx context.Context, account, sub string, endedAt, at time.Time) (bool, error)
	SubscriptionPaid(ctx context.Context, account, sub string, periodStart, periodEnd, at time.Time) (bool, error)
	SubscriptionPaymentFailed(ctx context.Context, account, sub, reason string, at time.Time) (bool, error)
	ScheduleCancel(ctx context.Context, account, sub string, cancelAt time.Time) (bool, error)
	PlanUsage(ctx context.Context, account string) (metering.Subscription, metering.Usage, error)

	// Auto-recharge.
	AutoRecharge(ctx context.Context, account string) (metering.AutoRecharge, error)
	SetAutoRecharge(ctx context.Context, account string, st metering.AutoRechargeSettings) error
	EnsureRechargeGroup(ctx context.Context, group string) error
	ReadRecharges(ctx context.Context, group, consumer string, count int64, block time.Duration) ([]metering.RechargeRequest, error)
	ClaimRecharges(ctx context.Context, group, consumer string, minIdle time.Duration, count int64) ([]metering.RechargeRequest, error)
	AckRecharge(ctx context.Context, group, streamID string) error
	BeginRecharge(ctx context.Context, account, id string, sale metering.RechargeSale) (metering.RechargeBegun, error)
	CompleteRecharge(ctx context.Context, p metering.RechargePayment) (metering.Fulfilled, error)
	FailRecharge(ctx context.Context, f metering.RechargeFailure) (ended bool, failures int, disabled bool, err error)
}

var _ Store = (*metering.Store)(nil)
