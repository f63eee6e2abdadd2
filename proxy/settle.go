package proxy

import (
	"context"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// settle charges a served call its whole cost. By the Meter contract it
// cannot fail once Reserve succeeded; ok is false only when the Meter
// refused the settlement itself (a bug, logged). A charge past the call's
// hold is logged (the account counts it in Redis): the hold should have
// bounded it, so each one is a hole in the hold's sizing that the operator
// must see.
func (c *call) settle(cost int64, rec metering.Record) (metering.Charge, bool) {
	s := c.s
	ch, err := s.meter.Settle(context.Background(), metering.Settlement{
		Account: c.ident.Account, KeyID: c.ident.KeyID, HoldID: c.id, Cost: cost, Record: rec,
	})
	if err != nil {
		s.log.Error("settling call", zap.String("request_id", c.id), zap.String("account", c.ident.Account), zap.Error(err))
		return ch, false
	}
	c.ended(&rec, &ch) // observe.go
	if ch.OverHold > 0 {
		s.log.Warn("call cost more than its hold", zap.String("request_id", c.id), zap.String("account", c.ident.Account),
			zap.String("model", c.model.ID), zap.String("endpoint", c.ep.name), zap.Int64("hold_mc", c.hold.Amount),
			zap.Int64("charged_mc", ch.Charged), zap.Int64("over_hold_mc", ch.OverHold))
	}
	if ch.Deferred {
		s.log.Warn("call served while the credit store was away; its charge is applied when it is back",
			zap.String("request_id", c.id), zap.String("account", c.ident.Account), zap.String("charged", pricing.FormatCredits(ch.Charged)))
	}
	if s.opts.OnSettle != nil {
		s.opts.OnSettle(c.ident.Account, ch)
	}
	return ch, true
}
