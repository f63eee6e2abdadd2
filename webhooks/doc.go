// Package webhooks delivers Tollgate's outgoing events to the operator's
// endpoints (config billing.webhooks): signed, at least once, retried with
// exponential back-off for up to a day, none lost across a restart of the
// billing process.
//
// Events are queued in Redis by package metering (each in the same script as
// its cause where the cause is a script); the Dispatcher, run by the billing
// process, moves them from the accounts' outboxes to the webhook queue,
// schedules one delivery per endpoint that asks for the event's type, and
// sends them. Receivers check the signature with Verify.
//
// It imports metering (value types; the Queue it declares is satisfied by
// *metering.Store), pricing (amounts) and internal/config (the endpoints).
package webhooks
