package metering

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/holds.lua
	holdsSrc string
	//go:embed scripts/debit.lua
	debitSrc string
	//go:embed scripts/keygov.lua
	keygovSrc string
	//go:embed scripts/reserve.lua
	reserveSrc string
	//go:embed scripts/settle.lua
	settleSrc string
	//go:embed scripts/release.lua
	releaseSrc string
	//go:embed scripts/credit.lua
	creditSrc string
	//go:embed scripts/create_account.lua
	createAccountSrc string

	// Preludes (holds.lua, debit.lua, period.lua, period_holds.lua) are
	// prepended, so that a rule about holds, a charge's entry, a billing
	// period or a period hold has one home.
	reserveScript       = redis.NewScript(holdsSrc + keygovSrc + eventsSrc + reserveSrc)
	settleScript        = redis.NewScript(holdsSrc + keygovSrc + debitSrc + promoSrc + eventsSrc + periodSrc + periodHoldsSrc + settleSrc)
	releaseScript       = redis.NewScript(holdsSrc + keygovSrc + periodSrc + periodHoldsSrc + releaseSrc)
	creditScript        = redis.NewScript(holdsSrc + promoSrc + eventsSrc + creditSrc)
	createAccountScript = redis.NewScript(createAccountSrc)
)

// Options configure a Store. Zero values mean the documented defaults.
type Options struct {
	// HoldTTL is how long a hold lives when its call never settles (a crashed
	// proxy). It must exceed the longest call. Default 15m.
	HoldTTL time.Duration
	// KeyCacheTTL bounds how long an API key lookup (hit or miss) is reused in
	// process. A change to a key (revoked, rules that make it limited) is
	// published and evicts it from every Store's cache at once (keywatch.go);
	// the TTL is the backstop for a lost message: a revoked key is refused at
	// most this long after revocation. Default 500ms; negative disables the
	// cache (and its subscription).
	KeyCacheTTL time.Duration
	// RecordTTL is how long per-call cost records are kept. Default 30 days.
	RecordTTL time.Duration
	// Pipelines bounds the Redis pipelines that reserve, settle and release
	// keep in flight; calls arriving while that many are in flight go out
	// together in the next one (one round trip for the batch). Default 2;
	// negative sends every call on its own, as go-redis does.
	Pipelines int
}

func (o *Options) init() {
	if o.HoldTTL <= 0 {
		o.HoldTTL = 15 * time.Minute
	}
	if o.KeyCacheTTL == 0 {
		o.KeyCacheTTL = 500 * time.Millisecond
	}
	if o.RecordTTL <= 0 {
		o.RecordTTL = 30 * 24 * time.Hour
	}
	if o.Pipelines == 0 {
		o.Pipelines = 2
	}
}

// Store is the Redis-backed ledger. It is safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	opts Options
	keys keyCache
	pipe pipeliner
	// Durable books (journal.go, epoch.go): ledger marks for the shipper,
	// and what the store knows of the epoch marker.
	dirty dirtyMarks
	epoch epochState
	// Outgoing events (events.go): accounts whose outbox got an event.
	evMarks dirtyMarks
}

// New returns a Store over rdb (standalone, Sentinel or Cluster client).
// Unless its key cache is disabled, the Store subscribes to
// KeysChangedChannel (one Pub/Sub connection and goroutine), until rdb is
// closed.
func New(rdb redis.UniversalClient, opts Options) *Store {
	opts.init()
	s := &Store{rdb: rdb, opts: opts, pipe: pipeliner{rdb: rdb, max: max(opts.Pipelines, 0)}}
	s.keys.init(opts.KeyCacheTTL)
	if opts.KeyCacheTTL >= 0 && rdb != nil {
		go s.watchKeys() // until rdb is closed
	}
	return s
}

// Client returns the underlying Redis client (for wiring health checks).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// HoldTTL is the configured hold lifetime.
func (s *Store) HoldTTL() time.Duration { return s.opts.HoldTTL }

// Ping reports whether Redis answers, and has not lost its data (the epoch
// marker, see epoch.go): ErrStoreLost is an ErrUnavailable too.
func (s *Store) Ping(ctx context.Context) error {
	return s.CheckEpoch(ctx)
}

