package books

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/metering"
)

// Store is a *metering.Store whose control-plane writes — accounts, API
// keys, Stripe customers, subscriptions, auto-recharge settings, payments —
// reach the books before they are acknowledged: each is applied in Redis and
// then copied into PostgreSQL, and an error from either is the caller's
// error (the caller retries; every write is idempotent or harmless twice).
// Accounts are written to the books first, so that a restore knows every
// account Redis ever had. Everything else (calls, credits: the ledger) goes
// straight to Redis and reaches the books through the shipper. The billing
// process serves its API over a Store when a database is configured.
type Store struct {
	*metering.Store
	b *Books
}

// NewStore wraps st.
func (b *Books) NewStore(st *metering.Store) *Store { return &Store{Store: st, b: b} }

// CreateAccount records the account in the books, then creates it in Redis.
func (s *Store) CreateAccount(ctx context.Context, id string) (metering.Account, error) {
	if !metering.ValidAccountID(id) {
		return s.Store.CreateAccount(ctx, id) // its error
	}
	if err := s.b.AddAccount(ctx, id); err != nil {
		return metering.Account{}, err
	}
	return s.Store.CreateAccount(ctx, id)
}

// EnsureAccount records the account in the books, then in Redis.
func (s *Store) EnsureAccount(ctx context.Context, id string) (bool, error) {
	if !metering.ValidAccountID(id) {
		return s.Store.EnsureAccount(ctx, id)
	}
	if err := s.b.AddAccount(ctx, id); err != nil {
		return false, err
	}
	return s.Store.EnsureAccount(ctx, id)
}

// IssueKey issues the key in Redis and records it (metadata and hash) in
// the books; should the books fail, the key is revoked again and never
// handed out.
func (s *Store) IssueKey(ctx context.Context, nk metering.NewKey) (metering.Key, string, error) {
	k, secret, err := s.Store.IssueKey(ctx, nk)
	if err != nil {
		return k, secret, err
	}
	if err := s.b.SaveRecords(ctx, s.Store, nk.Account); err != nil {
		_ = s.Store.RevokeKey(context.WithoutCancel(ctx), nk.Account, k.ID)
		return metering.Key{}, "", err
	}
	if nk.Actor != "" { // its key.created entry, written with the key in Redis
		if err := s.b.saveAuditTail(ctx, s.Store, nk.Account); err != nil {
			_ = s.Store.RevokeKey(context.WithoutCancel(ctx), nk.Account, k.ID)
			return metering.Key{}, "", err
		}
	}
	return k, secret, nil
}

// CreateKey is IssueKey without a cap.
func (s *Store) CreateKey(ctx context.Context, account, name string, limit int64) (metering.Key, string, error) {
	return s.IssueKey(ctx, metering.NewKey{Account: account, Name: name, CreditLimit: limit})
}

// RevokeKey revokes in Redis and records it in the books.
func (s *Store) RevokeKey(ctx context.Context, account, keyID string) error {
	if err := s.Store.RevokeKey(ctx, account, keyID); err != nil {
		return err
	}
	return s.b.SaveRecords(ctx, s.Store, account)
}

// SetKeySettings changes a key's name and rules in Redis and records them in
// the books before it answers (a restore brings the rules back).
func (s *Store) SetKeySettings(ctx context.Context, account, keyID string, name *string, ks metering.KeySettings) (metering.Key, error) {
	k, err := s.Store.SetKeySettings(ctx, account, keyID, name, ks)
	if err != nil {
		return k, err
	}
	return k, s.b.SaveRecords(ctx, s.Store, account)
}

// RememberStripeCustomer records the customer in the books too.
func (s *Store) RememberStripeCustomer(ctx context.Context, account, customer string) (string, error) {
	c, err := s.Store.RememberStripeCustomer(ctx, account, customer)
	if err != nil {
		return c, err
	}
	return c, s.b.SaveRecords(ctx, s.Store, account)
}

