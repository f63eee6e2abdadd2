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
	Ping(ctx context.Context) error
}

// Limiter admits or refuses a call before it is reserved (plan limits, rate
// limits). Optional: a nil Limiter admits everything.
type Limiter interface {
	// Admit returns a *LimitError when the account may not make this call now.
	Admit(ctx context.Context, account string) error
}

// SettleHook is told the outcome of every settled call (for example to
// enqueue an auto-recharge when the balance falls under a threshold). It runs
// after the caller has been answered for non-streaming calls, and must not block.
type SettleHook func(account string, charge metering.Charge)