// LoadScripts loads every script into Redis so that the first calls use
// EVALSHA. Optional: scripts fall back to EVAL when missing.
func (s *Store) LoadScripts(ctx context.Context) error {
	for _, sc := range []*redis.Script{
		reserveScript, settleScript, releaseScript, creditScript, createAccountScript, createKeyScript,
		fulfilScript, reverseScript, subscriptionScript, admitScript,
		rechargeEnqueueScript, rechargeBeginScript, rechargeCreditScript, rechargeFailScript,
		leaseGrantScript, leaseFlushScript, keySettingsScript, keyLimitedScript, membersScript, memberBudgetScript,
		promoCreateScript, promoClaimScript, promoGrantScript, promoExpireScript, deliveryClaimScript,
	} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return unavailable("loading scripts", err)
		}
	}
	return nil
}

func acctKey(id string) string           { return "{a:" + id + "}:acct" }
func holdExpKey(id string) string        { return "{a:" + id + "}:hexp" }
func holdValKey(id string) string        { return "{a:" + id + "}:hval" }
func refsKey(id string) string           { return "{a:" + id + "}:refs" }
func ledgerKey(id string) string         { return "{a:" + id + "}:ledger" }
func genKey(id, req string) string       { return "{a:" + id + "}:gen:" + req }
func keysKey(id string) string           { return "{a:" + id + "}:keys" }
func keyLookupKey(hashHex string) string { return "tg:key:" + hashHex }

// ValidAccountID reports whether id may name an account: 1–128 bytes of
// letters, digits and - _ . @ : (no braces, which would break the hash tag).
func ValidAccountID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == '@' || c == ':' || c == '|':
		default:
			return false
		}
	}
	return true
}

// Account is an account's balances, in milli-credits. Each total counts one
// kind of ledger entry (see the package doc, Books):
// Purchased + Granted + Adjusted − Consumed = Balance.
type Account struct {
	ID       string
	Balance  int64 // credits owned (may be negative after a refund)
	Reserved int64 // held by calls in flight
	// Purchased is what was bought (checkouts, direct purchases,
	// auto-recharges) less what refunds and disputes took back, plus what
	// won disputes gave back: the sum of the billing history.
	Purchased int64
	Granted   int64 // Σ operators' grants
	Adjusted  int64 // Σ operators' adjustments (signed)
	Consumed  int64 // Σ usage debits
	// OverHoldCalls counts calls charged past their holds, OverHold the mc
	// they cost beyond them (in Consumed too): each is a hole in the hold's
	// sizing, for the operator to see.
	OverHoldCalls int64
	OverHold      int64
	// Promoted is Σ promotional grants less Σ their expiries (promo.go);
	// Promotional is what is left of them: the part of Balance that
	// promotional credits make up (spent first, may expire). Paid credits
	// never expire.
	Promoted    int64
	Promotional int64
	CreatedAt   time.Time
}

// Paid is the part of the balance that paid (and operators') credits make up.
func (a Account) Paid() int64 { return a.Balance - a.Promotional }

// Available is what new calls may reserve.
func (a Account) Available() int64 { return a.Balance - a.Reserved }

// Credits is every credit of every kind: Purchased + Granted + Adjusted +
// Promoted. Credits − Consumed = Balance.
func (a Account) Credits() int64 { return a.Purchased + a.Granted + a.Adjusted + a.Promoted }

// CreateAccount creates an empty account. It fails with ErrAccountExists when
// the id is taken.
func (s *Store) CreateAccount(ctx context.Context, id string) (Account, error) {
	created, err := s.ensureAccount(ctx, id)
	if err != nil {
		return Account{}, err
	}
	if !created {
		return Account{}, fmt.Errorf("creating account %q: %w", id, ErrAccountExists)
	}
	return s.Account(ctx, id)
}

// EnsureAccount creates the account unless it exists; created says which.
func (s *Store) EnsureAccount(ctx context.Context, id string) (created bool, err error) {
	return s.ensureAccount(ctx, id)
}

func (s *Store) ensureAccount(ctx context.Context, id string) (bool, error) {
	if !ValidAccountID(id) {
		return false, fmt.Errorf("creating account %q: %w", id, ErrNoAccount)
	}
	if s.epoch.seen.Load() {
		// Never an empty account in a Redis that lost its data: the restore
		// would leave it as it is, and its credits would be gone.
		if err := s.CheckEpoch(ctx); err != nil && errors.Is(err, ErrStoreLost) {
			return false, err
		}
	}
	n, err := createAccountScript.Run(ctx, s.rdb, []string{acctKey(id)}, time.Now().Unix()).Int()
	if err != nil {
		return false, unavailable("creating account", err)
	}
	return n == 1, nil
}