// SaveCheckout records the sale in Redis and in the books before it answers:
// a checkout paid after Redis lost its data (an asynchronous payment can
// take days) is restored with the account and credited when its webhook
// comes, instead of being ignored as no checkout of ours.
func (s *Store) SaveCheckout(ctx context.Context, c metering.Checkout) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now() // one time for both records
	}
	if err := s.Store.SaveCheckout(ctx, c); err != nil {
		return err
	}
	r := metering.CheckoutRecord(c)
	fields, _ := json.Marshal(r.Fields)
	err := pgx.BeginFunc(ctx, s.b.pool, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		batch.Queue(sqlAddAccount, c.Account)
		batch.Queue(sqlPutRecord, c.Account, r.Name, fields)
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return unavailable("recording checkout", err)
	}
	return nil
}

// FulfilCheckout credits the sale in Redis, then records the payment.
func (s *Store) FulfilCheckout(ctx context.Context, f metering.Fulfilment) (metering.Fulfilled, error) {
	out, err := s.Store.FulfilCheckout(ctx, f)
	if err != nil {
		return out, err
	}
	return out, s.b.savePayment(ctx, s.Store, f.Account, metering.CheckoutReference(f.SessionID), f.SessionID, f.PaymentID)
}

// CompleteRecharge credits the recharge in Redis, then records the payment.
func (s *Store) CompleteRecharge(ctx context.Context, p metering.RechargePayment) (metering.Fulfilled, error) {
	out, err := s.Store.CompleteRecharge(ctx, p)
	if err != nil {
		return out, err
	}
	return out, s.b.savePayment(ctx, s.Store, p.Account, metering.RechargeReference(p.ID), p.ID, p.PaymentID)
}

// ReversePurchase applies the refund or dispute in Redis, then records what
// the payment has left.
func (s *Store) ReversePurchase(ctx context.Context, r metering.Reversal) (metering.Reversed, error) {
	out, err := s.Store.ReversePurchase(ctx, r)
	if err != nil {
		return out, err
	}
	return out, s.b.SaveRecords(ctx, s.Store, r.Account, r.PaymentID)
}

// SaveSubscription records the subscription in the books too.
func (s *Store) SaveSubscription(ctx context.Context, account string, sub metering.Subscription, at time.Time) (bool, error) {
	return s.after(ctx, account)(s.Store.SaveSubscription(ctx, account, sub, at))
}

// EndSubscription records the end in the books too.
func (s *Store) EndSubscription(ctx context.Context, account, sub string, endedAt, at time.Time) (bool, error) {
	return s.after(ctx, account)(s.Store.EndSubscription(ctx, account, sub, endedAt, at))
}

// SubscriptionPaid records the new period in the books too.
func (s *Store) SubscriptionPaid(ctx context.Context, account, sub string, start, end, at time.Time) (bool, error) {
	return s.after(ctx, account)(s.Store.SubscriptionPaid(ctx, account, sub, start, end, at))
}

// SubscriptionPaymentFailed records the failure in the books too.
func (s *Store) SubscriptionPaymentFailed(ctx context.Context, account, sub, reason string, at time.Time) (bool, error) {
	return s.after(ctx, account)(s.Store.SubscriptionPaymentFailed(ctx, account, sub, reason, at))
}

// ScheduleCancel records the cancellation in the books too.
func (s *Store) ScheduleCancel(ctx context.Context, account, sub string, cancelAt time.Time) (bool, error) {
	return s.after(ctx, account)(s.Store.ScheduleCancel(ctx, account, sub, cancelAt))
}

// SetAutoRecharge records the settings in the books too.
func (s *Store) SetAutoRecharge(ctx context.Context, account string, st metering.AutoRechargeSettings) error {
	if err := s.Store.SetAutoRecharge(ctx, account, st); err != nil {
		return err
	}
	return s.b.SaveRecords(ctx, s.Store, account)
}

// ChangeMember changes the member in Redis (where the rules that keep a
// team governable are checked atomically) and records the account's members
// in the books before it answers. A removal of a user who is no longer a
// member still records them: a retry after a books failure heals the books.
func (s *Store) ChangeMember(ctx context.Context, c metering.MemberChange) (string, error) {
	prev, err := s.Store.ChangeMember(ctx, c)
	if err != nil && !errors.Is(err, metering.ErrNoMember) {
		return prev, err
	}
	if serr := s.b.SaveRecords(ctx, s.Store, c.Account); serr != nil {
		return prev, serr
	}
	// The change's audit entry was written in Redis with the change; it (and
	// any a failed attempt left behind) reaches audit_log before the answer.
	if serr := s.b.saveAuditTail(ctx, s.Store, c.Account); serr != nil {
		return prev, serr
	}
	return prev, err
}

