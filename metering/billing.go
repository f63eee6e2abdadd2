package metering

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Billing state: what the billing sidecar remembers about Stripe. Keys, in
// addition to those listed in doc.go:
//
//	{a:ID}:stripe          hash   customer → the account's Stripe customer id
//	{a:ID}:co:<session>    hash   a checkout as sold: pack, credits_mc, price_minor, currency,
//	                              created_at; fulfilled, payment_id once paid. TTL CheckoutTTL
//	{a:ID}:pay:<payment>   hash   a paid purchase: credits_mc, amount_minor, currency, session_id,
//	                              pack, refunded_mc, disputed_mc, removed_mc
//	{a:ID}:billing         stream purchase, refund and dispute entries, with the same ids and
//	                              fields as their ledger entries (the history shown to buyers)
//	tg:cus:<customer>      string Stripe customer → account
//	tg:pay:<payment>       string Stripe PaymentIntent → account
//
// A checkout is credited by the fulfil script and taken back by the reverse
// script, each atomic in the account's slot and idempotent by its reference.

var (
	//go:embed scripts/fulfil.lua
	fulfilSrc string
	//go:embed scripts/sell.lua
	sellSrc string
	//go:embed scripts/reverse.lua
	reverseSrc string

	fulfilScript  = redis.NewScript(sellSrc + eventsSrc + fulfilSrc)
	reverseScript = redis.NewScript(holdsSrc + promoSrc + eventsSrc + reverseSrc)
)

// CheckoutTTL is how long a pending checkout is remembered: long enough for
// delayed payment methods (bank debits settle within days) to succeed.
const CheckoutTTL = 30 * 24 * time.Hour

// Billing errors; test with errors.Is.
var (
	// ErrMismatch: what Stripe says was paid differs from the checkout as sold.
	ErrMismatch = errors.New("metering: payment does not match the checkout")
	// ErrPending: a payment is known to belong to an account but has not been
	// credited yet (its fulfilment is still to come); retry later.
	ErrPending = errors.New("metering: purchase not yet fulfilled")
)