// Account returns an account's balances, with expired holds already ignored
// only once a reserve has swept them.
func (s *Store) Account(ctx context.Context, id string) (Account, error) {
	if !ValidAccountID(id) {
		return Account{}, fmt.Errorf("reading account %q: %w", id, ErrNoAccount)
	}
	f, err := s.rdb.HMGet(ctx, acctKey(id), "balance", "reserved", "purchased", "consumed", "created_at",
		"granted", "adjusted", "over_hold_calls", "over_hold_mc", "promoted", "promo").Result()
	if err != nil {
		return Account{}, unavailable("reading account", err)
	}
	if f[0] == nil {
		return Account{}, fmt.Errorf("reading account %q: %w", id, ErrNoAccount)
	}
	a := Account{ID: id}
	a.Balance = atoi(f[0])
	a.Reserved = atoi(f[1])
	a.Purchased = atoi(f[2])
	a.Consumed = atoi(f[3])
	a.CreatedAt = time.Unix(atoi(f[4]), 0).UTC()
	a.Granted = atoi(f[5])
	a.Adjusted = atoi(f[6])
	a.OverHoldCalls = atoi(f[7])
	a.OverHold = atoi(f[8])
	a.Promoted = atoi(f[9])
	a.Promotional = atoi(f[10])
	return a, nil
}

func atoi(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// HoldRequest asks for a hold sized for the worst case of one call:
// Fixed + PerOutput × output tokens, where the output tokens granted are the
// most in [MinOutput, MaxOutput] that the account (and key limit) can afford.
type HoldRequest struct {
	Account string
	KeyID   string // "" when the call is not made with an API key
	// KeyLimited: the key has a credit limit or other rules (Identity.Limited).
	// A Leaser holds such calls in Redis one by one, where they are checked.
	KeyLimited bool
	HoldID     string // unique per call; reusing it returns the same hold
	Fixed      int64  // mc for the input side
	PerOutput  int64  // mc per output token
	MinOutput  int64  // smallest output the call may be granted
	MaxOutput  int64  // largest output wanted
	// What a governed key's rules weigh (keygov.go): the catalog id of the
	// model called, the input tokens Fixed covers, and the output tokens
	// billed per output token granted (choices × prompts; 0 means 1).
	Model       string
	InputTokens int64
	OutputPer   int64
}

// Hold is a granted reservation.
type Hold struct {
	ID           string
	Amount       int64 // mc held
	OutputTokens int64 // output tokens the hold covers
	Available    int64 // mc still available to the account after this hold
}

// Reserve places a hold. It fails with an *InsufficientError when even the
// minimal call is unaffordable, ErrNoAccount, or ErrUnavailable.
func (s *Store) Reserve(ctx context.Context, r HoldRequest) (Hold, error) {
	if r.Fixed < 0 || r.PerOutput < 0 || r.MinOutput < 0 || r.MaxOutput < r.MinOutput {
		return Hold{}, fmt.Errorf("reserving credits: invalid request %+v", r)
	}
	a := r.Account
	res, err := s.pipe.run(ctx, reserveScript,
		[]string{acctKey(a), holdExpKey(a), holdValKey(a), keyRulesKey(a, r.KeyID), genKey(a, r.HoldID), memberBudgetKey(a), eventsKey(a)},
		r.HoldID, r.KeyID, r.Fixed, r.PerOutput, r.MinOutput, r.MaxOutput, s.opts.HoldTTL.Milliseconds(),
		MonthStart(time.Now()).Unix(), r.Model, max(r.InputTokens, 0), max(r.OutputPer, 1), int64(s.opts.RecordTTL/time.Second),
	).Slice()
	if err != nil {
		return Hold{}, unavailable("reserving credits", err)
	}
	switch toInt(res[0]) {
	case 1:
		return Hold{ID: r.HoldID, Amount: toInt(res[1]), OutputTokens: toInt(res[2]), Available: toInt(res[3])}, nil
	case 0:
		if len(res) > 4 && toInt(res[4]) == 1 {
			s.markEvents(a)
		}
		switch res[3] {
		case "budget":
			return Hold{}, &KeyRuleError{Rule: RuleBudget, Needed: toInt(res[2]), Left: toInt(res[1])}
		case "member_budget":
			return Hold{}, &KeyRuleError{Rule: RuleMemberBudget, Needed: toInt(res[2]), Left: toInt(res[1])}
		}
		return Hold{}, &InsufficientError{Needed: toInt(res[2]), Available: toInt(res[1]), KeyLimit: res[3] == "key"}
	case -2:
		rule, _ := res[1].(string)
		return Hold{}, &KeyRuleError{Rule: rule, RetryAfter: time.Duration(toInt(res[2])) * time.Millisecond, Max: toInt(res[3])}
	default:
		return Hold{}, s.missingAccount(ctx, "reserving credits", a)
	}
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case string:
		i, _ := strconv.ParseInt(n, 10, 64)
		return i
	}
	return 0
}

