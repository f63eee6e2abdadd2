package proxy

import (
	"context"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// admit asks the Limiter, if any, whether the call may start, and caps its
// hold request's output by the grant. held says that the Limiter holds part
// of the account's plan allowance for the call: its settle or release gives
// it back, and a call that gets no hold must releaseAdmission.
func (c *call) admit(hr metering.HoldRequest) (_ metering.HoldRequest, held bool, _ error) {
	l := c.s.opts.Limiter
	if l == nil {
		return hr, false, nil
	}
	g, err := l.Admit(context.Background(), LimitedCall{Hold: hr, InputTokens: c.inputTokens(), Choices: max(c.req.choices, 1)})
	if err != nil {
		return hr, false, err
	}
	hr.MaxOutput = min(hr.MaxOutput, max(g.MaxOutput, hr.MinOutput))
	return hr, g.Held, nil
}

// inputTokens is the input estimate the hold covers.
func (c *call) inputTokens() int64 {
	if c.req.remoteInput && c.model.ContextWindow > 0 {
		return c.model.ContextWindow // input of unknown size: hold the whole window
	}
	return inputEstimate(len(c.body), c.model.ContextWindow)
}

// releaseAdmission gives back what the Limiter holds for a call that got no
// credits reserved: a release with no hold and no record drops just that. A
// failed release leaves it to expire at the hold TTL.
func (c *call) releaseAdmission() {
	if err := c.s.meter.Release(context.Background(), c.ident.Account, c.ident.KeyID, c.id, nil); err != nil {
		c.s.log.Warn("releasing a call's plan admission", zap.String("request_id", c.id), zap.Error(err))
	}
}