// MismatchError says what a checkout expected. It matches ErrMismatch.
type MismatchError struct {
	ExpectedMinor    int64
	ExpectedCurrency string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("metering: payment does not match the checkout: expected %d %s", e.ExpectedMinor, e.ExpectedCurrency)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

func stripeKey(id string) string          { return "{a:" + id + "}:stripe" }
func checkoutKey(id, sess string) string  { return "{a:" + id + "}:co:" + sess }
func paymentKey(id, pay string) string    { return "{a:" + id + "}:pay:" + pay }
func historyKey(id string) string         { return "{a:" + id + "}:billing" }
func customerLookupKey(cus string) string { return "tg:cus:" + cus }
func paymentLookupKey(pay string) string  { return "tg:pay:" + pay }

// validStripeID accepts Stripe object ids (cs_…, pi_…, cus_…): the same
// alphabet as account ids, so that they can never break a key's hash tag.
func validStripeID(id string) bool { return ValidAccountID(id) }

func badStripeID(op, id string) error {
	return fmt.Errorf("%s: invalid Stripe id %q: %w", op, id, ErrNotFound)
}

func notAccount(op, account string) error { return fmt.Errorf("%s %q: %w", op, account, ErrNoAccount) }

func nowMillis() int64 { return time.Now().UnixMilli() }

// reservedFields are the ledger fields the scripts write themselves; callers'
// Fields may not shadow them (they are dropped).
var reservedFields = map[string]bool{
	"type": true, "amount": true, "balance_after": true, "ref": true, "created_at": true,
	"pack": true, "price_minor": true, "currency": true, "session_id": true, "stripe_payment_id": true,
}

// StripeCustomer returns the account's Stripe customer id, or "" when it has none yet.
func (s *Store) StripeCustomer(ctx context.Context, account string) (string, error) {
	if !ValidAccountID(account) {
		return "", notAccount("reading Stripe customer of", account)
	}
	id, err := s.rdb.HGet(ctx, stripeKey(account), "customer").Result()
	if err != nil && !isNil(err) {
		return "", unavailable("reading Stripe customer", err)
	}
	return id, nil
}

// RememberStripeCustomer records customer as the account's Stripe customer,
// both ways. The first customer remembered wins: when another was recorded
// first (two checkouts raced to create one), that one is returned.
func (s *Store) RememberStripeCustomer(ctx context.Context, account, customer string) (string, error) {
	if !ValidAccountID(account) {
		return "", notAccount("remembering Stripe customer of", account)
	}
	if !validStripeID(customer) {
		return "", badStripeID("remembering Stripe customer", customer)
	}
	// The reverse lookup first: a customer id an account points to always resolves.
	if err := s.rdb.Set(ctx, customerLookupKey(customer), account, 0).Err(); err != nil {
		return "", unavailable("remembering Stripe customer", err)
	}
	set, err := s.rdb.HSetNX(ctx, stripeKey(account), "customer", customer).Result()
	if err != nil {
		return "", unavailable("remembering Stripe customer", err)
	}
	if set {
		return customer, nil
	}
	first, err := s.rdb.HGet(ctx, stripeKey(account), "customer").Result()
	if err != nil {
		return "", unavailable("remembering Stripe customer", err)
	}
	return first, nil
}

// AccountForCustomer resolves a Stripe customer id to its account
// (ErrNotFound when it is not one of ours).
func (s *Store) AccountForCustomer(ctx context.Context, customer string) (string, error) {
	return s.lookup(ctx, "resolving Stripe customer", customerLookupKey, customer)
}

// AccountForPayment resolves a Stripe PaymentIntent id to the account its
// purchase credited (ErrNotFound when none was credited through it).
func (s *Store) AccountForPayment(ctx context.Context, payment string) (string, error) {
	return s.lookup(ctx, "resolving payment", paymentLookupKey, payment)
}

func (s *Store) lookup(ctx context.Context, op string, key func(string) string, id string) (string, error) {
	if !validStripeID(id) {
		return "", badStripeID(op, id)
	}
	acct, err := s.rdb.Get(ctx, key(id)).Result()
	if isNil(err) {
		return "", fmt.Errorf("%s %q: %w", op, id, ErrNotFound)
	}
	if err != nil {
		return "", unavailable(op, err)
	}
	return acct, nil
}

// Checkout is a checkout as sold: what the buyer is to pay and the credits it buys.
type Checkout struct {
	SessionID  string
	Account    string
	Pack       string
	Credits    int64 // mc
	PriceMinor int64
	Currency   string // ISO 4217, lower case
	CreatedAt  time.Time
	Fulfilled  bool
	PaymentID  string // set once fulfilled
}

// SaveCheckout records a checkout session for its fulfilment, for CheckoutTTL.
func (s *Store) SaveCheckout(ctx context.Context, c Checkout) error {
	if !ValidAccountID(c.Account) {
		return notAccount("saving checkout for", c.Account)
	}
	if !validStripeID(c.SessionID) {
		return badStripeID("saving checkout", c.SessionID)
	}
	if c.Credits <= 0 || c.PriceMinor <= 0 || c.Currency == "" {
		return fmt.Errorf("saving checkout %q: invalid amounts %d mc for %d %s", c.SessionID, c.Credits, c.PriceMinor, c.Currency)
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	key := checkoutKey(c.Account, c.SessionID)
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, key, CheckoutRecord(c).Fields) // restore.go: the books keep the same record
	pipe.Expire(ctx, key, CheckoutTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("saving checkout", err)
	}
	return nil
}

// Checkout returns a recorded checkout (ErrNotFound when unknown or expired).
func (s *Store) Checkout(ctx context.Context, account, session string) (Checkout, error) {
	if !ValidAccountID(account) || !validStripeID(session) {
		return Checkout{}, fmt.Errorf("reading checkout %q: %w", session, ErrNotFound)
	}
	m, err := s.rdb.HGetAll(ctx, checkoutKey(account, session)).Result()
	if err != nil {
		return Checkout{}, unavailable("reading checkout", err)
	}
	if len(m) == 0 {
		return Checkout{}, fmt.Errorf("reading checkout %q: %w", session, ErrNotFound)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return Checkout{
		SessionID: session, Account: account, Pack: m["pack"], Credits: n("credits_mc"),
		PriceMinor: n("price_minor"), Currency: m["currency"], CreatedAt: time.UnixMilli(n("created_at")).UTC(),
		Fulfilled: m["fulfilled"] == "1", PaymentID: m["payment_id"],
	}, nil
}

// Fulfilment is a paid checkout session, as Stripe reports it.
type Fulfilment struct {
	Account     string
	SessionID   string
	PaymentID   string // the PaymentIntent that paid it; "" when none (nothing to refund)
	AmountMinor int64  // amount_total
	Currency    string // lower case
	// Fields are extra ledger fields (description, event id). Names the entry
	// already carries (type, amount, pack, currency, …) are ignored.
	Fields map[string]string
}

// Fulfilled is the result of FulfilCheckout.
type Fulfilled struct {
	Applied      bool  // false: this session was already credited; nothing changed now
	Credits      int64 // mc credited now
	BalanceAfter int64
	EntryID      string
}

// CheckoutReference is the credit reference of a checkout session: a session
// is credited at most once, ever, whatever events announce it.
func CheckoutReference(session string) string { return "checkout:" + session }

// FulfilCheckout credits a paid checkout session with the credits recorded by
// SaveCheckout, atomically and at most once per session. It fails with
// ErrNotFound when the session was not sold here (or expired), with a
// *MismatchError when the amount or currency paid is not the one sold, and
// with ErrNoAccount or ErrUnavailable.
func (s *Store) FulfilCheckout(ctx context.Context, f Fulfilment) (Fulfilled, error) {
	a := f.Account
	if !ValidAccountID(a) {
		return Fulfilled{}, notAccount("fulfilling checkout for", a)
	}
	if !validStripeID(f.SessionID) {
		return Fulfilled{}, badStripeID("fulfilling checkout", f.SessionID)
	}
	if f.PaymentID != "" && !validStripeID(f.PaymentID) {
		return Fulfilled{}, badStripeID("fulfilling checkout", f.PaymentID)
	}
	ref := CheckoutReference(f.SessionID)
	args := make([]any, 0, 6+2*len(f.Fields))
	args = append(args, ref, f.AmountMinor, f.Currency, f.PaymentID, f.SessionID, nowMillis())
	args = appendFields(args, f.Fields)
	pay := paymentKey(a, f.PaymentID)
	res, err := fulfilScript.Run(ctx, s.rdb,
		[]string{acctKey(a), refsKey(a), ledgerKey(a), checkoutKey(a, f.SessionID), pay, historyKey(a), eventsKey(a)},
		args...).Slice()
	if err != nil {
		return Fulfilled{}, unavailable("fulfilling checkout", err)
	}
	out, err := fulfilled(s, res, "fulfilling checkout", f.SessionID, f.AmountMinor, f.Currency, a)
	if err != nil {
		return Fulfilled{}, err
	}
	// The payment → account lookup last, and again on every replay: refunds and
	// disputes find the purchase through it. Until it is written they wait
	// (ErrPending) or retry.
	if f.PaymentID != "" {
		if err := s.rdb.Set(ctx, paymentLookupKey(f.PaymentID), a, 0).Err(); err != nil {
			return Fulfilled{}, unavailable("fulfilling checkout", err)
		}
	}
	return out, nil
}

// Payment is a paid purchase as recorded at fulfilment.
type Payment struct {
	ID          string
	Account     string
	SessionID   string
	Pack        string
	Credits     int64 // mc bought
	AmountMinor int64 // amount paid
	Currency    string
	Removed     int64 // mc taken back so far by refunds and disputes
}

// Payment returns the purchase paid by a PaymentIntent. It fails with
// ErrPending when the account has no such purchase (yet).
func (s *Store) Payment(ctx context.Context, account, payment string) (Payment, error) {
	if !ValidAccountID(account) {
		return Payment{}, notAccount("reading payment of", account)
	}
	if !validStripeID(payment) {
		return Payment{}, badStripeID("reading payment", payment)
	}
	m, err := s.rdb.HGetAll(ctx, paymentKey(account, payment)).Result()
	if err != nil {
		return Payment{}, unavailable("reading payment", err)
	}
	if len(m) == 0 {
		return Payment{}, fmt.Errorf("reading payment %q of %q: %w", payment, account, ErrPending)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return Payment{
		ID: payment, Account: account, SessionID: m["session_id"], Pack: m["pack"], Credits: n("credits_mc"),
		AmountMinor: n("amount_minor"), Currency: m["currency"], Removed: n("removed_mc"),
	}, nil
}

// ReversalKind says why credits are taken back.
type ReversalKind string

// Reversal kinds; each is also the ledger entry type.
const (
	Refund  ReversalKind = "refund"
	Dispute ReversalKind = "dispute"
	// DisputeWon gives back what a Dispute took: the dispute closed in the
	// merchant's favour (or was an inquiry that never withdrew funds).
	DisputeWon ReversalKind = "dispute_won"
)

// Reversal takes back the credits of a refunded or disputed payment, or
// gives back those of a dispute that was won.
type Reversal struct {
	Account   string
	PaymentID string
	Kind      ReversalKind
	// Reference makes the reversal idempotent (e.g. "refund:<charge>:<amount refunded>",
	// "dispute:<dispute id>").
	Reference string
	// Minor is, for a Refund, the payment's cumulative refunded amount (Stripe's
	// amount_refunded); for a Dispute, the disputed amount. Both in the
	// payment's minor units; converted to credits in proportion to the purchase,
	// rounded up, and never more than the purchase bought in all.
	Minor int64
	// Linked ties a dispute's two events together whatever order they arrive
	// in: for a Dispute, the reference its DisputeWon would carry (when that
	// is already recorded, the dispute takes nothing); for a DisputeWon, the
	// Dispute's reference (what it took is given back; delivered first, the
	// DisputeWon is only recorded). A DisputeWon ignores Minor.
	Linked string
	Fields map[string]string // extra ledger fields
}

// Reversed is the result of ReversePurchase.
type Reversed struct {
	Applied      bool  // false: the balance did not change (a replay, or nothing to take or give back)
	Removed      int64 // mc taken back now; negative when a DisputeWon gave credits back
	BalanceAfter int64 // may be negative
	EntryID      string
}

// ReversePurchase removes credits for a refund or a dispute, atomically. A
// refund's share only ever grows with Stripe's cumulative amount_refunded, a
// dispute counts once per reference, and the credits removed in all never
// exceed what the payment bought; a DisputeWon gives back, once, what its
// dispute took. It fails with ErrPending when the payment has not been
// credited (yet).
func (s *Store) ReversePurchase(ctx context.Context, r Reversal) (Reversed, error) {
	if r.Kind != Refund && r.Kind != Dispute && r.Kind != DisputeWon {
		return Reversed{}, fmt.Errorf("reversing purchase: unknown kind %q", r.Kind)
	}
	if r.Reference == "" || (r.Kind == DisputeWon && r.Linked == "") {
		return Reversed{}, ErrNoReference
	}
	if strings.HasPrefix(r.Reference, OperatorPrefix) || strings.HasPrefix(r.Linked, OperatorPrefix) {
		return Reversed{}, fmt.Errorf("reversing purchase: reference %q or %q is in the operators' namespace", r.Reference, r.Linked)
	}
	p, err := s.Payment(ctx, r.Account, r.PaymentID)
	if err != nil {
		return Reversed{}, fmt.Errorf("reversing purchase: %w", err)
	}
	mc := proportion(p.Credits, r.Minor, p.AmountMinor)
	a := r.Account
	args := make([]any, 0, 6+2*len(r.Fields))
	args = append(args, string(r.Kind), r.Reference, mc, nowMillis(), r.PaymentID, r.Linked)
	args = appendFields(args, r.Fields)
	res, err := reverseScript.Run(ctx, s.rdb,
		[]string{acctKey(a), refsKey(a), ledgerKey(a), paymentKey(a, r.PaymentID), historyKey(a), holdExpKey(a), holdValKey(a),
			promoKey(a), promoValKey(a), eventsKey(a)},
		args...).Slice()
	if err != nil {
		return Reversed{}, unavailable("reversing purchase", err)
	}
	switch toInt(res[0]) {
	case 1:
		id, _ := res[2].(string)
		s.markDirty(a)
		s.markEvents(a)
		if len(res) > 4 && toInt(res[4]) > 0 {
			// Promotional credits went back to their grants, perhaps to one
			// already past its expiry: the sweeper's index must know them.
			if err := s.IndexPromos(ctx, a); err != nil {
				return Reversed{}, unavailable("indexing promotional grants", err)
			}
		}
		return Reversed{Applied: true, BalanceAfter: toInt(res[1]), EntryID: id, Removed: toInt(res[3])}, nil
	case 0:
		return Reversed{BalanceAfter: toInt(res[1])}, nil
	case -1:
		return Reversed{}, notAccount("reversing purchase of", a)
	default:
		return Reversed{}, fmt.Errorf("reversing payment %q of %q: %w", r.PaymentID, a, ErrPending)
	}
}

// proportion is ceil(credits × part / whole), clamped to [0, credits].
func proportion(credits, part, whole int64) int64 {
	if part <= 0 || whole <= 0 || credits <= 0 {
		return 0
	}
	if part >= whole {
		return credits
	}
	hi, lo := bits.Mul64(uint64(credits), uint64(part))
	q, rem := bits.Div64(hi, lo, uint64(whole)) // hi < whole since part < whole
	if rem != 0 {
		q++
	}
	return int64(q)
}

func appendFields(args []any, fields map[string]string) []any {
	for _, k := range sortedKeys(fields) {
		if !reservedFields[k] {
			args = append(args, k, fields[k])
		}
	}
	return args
}

// BillingHistory lists an account's purchases, refunds and disputes, newest
// first, paginated like Ledger (entry ids are the ledger's).
func (s *Store) BillingHistory(ctx context.Context, account string, q LedgerQuery) ([]Entry, error) {
	if !ValidAccountID(account) {
		return nil, notAccount("reading billing history of", account)
	}
	if q.Limit <= 0 {
		q.Limit = 20
	}
	if q.Limit > 1000 {
		q.Limit = 1000
	}
	hi := "+"
	if q.Before != "" {
		hi = "(" + q.Before
	}
	msgs, err := s.rdb.XRevRangeN(ctx, historyKey(account), hi, "-", q.Limit).Result()
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) {
			return nil, fmt.Errorf("reading billing history: bad cursor: %w", ErrNotFound)
		}
		return nil, unavailable("reading billing history", err)
	}
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, entryFrom(m))
	}
	return out, nil
}

// fulfilled decodes the answer of fulfil.lua and recharge_credit.lua:
// {1, balance, entry id, credits} applied, {0, balance} already applied,
// {-1} no account, {-2} no sale record, else {-3, expected minor, expected currency}.
func fulfilled(d *Store, res []any, what, id string, paidMinor int64, currency, account string) (Fulfilled, error) {
	switch toInt(res[0]) {
	case 1:
		eid, _ := res[2].(string)
		if d != nil {
			d.markDirty(account)
			d.markEvents(account)
		}
		return Fulfilled{Applied: true, BalanceAfter: toInt(res[1]), EntryID: eid, Credits: toInt(res[3])}, nil
	case 0:
		return Fulfilled{BalanceAfter: toInt(res[1])}, nil
	case -1:
		return Fulfilled{}, notAccount(what+" for", account)
	case -2:
		return Fulfilled{}, fmt.Errorf("%s %q: %w", what, id, ErrNotFound)
	}
	cur, _ := res[2].(string)
	return Fulfilled{}, fmt.Errorf("%s %q (paid %d %s): %w", what, id, paidMinor, currency,
		&MismatchError{ExpectedMinor: toInt(res[1]), ExpectedCurrency: cur})
}