// Record describes one call, for the ledger and the per-call cost record.
type Record struct {
	RequestID   string
	Model       string // public model name asked for
	Provider    string // provider that served it
	Endpoint    string // e.g. "chat.completions"
	Input       int64  // uncached input tokens
	CachedInput int64
	Output      int64 // output tokens, reasoning included
	Reasoning   int64
	// CacheWrite and CacheWrite1h are input tokens written to the provider's
	// prompt cache for 5 minutes and for 1 hour (not in Input).
	CacheWrite   int64
	CacheWrite1h int64
	// WebSearch is the provider-side web searches the call ran, each
	// charged its per-use fee.
	WebSearch int64
	Estimated bool // usage estimated by a tokenizer, not reported by the provider
	Streamed  bool
	Cancelled bool // the client went away mid-stream
	Failed    bool // the call failed and is not charged
	Status    int  // HTTP status the caller saw
	Reason    string
	Latency   time.Duration
	TTFT      time.Duration
	CreatedAt time.Time
	// ClientRequestID is the caller's own request id (its X-Request-Id),
	// UpstreamRequestID the provider's; Traceparent and Tracestate the
	// caller's W3C trace context. Empty when there was none.
	ClientRequestID   string
	UpstreamRequestID string
	Traceparent       string
	Tracestate        string
}

// InputTokens is every input token of the call, however priced (uncached,
// read from the cache, written to it): what plan limits on input count.
func (r *Record) InputTokens() int64 {
	return max(r.Input, 0) + max(r.CachedInput, 0) + max(r.CacheWrite, 0) + max(r.CacheWrite1h, 0)
}

func (r *Record) args(dst []any) []any {
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	dst = append(dst,
		"request_id", r.RequestID, "model", r.Model, "provider", r.Provider, "endpoint", r.Endpoint,
		"input_tokens", r.Input, "cached_input_tokens", r.CachedInput, "output_tokens", r.Output,
		"reasoning_tokens", r.Reasoning, "cache_write_tokens", r.CacheWrite, "cache_write_1h_tokens", r.CacheWrite1h,
		"web_search_requests", r.WebSearch,
		"estimated", b(r.Estimated), "streamed", b(r.Streamed),
		"cancelled", b(r.Cancelled), "failed", b(r.Failed), "status", r.Status,
		"latency_us", r.Latency.Microseconds(), "ttft_us", r.TTFT.Microseconds(),
		"created_at", r.CreatedAt.UnixMilli(),
	)
	if r.Reason != "" {
		dst = append(dst, "reason", r.Reason)
	}
	for _, f := range [...]struct{ k, v string }{
		{"client_request_id", r.ClientRequestID}, {"upstream_request_id", r.UpstreamRequestID},
		{"traceparent", r.Traceparent}, {"tracestate", r.Tracestate},
	} {
		if f.v != "" {
			dst = append(dst, f.k, f.v)
		}
	}
	return dst
}

// Settlement is the outcome of a call that is to be charged.
type Settlement struct {
	Account string
	KeyID   string
	HoldID  string
	Cost    int64 // priced usage, mc
	Record  Record
}

// Charge is what a settle did. A call is charged its whole priced usage,
// even past its hold (OverHold says by how much); only a call whose hold had
// expired is charged at most what was then available (Capped).
type Charge struct {
	Charged      int64 // mc debited: the cost, unless Capped
	BalanceAfter int64
	// OverHold is what the charge exceeded the call's hold by (0 when it did
	// not). The balance may go below zero by at most that much.
	OverHold int64
	// Capped: the call's hold had expired, and the charge was cut to what was
	// available (its credits may have gone to other calls meanwhile).
	Capped bool
	Replay bool // this hold was already settled; nothing changed now
	// Deferred: Redis could not be reached, and the charge is applied later
	// (a Leaser retries it); BalanceAfter is an estimate.
	Deferred bool
}

