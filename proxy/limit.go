package proxy

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// admit asks the Limiter, if any, whether the call may start, and caps its
// hold request's output by the grant. held says that the Limiter holds part
// of the account's plan allowance for the call: its settle or release gives
// it back, and a call that gets no hold must releaseAdmission.
func (c *call) admit(hr metering.HoldRequest) (_ metering.HoldRequest, held bool, _ error) {
	l := c.rt.limiter
	if l == nil {
		return hr, false, nil
	}
	g, err := l.Admit(context.Background(), LimitedCall{Hold: hr, InputTokens: c.inTokens, Choices: max(c.req.choices, 1) * c.batch()})
	if err != nil {
		return hr, false, err
	}
	if g.MaxOutput < hr.MinOutput {
		// A Limiter refuses a call whose minimum does not fit (a
		// *LimitError); a grant below it would be forwarded past the plan.
		if g.Held {
			c.releaseAdmission()
		}
		return hr, false, fmt.Errorf("proxy: the limiter granted %d output tokens, below the call's minimum %d", g.MaxOutput, hr.MinOutput)
	}
	hr.MaxOutput = min(hr.MaxOutput, g.MaxOutput)
	return hr, g.Held, nil
}

// batch is how many prompts the call carries (completions prompts,
// embeddings inputs): that many calls in one, each of which may fill a window
// and gets every choice's output.
func (c *call) batch() int64 { return max(c.req.prompts, 1) }

// inputTokens is the input estimate the hold covers: the body's, at most a
// window per prompt. Input of unknown size (read by the provider from
// elsewhere) holds the whole window, or is refused where the model has none.
func (c *call) inputTokens() (int64, error) {
	m := c.model
	window, _ := mulHold(m.ContextWindow, c.batch()) // saturates at maxHold, far past any estimate
	if c.req.remote == "" {
		return inputEstimate(len(c.body), window), nil
	}
	if m.ContextWindow <= 0 {
		return 0, invalid("", "This request has the provider read input whose size the gateway cannot bound (%s), and model '%s' has no context window to bound it; send the content inline.",
			c.req.remote, m.ID)
	}
	return window, nil
}

// releaseAdmission gives back what the Limiter holds for a call that got no
// credits reserved: a release with no hold and no record drops just that. A
// failed release leaves it to expire at the hold TTL.
func (c *call) releaseAdmission() {
	if err := c.s.meter.Release(context.Background(), c.ident.Account, c.ident.KeyID, c.id, nil); err != nil {
		c.s.log.Warn("releasing a call's plan admission", zap.String("request_id", c.id), zap.Error(err))
	}
}
