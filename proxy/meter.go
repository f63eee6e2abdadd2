package proxy

import (
	"context"

	"github.com/tollgate/tollgate/metering"
)

// Meter is what the proxy needs of the credit store. *lease.Leaser
// satisfies it (cmd/tollgate guards that); tests may substitute a fake.
//
// The contract: Reserve is the only call that may refuse (insufficient
// credits, store unavailable: the call is then not forwarded). Once Reserve
// succeeded, Settle never fails — it charges the whole cost, past the hold if
// need be (Charge.OverHold), and when the store cannot be reached it applies
// the charge later (Charge.Deferred) — so a served call is never free and the
// proxy keeps no retry path of its own. An error from Settle means the
// settlement itself was wrong (a bug). Release never charges; a failed
// Release leaves the hold to expire.
type Meter interface {
	Authenticate(ctx context.Context, secret []byte) (metering.Identity, error)
	Reserve(ctx context.Context, r metering.HoldRequest) (metering.Hold, error)
	Settle(ctx context.Context, s metering.Settlement) (metering.Charge, error)
	Release(ctx context.Context, account, keyID, holdID string, rec *metering.Record) error
	Generation(ctx context.Context, account, requestID string) (metering.Generation, error)
	// RecordResponse records that account created the provider's stored
	// response (Responses API) responseID, served by provider, and the
	// tokens a continuation reads again; StoredResponse returns what was
	// recorded, or metering.ErrNotFound when account did not create it
	// (responses.go).
	RecordResponse(ctx context.Context, account, responseID, provider string, tokens int64) error
	StoredResponse(ctx context.Context, account, responseID string) (metering.StoredResponse, error)
	Ping(ctx context.Context) error
}

// Limiter admits or refuses a call before its credits are reserved (plan
// limits, rate limits). Optional: a nil Limiter admits everything.
type Limiter interface {
	// Admit returns the most output the call may be granted, or a
	// *LimitError when the account may not make it now. A Grant that Held
	// part of the account's allowance keeps it until the call's Settle or
	// Release (by its request id, the hold id) drops it: a call admitted and
	// then refused by Reserve must be Released.
	Admit(ctx context.Context, c LimitedCall) (Grant, error)
}

// LimitedCall is a call as a Limiter weighs it.
type LimitedCall struct {
	// Hold is the call's hold request: the account, the request id
	// (HoldID), and the worst case in credits and output tokens.
	Hold        metering.HoldRequest
	InputTokens int64 // the input estimate Hold.Fixed covers
	Choices     int64 // output tokens billed per output token granted ("n"; at least 1)
}

// Grant is a Limiter's admission of a call.
type Grant struct {
	// MaxOutput is the most output tokens the call may be granted, in
	// [Hold.MinOutput, Hold.MaxOutput]: the hold request is capped by it.
	MaxOutput int64
	// Held: the Limiter holds the call's worst case against the account's
	// plan allowance until the call is settled or released.
	Held bool
}

// SettleHook is told the outcome of every settled call (for example to
// enqueue an auto-recharge when the balance falls under a threshold). It runs
// after the caller has been answered for non-streaming calls, and must not block.
type SettleHook func(account string, charge metering.Charge)