// ErrRequestID refuses a settlement whose record names a request other than
// its hold: the cost record, keyed by the hold id, is what makes a second
// settle a replay.
var ErrRequestID = errors.New("metering: a call is recorded under its hold id")

// Settle removes the hold, debits the whole cost, and writes the ledger entry
// and the cost record (keyed by the hold id, which is the call's request id),
// atomically. It also counts the call in the account's billing-period usage
// (input and output tokens, credits, and the request unless Admit counted it)
// that plan limits and the usage API read, and drops the call's period hold.
// Settling the same hold again returns the first answer and changes nothing.
func (s *Store) Settle(ctx context.Context, st Settlement) (Charge, error) {
	if st.Cost < 0 {
		return Charge{}, fmt.Errorf("settling %q: negative cost %d", st.HoldID, st.Cost)
	}
	if st.Record.RequestID == "" {
		st.Record.RequestID = st.HoldID
	} else if st.Record.RequestID != st.HoldID {
		return Charge{}, fmt.Errorf("settling %q as %q: %w", st.HoldID, st.Record.RequestID, ErrRequestID)
	}
	a := st.Account
	if st.Record.CreatedAt.IsZero() {
		st.Record.CreatedAt = time.Now()
	}
	now := time.Now()
	args := make([]any, 0, 52)
	args = append(args, st.HoldID, st.KeyID, st.Cost, int64(s.opts.RecordTTL/time.Second),
		MonthStart(now).Unix(), st.Record.InputTokens(), max(st.Record.Output, 0))
	args = st.Record.args(args)
	res, err := s.pipe.run(ctx, settleScript,
		[]string{acctKey(a), holdExpKey(a), holdValKey(a), genKey(a, st.HoldID), ledgerKey(a), planKey(a), usageKey(a),
			periodHoldExpKey(a), periodHoldValKey(a), dayKey(a, now), keyRulesKey(a, st.KeyID), memberBudgetKey(a),
			promoKey(a), promoValKey(a), eventsKey(a)},
		args...,
	).Int64Slice()
	if err != nil {
		return Charge{}, unavailable("settling", err)
	}
	if res[0] == -1 && len(res) == 1 {
		return Charge{}, s.missingAccount(ctx, "settling", a)
	}
	if res[3] != 1 {
		s.markDirty(a)
	}
	if len(res) > 5 && res[5] == 1 {
		s.markEvents(a)
	}
	return Charge{BalanceAfter: res[0], Charged: res[1], Capped: res[2] == 1, Replay: res[3] == 1, OverHold: res[4]}, nil
}

// Release drops a hold without charge, and the call's period hold (a failed
// call is not counted as a request, nor are its tokens). When rec is not nil
// the call's cost record is stored (charged 0) for /v1/generation. Releasing
// twice is harmless.
func (s *Store) Release(ctx context.Context, account, keyID, holdID string, rec *Record) error {
	args := make([]any, 0, 44)
	args = append(args, holdID, keyID, int64(s.opts.RecordTTL/time.Second), MonthStart(time.Now()).Unix())
	reqID := holdID
	if rec != nil {
		if rec.CreatedAt.IsZero() {
			rec.CreatedAt = time.Now()
		}
		args = rec.args(args)
		reqID = rec.RequestID
	}
	err := s.pipe.run(ctx, releaseScript,
		[]string{acctKey(account), holdExpKey(account), holdValKey(account), genKey(account, reqID),
			planKey(account), usageKey(account), periodHoldExpKey(account), periodHoldValKey(account),
			keyRulesKey(account, keyID)},
		args...,
	).Err()
	if err != nil {
		return unavailable("releasing hold", err)
	}
	return nil
}

// Credit is an operator's credit: a grant, or an adjustment (either sign).
// Purchases and their reversals are never Credits: they are credited from
// the sale's record by FulfilCheckout and CompleteRecharge and taken back by
// ReversePurchase.
type Credit struct {
	Account string
	Amount  int64 // signed mc; a grant's is not negative
	// Reference is the operator's idempotency key: applied at most once per
	// account, ever, whatever the entry point (admin API or CLI). It is
	// stored as OperatorReference(Reference), apart from every purchase's.
	Reference string
	// Type is the ledger entry type: Grant (the default) or Adjustment.
	Type string
	// Fields are extra ledger fields (description, source).
	Fields map[string]string
}

