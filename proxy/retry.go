package proxy

import (
	"math/rand/v2"
	"time"
)

// Retry configures resending a call to the same deployment after a failure
// the provider cannot have billed: it could not be reached (connect error),
// or it answered 429 or 5xx before any byte was relayed to the caller. A
// timeout after the request was sent is never retried (the provider may be
// working on it). Each retry waits an exponential backoff with jitter (at
// least the provider's Retry-After, within MaxBackoff), within the call's
// deadline; after the last the next deployment (the
// fallback) is tried. Zero values mean the documented defaults.
type Retry struct {
	// Attempts is how many times a failed call is resent to one deployment
	// (0: none, the default).
	Attempts int
	// Backoff is the wait before the first retry; it doubles per retry, up
	// to MaxBackoff, and each wait is drawn between half of it and all of
	// it. Default 100ms.
	Backoff time.Duration
	// MaxBackoff caps one wait. Default 2s.
	MaxBackoff time.Duration
}

func (r *Retry) init() {
	if r.Attempts < 0 {
		r.Attempts = 0
	}
	if r.Backoff <= 0 {
		r.Backoff = 100 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 2 * time.Second
	}
	r.MaxBackoff = max(r.MaxBackoff, r.Backoff)
}

// wait is the backoff before retry n (0 for the first): Backoff × 2ⁿ capped
// at MaxBackoff, of which the second half is drawn at random ("equal
// jitter": never less than half, so retries stay spread out yet bounded).
func (r *Retry) wait(n int) time.Duration {
	d := r.MaxBackoff
	if n < 32 {
		d = min(r.Backoff<<n, r.MaxBackoff)
		if d <= 0 { // overflow
			d = r.MaxBackoff
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// honourRetryAfter lengthens a wait to the provider's Retry-After (whole
// seconds), within MaxBackoff: a provider that says when to come back is
// not asked sooner, and never makes a call wait past the cap.
func (r *Retry) honourRetryAfter(wait time.Duration, header []byte) time.Duration {
	secs, ok := parseInt(header)
	if !ok || secs <= 0 {
		return wait
	}
	if secs > int64(r.MaxBackoff/time.Second) {
		return max(wait, r.MaxBackoff)
	}
	return max(wait, time.Duration(secs)*time.Second)
}

// retryWait is the wait before retry n of the call; false when the
// attempts are spent or the wait would pass the call's deadline (the call
// then moves on to the next deployment).
func (c *call) retryWait(n int) (time.Duration, bool) {
	if n >= c.s.opts.Retry.Attempts {
		return 0, false
	}
	d := c.s.opts.Retry.wait(n)
	return d, time.Since(c.start)+d < c.deadline()
}

// deadline is how long after its start a call may still be sent: the
// request timeout, or for a stream the first-byte timeout.
func (c *call) deadline() time.Duration {
	if c.req.stream {
		return c.s.opts.Timeouts.FirstByte
	}
	return c.s.opts.Timeouts.Request
}
