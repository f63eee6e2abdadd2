package proxy

import "time"

// Reading on a stream the client left (an orphan).
//
// A stream the client leaves is settled at once for what the provider
// generated until then, estimated when its usage has not come (OpenAI's chat,
// completions and Responses streams report it only at their end), and its
// upstream connection is closed so that the generation stops. For most calls
// the estimate is close. For a call whose input the body does not size it is
// no measure at all: a file or document by id or URL is estimated as the
// model's whole context window (far too much), a stored conversation, prompt
// or item, cached content, a continued response whose context is unknown or
// what a provider-side tool fetched as nothing but the request's text (far
// too little). Such a stream is instead read on in the background, relaying
// nothing, until the provider's usage and end marker come — and charged that
// usage — or until its own deadline or idle timeout, the provider's cut or an
// error event, or Shutdown ends the read first: then it is charged the
// estimate, as had the upstream been closed at the hangup. The record says
// client_disconnected (client_stalled when a write to the client timed out)
// whatever ended the read, and is estimated only when the usage is.
//
// The read runs on its own goroutine, started by CloseWithError, which
// fasthttp calls on the connection's goroutine once it is done with the body:
// from then on nothing else reads or writes the stream but that goroutine,
// the stream's timer and Shutdown's abort (atomics and the upstream's
// CloseWithError, as while the client was there). The stream stays among the
// Server's open streams and its call in flight until the read ends, so that
// Shutdown waits for it or cuts it; release then gives back what it holds,
// once. The client's response (its header and trailers, its connection) went
// back to fasthttp: the orphan's read never touches them, and the stall logic, which
// is about a client that is slow to read, does not apply to one that left.

// canOrphan reports whether a stream the client left should be read on for
// its usage: the provider can still be read and cut, there is time left, and
// the estimate would be no measure of the call (inputUnsized).
func (sb *streamBody) canOrphan() bool {
	return sb.src != nil && sb.idle != nil && !sb.aborted.Load() && !sb.expired.Load() &&
		time.Now().Before(sb.deadline) && sb.inputUnsized()
}

// inputUnsized reports whether an estimate of the call's input would be no
// measure of it: the provider reported no input count yet, and the request
// has it read input that no estimate counts (unmeasured) or that the
// estimate charges the whole window for (a file or document by id or URL).
// A request without input of unknown size (request.remote) is neither, and
// is not tokenized to tell.
func (sb *streamBody) inputUnsized() bool {
	switch {
	case sb.u.seen && (sb.outFinal || !sb.unmeasured):
		// The provider's count: final, or its first (Anthropic's
		// message_start) where nothing is read in the call beyond the
		// request. A provider-side tool's results are read after it: its
		// input grows until message_delta (a web search: 2,679 → 10,682).
		return false
	case sb.unmeasured:
		return true
	case sb.c.req.remote == "":
		return false
	}
	_, whole := sb.inputEstimate()
	return whole
}

// inputEstimate is the estimate of the request's input (requestInput), made
// once per stream.
func (sb *streamBody) inputEstimate() (n int64, whole bool) {
	if !sb.input.done {
		sb.input.n, sb.input.whole = requestInput(sb.c.estimator(sb.up), sb.c.ep.dialect, sb.reqBody)
		sb.input.done = true
	}
	return sb.input.n, sb.input.whole
}

// readOrphan reads the stream the client left to its end, parsing its events as
// Read does and relaying none, then settles and releases it. Its read is
// bounded as Read's is: the timer cuts the upstream after StreamIdle of
// silence and at the stream's deadline, and Shutdown cuts it (abort).
func (sb *streamBody) readOrphan() {
	if f := sb.c.s.orphaned.Load(); f != nil {
		(*f)()
	}
	for !sb.finished {
		sb.out, sb.off = sb.out[:0], 0 // nobody to send it to
		sb.held = sb.held[:0]
		if len(sb.ev) == 0 && !sb.skip {
			sb.idle.Reset(sb.timer(true))
		}
		sb.pump()
	}
	sb.settle(true) // settled already, unless a path forgot: never free
	sb.release()
}

// orphanFailed ends an orphan the provider broke off with an error
// event: the call is charged the estimate, as at the hangup (the client left
// first), and the connection is not pooled.
func (sb *streamBody) orphanFailed() {
	sb.finished = true
	_ = sb.src.CloseWithError(errStreamBroken)
	sb.settle(true)
}