// Operator credit types (Credit.Type), each also the ledger entry type and
// counted in its own account total (Account.Granted, Account.Adjusted).
const (
	Grant      = "grant"
	Adjustment = "adjustment"
)

// OperatorPrefix starts the stored reference of every operator credit.
// Purchases are credited under "checkout:<session>" and taken back under
// "refund:…", "dispute:…" and "dispute_won:…", never under this prefix, so
// that an operator's reference can never mark a purchase as credited, nor a
// purchase an operator's credit.
const OperatorPrefix = "admin:"

// OperatorReference is the reference under which an operator's credit is
// applied (and shown in the ledger).
func OperatorReference(ref string) string { return OperatorPrefix + ref }

// salePrefixes begin every reference a sale, its reversal, or a promotional
// grant or expiry is applied under.
var salePrefixes = [...]string{"checkout:", "refund:", "dispute:", "dispute_won:", OperatorPrefix, "promo:", "expired:"}

// legacyReference is what the CLI applied an operator's credit under before
// operator references had their own namespace (the reference as typed), so
// that a credit applied then is not applied again now; "" when ref is in a
// sale's namespace (that reference belongs to the sale, not to the operator).
func legacyReference(ref string) string {
	for _, p := range salePrefixes {
		if strings.HasPrefix(ref, p) {
			return ""
		}
	}
	return ref
}

// Credited is the result of a Credit.
type Credited struct {
	Applied      bool // false: the reference was already applied, nothing changed
	BalanceAfter int64
	EntryID      string
}

// ledgerCoreFields are ledger fields a Credit's Fields may not shadow.
var ledgerCoreFields = map[string]bool{"type": true, "amount": true, "balance_after": true, "ref": true, "created_at": true}

// ErrNoReference is returned for a credit without an idempotency reference.
var ErrNoReference = errors.New("metering: credit needs a reference")

// Credit applies an operator's credit atomically and at most once per
// reference (OperatorReference(c.Reference)).
func (s *Store) Credit(ctx context.Context, c Credit) (Credited, error) {
	if c.Reference == "" {
		return Credited{}, ErrNoReference
	}
	switch c.Type {
	case "", Grant:
		c.Type = Grant
		if c.Amount < 0 {
			return Credited{}, fmt.Errorf("crediting %q: a grant of %d mc: take credits away with an adjustment", c.Account, c.Amount)
		}
	case Adjustment:
	default:
		return Credited{}, fmt.Errorf("crediting %q: type %q is not an operator credit (%s or %s); purchases and their reversals go through FulfilCheckout, CompleteRecharge and ReversePurchase",
			c.Account, c.Type, Grant, Adjustment)
	}
	a := c.Account
	if !ValidAccountID(a) {
		return Credited{}, fmt.Errorf("crediting %q: %w", a, ErrNoAccount)
	}
	for k := range c.Fields {
		if ledgerCoreFields[k] {
			return Credited{}, fmt.Errorf("crediting %q: field %q is reserved", a, k)
		}
	}
	args := make([]any, 0, 4+2*len(c.Fields))
	args = append(args, c.Amount, OperatorReference(c.Reference), c.Type, legacyReference(c.Reference), "created_at", time.Now().UnixMilli())
	for _, k := range sortedKeys(c.Fields) {
		args = append(args, k, c.Fields[k])
	}
	res, err := creditScript.Run(ctx, s.rdb, []string{acctKey(a), refsKey(a), ledgerKey(a), holdExpKey(a), holdValKey(a), promoKey(a), promoValKey(a), eventsKey(a)}, args...).Slice()
	if err != nil {
		return Credited{}, unavailable("crediting", err)
	}
	switch toInt(res[0]) {
	case 1:
		id, _ := res[2].(string)
		s.markDirty(a)
		if c.Amount < 0 {
			s.markEvents(a)
		}
		return Credited{Applied: true, BalanceAfter: toInt(res[1]), EntryID: id}, nil
	case 0:
		return Credited{Applied: false, BalanceAfter: toInt(res[1])}, nil
	default:
		return Credited{}, s.missingAccount(ctx, "crediting", a)
	}
}