// auditTail is how many of the newest Redis audit entries ChangeMember
// copies into audit_log: the change's own and those of earlier attempts
// whose copy failed.
const auditTail = 20

// saveAuditTail copies an account's newest Redis audit entries into
// audit_log (each once: the id is the primary key).
func (b *Books) saveAuditTail(ctx context.Context, st *metering.Store, account string) error {
	es, err := st.Audit(ctx, account, auditTail)
	if err != nil {
		return err
	}
	batch := &pgx.Batch{}
	for _, e := range es {
		batch.Queue(`INSERT INTO audit_log (account, id, actor, action, target, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, account, e.ID, e.Actor, e.Action, e.Target, e.CreatedAt)
	}
	if err := b.pool.SendBatch(ctx, batch).Close(); err != nil {
		return unavailable("recording audit entries", err)
	}
	return nil
}

// SetMemberBudget sets the budget in Redis and records it in the books
// before it answers (a restore brings it back).
func (s *Store) SetMemberBudget(ctx context.Context, account, user string, budget int64, period string) error {
	return s.SetMemberBudgetBy(ctx, account, user, budget, period, "", true)
}

// SetMemberBudgetBy is SetMemberBudget with its audit entry (by actor),
// which reaches audit_log before the answer too.
func (s *Store) SetMemberBudgetBy(ctx context.Context, account, user string, budget int64, period, actor string, byOwner bool) error {
	if err := s.Store.SetMemberBudgetBy(ctx, account, user, budget, period, actor, byOwner); err != nil {
		return err
	}
	if err := s.b.SaveRecords(ctx, s.Store, account); err != nil {
		return err
	}
	if actor == "" {
		return nil
	}
	return s.b.saveAuditTail(ctx, s.Store, account)
}

// SetLowBalance sets the low-balance alert, then records it in the books.
func (s *Store) SetLowBalance(ctx context.Context, account string, mc int64) error {
	if err := s.Store.SetLowBalance(ctx, account, mc); err != nil {
		return err
	}
	return s.b.SaveRecords(ctx, s.Store, account)
}

// AppendAudit records the entry in Redis, then in the books' audit_log.
func (s *Store) AppendAudit(ctx context.Context, e metering.AuditEntry) (metering.AuditEntry, error) {
	e, err := s.Store.AppendAudit(ctx, e)
	if err != nil {
		return e, err
	}
	if _, err := s.b.pool.Exec(ctx, `INSERT INTO audit_log (account, id, actor, action, target, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, e.Account, e.ID, e.Actor, e.Action, e.Target, e.CreatedAt); err != nil {
		return e, unavailable("recording audit entry", err)
	}
	return e, nil
}

func (s *Store) after(ctx context.Context, account string) func(bool, error) (bool, error) {
	return func(ok bool, err error) (bool, error) {
		if err != nil {
			return ok, err
		}
		return ok, s.b.SaveRecords(ctx, s.Store, account)
	}
}

// AddAccount records an account in the books (once).
func (b *Books) AddAccount(ctx context.Context, id string) error {
	if _, err := b.pool.Exec(ctx, sqlAddAccount, id); err != nil {
		return unavailable("recording account", err)
	}
	return nil
}

// CreatePromoCode records the code in the books, then creates it in Redis.
// A code the books hold already (a retry after a crash between the two) is
// created in Redis as the books have it.
func (s *Store) CreatePromoCode(ctx context.Context, p metering.PromoCode) error {
	if !metering.ValidPromoCode(p.Code) || p.Credits <= 0 {
		return s.Store.CreatePromoCode(ctx, p) // its error
	}
	var exp *time.Time
	if !p.ExpiresAt.IsZero() {
		exp = &p.ExpiresAt
	}
	if _, err := s.b.pool.Exec(ctx, `INSERT INTO promo_codes (code, credits, max_redemptions, expires_at, grant_ttl_ms)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		p.Code, p.Credits, p.MaxRedemptions, exp, p.GrantExpiresIn.Milliseconds()); err != nil {
		return unavailable("recording promotional code", err)
	}
	return s.Store.CreatePromoCode(ctx, p)
}

// Recorder is what SaveRecords reads of Redis. *metering.Store implements it.
type Recorder interface {
	StateRecords(ctx context.Context, account string, payments ...string) ([]metering.StateRecord, error)
}

// SaveRecords copies an account's control-plane records (and the payments
// named) from Redis into the books.
func (b *Books) SaveRecords(ctx context.Context, r Recorder, account string, payments ...string) error {
	recs, err := r.StateRecords(ctx, account, payments...)
	if err != nil {
		return err
	}
	return b.saveRecords(ctx, account, recs, nil)
}

// payment is a payments row.
type payment struct {
	ref, id, currency       string
	credits, minor, removed int64
}

func (b *Books) savePayment(ctx context.Context, st *metering.Store, account, ref, session, paymentID string) error {
	recs, err := st.StateRecords(ctx, account, paymentID)
	if err != nil {
		return err
	}
	p := &payment{ref: ref, id: paymentID}
	found := false
	for _, r := range recs {
		if r.Name == "pay:"+paymentID {
			p.credits, p.minor, p.removed = num(r.Fields["credits_mc"]), num(r.Fields["amount_minor"]), num(r.Fields["removed_mc"])
			p.currency, found = r.Fields["currency"], true
		}
	}
	if !found { // no payment id (nothing to refund): the checkout as sold
		c, err := st.Checkout(ctx, account, session)
		if err != nil {
			return fmt.Errorf("recording payment %s: %w", ref, err)
		}
		p.credits, p.minor, p.currency = c.Credits, c.PriceMinor, c.Currency
	}
	return b.saveRecords(ctx, account, recs, p)
}

func num(s string) int64 {
	var n int64
	_, _ = fmt.Sscan(s, &n)
	return n
}

// The statements that record an account and one of its records (upsert).
const (
	sqlAddAccount = `INSERT INTO accounts (id) VALUES ($1) ON CONFLICT DO NOTHING`
	sqlPutRecord  = `INSERT INTO account_records (account, name, fields) VALUES ($1, $2, $3)
		ON CONFLICT (account, name) DO UPDATE SET fields = excluded.fields, updated_at = now()`
)

func (b *Books) saveRecords(ctx context.Context, account string, recs []metering.StateRecord, p *payment) error {
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		batch.Queue(sqlAddAccount, account)
		for _, r := range recs {
			fields, _ := json.Marshal(r.Fields)
			batch.Queue(sqlPutRecord, account, r.Name, fields)
			if id, ok := strings.CutPrefix(r.Name, "key:"); ok {
				var k metering.Key
				if json.Unmarshal([]byte(r.Fields["meta"]), &k) == nil {
					batch.Queue(`INSERT INTO api_keys (account, id, hash, name, credit_limit, created_at, revoked, created_by)
						VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
						ON CONFLICT (account, id) DO UPDATE SET revoked = excluded.revoked, name = excluded.name`,
						account, id, r.Fields["hash"], k.Name, k.CreditLimit, k.CreatedAt, k.Revoked, k.CreatedBy)
				}
			}
			if r.Name == "members" {
				batch.Queue(`DELETE FROM members WHERE account = $1`, account)
				for user, role := range r.Fields {
					batch.Queue(`INSERT INTO members (account, "user", role) VALUES ($1, $2, $3)`, account, user, role)
				}
			}
			if id, ok := strings.CutPrefix(r.Name, "pay:"); ok && p == nil {
				batch.Queue(`UPDATE payments SET removed = $3 WHERE account = $1 AND payment_id = $2`, account, id, num(r.Fields["removed_mc"]))
			}
		}
		if !slices.ContainsFunc(recs, func(r metering.StateRecord) bool { return r.Name == "mbudget" }) {
			// The last member budget removed: Redis has no such record any more.
			batch.Queue(`DELETE FROM account_records WHERE account = $1 AND name = 'mbudget'`, account)
		}
		if p != nil {
			batch.Queue(`INSERT INTO payments (account, ref, payment_id, credits, amount_minor, currency, removed)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (account, ref) DO UPDATE SET removed = excluded.removed`,
				account, p.ref, p.id, p.credits, p.minor, p.currency, p.removed)
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return unavailable("recording "+account, err)
	}
	return nil
}
