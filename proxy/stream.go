package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// SSE byte prefixes, declared once.
var (
	strData      = []byte("data:")
	strEvent     = []byte("event:")
	strDone      = []byte("[DONE]")
	strDoneEvent = []byte("data: [DONE]\n\n")
)

// Anthropic and Responses event names that matter for metering.
var (
	evMessageStart  = []byte("message_start")
	evMessageDelta  = []byte("message_delta")
	evMessageStop   = []byte("message_stop")
	evError         = []byte("error")
	evRespCreated   = []byte("response.created")
	evRespCompleted = []byte("response.completed")
	evRespIncomplet = []byte("response.incomplete")
	evRespFailed    = []byte("response.failed")
	evBlockStart    = []byte("content_block_start")
	evRespItemAdded = []byte("response.output_item.added")
)

var errStreamTimeout = errors.New("proxy: stream exceeded its time limit")

// noCloseWithError logs once that fasthttp's stream body lacks CloseWithError.
var noCloseWithError sync.Once
var errAborted = errors.New("proxy: stream cut at shutdown")
var errStreamBroken = errors.New("proxy: upstream stream ended early")
var errStreamIdle = errors.New("proxy: no upstream event within the stream idle timeout")

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// streamBody relays an upstream SSE stream to the client, event by event. It
// is the response's body stream: fasthttp calls Read from the connection's
// goroutine, writes and flushes each chunk, and calls CloseWithError at the
// end — so no extra goroutine or pipe exists per stream, and trailer values
// set here are written after the body by the same goroutine.
type streamBody struct {
	c        call // copied: owns its fields from here on
	up       *upstream
	resp     *fasthttp.Response
	src      fasthttp.ReadCloserWithError
	br       *bufio.Reader
	hdr      *fasthttp.ResponseHeader
	maxLine  int
	deadline time.Time

	out  []byte // bytes ready for the client
	off  int
	line []byte // a line longer than the reader's buffer, assembled
	ev   []byte // the current event's raw lines
	data []byte // the current event's data payload
	name []byte // the current event's name
	held []byte // a final event held back until the call is settled

	u         usage
	outFinal  bool   // u.Output is the provider's final count (not message_start's)
	text      []byte // a sample of the generated text relayed, JSON-escaped; grows as needed
	delivered int64  // bytes of generated text relayed, JSON-escaped
	// searches counts the provider-side web searches seen starting in the
	// stream (searchStarted), for an estimate: a search the provider ran
	// before a cut is billed though no usage reports it.
	searches  int64
	reqBody   []byte // a copy of the client's body (its size, not a pooled 4 KiB): read only for an estimate
	firstByte time.Duration
	terminal  bool   // the provider's end marker was seen
	storedID  string // the Responses response's id, once recorded (responses.go)
	settled   bool
	charged   bool  // settled with a charge (charge is valid)
	finished  bool  // nothing more to send
	pending   error // the upstream's end, reported after a last unterminated line
	aborted   atomic.Bool
	idleFired atomic.Bool
	expired   atomic.Bool
	// idle cuts the upstream when no event arrives within StreamIdle, and
	// at the stream's deadline whether or not Read is called (timer).
	idle *time.Timer
	// conn is the client's connection when this Server accepted it (nil
	// otherwise): each write of the stream to it is bounded (bound).
	conn      net.Conn
	handed    time.Time // when Read last handed bytes to fasthttp
	stalledAt time.Time // when the last write to the client that took over clientStall ended
	// An event past maxLine is dropped, its end kept in tail (skipLine).
	skip, lineCut, oversize bool
	tail                    []byte
	dropSearches            int64  // web_search_call items in the event being dropped
	reason                  string // the record's reason when the call is not cancelled
	closeOnce               sync.Once
	charge                  metering.Charge
	// unmeasured: the request has the provider read input no estimate
	// counts (request.unsized, or a continued response whose context is
	// unknown). Set before the handler returns.
	unmeasured bool
	// input is the estimate of the request's input once made (inputEstimate).
	input struct {
		done  bool
		n     int64
		whole bool
	}
	// orphan: the client left, and the stream is read to its end in the
	// background for the provider's usage (orphan.go). Nothing is relayed.
	// left is the record's reason then: how the client left.
	orphan bool
	left   string
}

// startStream hands the call to a streamBody and sets the response up.
func (c *call) startStream(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, up *upstream) {
	body := resp.BodyStream()
	if _, ok := body.(fasthttp.ReadCloserWithError); !ok {
		// A streamBody closes a broken stream's connection with an error, so
		// that it is never pooled (fasthttp reads a connection closed at a
		// chunk boundary as the body's clean end, and a cut stream would be
		// charged as whole). Should fasthttp stop providing the interface,
		// no connection of a stream is reused rather than fail silently.
		// (TestUpstreamStreamBodyClosesWithError catches it first.)
		resp.SetConnectionClose()
		noCloseWithError.Do(func() {
			c.s.log.Error("fasthttp's stream body cannot be closed with an error; stream connections are not reused")
		})
	}
	sb := newStreamBody(c, up, resp, body, &ctx.Response.Header)
	if lc, ok := ctx.Conn().(lingerConn); ok {
		sb.conn = lc.Conn // accepted by Serve: a real connection, whose writes can be bounded
	}
	h := &ctx.Response.Header
	var nb [24]byte
	h.SetBytesV(hdrBalance, pricing.AppendCredits(nb[:0], c.hold.Available))
	h.SetContentType("text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	_ = h.AddTrailer(hdrCharged)
	_ = h.AddTrailer(hdrBalanceAfter)
	c.s.streams.Store(sb, struct{}{})
	if sb.src != nil {
		// Silence is measured between events, not reads: an upstream that
		// trickles a byte a second never completes one. The deadline holds
		// even while no Read comes (fasthttp blocked writing to a client
		// that stopped reading, or an upstream read waiting): the upstream
		// is cut, and bound ends the client's write.
		sb.idle = time.AfterFunc(sb.timer(true), func() {
			if !time.Now().Before(sb.deadline) {
				sb.expired.Store(true)
				_ = sb.src.CloseWithError(errStreamTimeout)
				return
			}
			sb.idleFired.Store(true)
			_ = sb.src.CloseWithError(errStreamIdle)
		})
	}
	ctx.Response.ImmediateHeaderFlush = true // the client sees X-Request-Id and the hold at once
	ctx.SetBodyStream(sb, -1)
}

// newStreamBody builds the relay of body, the upstream response's stream.
// It copies what it keeps of c: the parser, the arena and the client's body
// go back with the handler, so the body is copied (into a pooled buffer,
// one memcpy) in case an estimate needs it at the end.
func newStreamBody(c *call, up *upstream, resp *fasthttp.Response, body io.Reader, hdr *fasthttp.ResponseHeader) *streamBody {
	sb := &streamBody{
		c: *c, up: up, resp: resp, hdr: hdr, maxLine: c.s.opts.MaxEventBytes,
		deadline: c.start.Add(c.s.opts.Timeouts.Stream), firstByte: -1,
	}
	sb.reqBody = bytes.Clone(c.body)
	sb.unmeasured = c.req.unsized || (c.req.prevResponse != nil && c.prevContext == 0)
	sb.c.parser, sb.c.req.model = nil, nil
	sb.c.body = nil
	sb.src, _ = body.(fasthttp.ReadCloserWithError)
	sb.br = readerPool.Get().(*bufio.Reader)
	sb.br.Reset(body)
	return sb
}

// Read gives fasthttp the next bytes for the client, pulling upstream events
// as needed. Each event is returned (and flushed) as soon as it is complete.
func (sb *streamBody) Read(p []byte) (int, error) {
	if now := time.Now(); !sb.handed.IsZero() && now.Sub(sb.handed) > clientStall {
		sb.stalledAt = now // fasthttp spent that long writing the last bytes
	}
	for sb.off == len(sb.out) {
		if sb.finished {
			sb.bound()
			return 0, io.EOF
		}
		sb.out, sb.off = sb.out[:0], 0
		if sb.idle != nil && len(sb.ev) == 0 && !sb.skip {
			// The upstream's turn: its silence is measured from here to the
			// end of the next event, never while the client is slow to read.
			sb.idle.Reset(sb.timer(true))
		}
		sb.pump()
	}
	n := copy(p, sb.out[sb.off:])
	sb.off += n
	sb.bound()
	return n, nil
}

// timer is when the stream's timer fires next: at its deadline, or sooner
// StreamIdle from now on the upstream's turn.
func (sb *streamBody) timer(upstreamTurn bool) time.Duration {
	d := time.Until(sb.deadline)
	if idle := sb.c.s.opts.Timeouts.StreamIdle; upstreamTurn && idle < d {
		d = idle
	}
	return d
}

// clientStall is how long a write to the client may take before an upstream
// failure that follows (within StreamIdle) is put down to the client: while
// fasthttp writes, the upstream is not read, and a provider may give up on a
// stream that does not drain. Such a stream is charged what was generated,
// not released (stallCut).
const clientStall = 2 * time.Second

// afterStall reports whether the client stalled a write within StreamIdle.
func (sb *streamBody) afterStall() bool {
	return !sb.stalledAt.IsZero() && time.Since(sb.stalledAt) < sb.c.s.opts.Timeouts.StreamIdle
}

// stallCut ends a stream the provider broke off (cut, or an error event)
// after the client stalled: the call is charged what was generated, and the
// client is told after what the provider sent.
func (sb *streamBody) stallCut() {
	sb.finished = true
	if sb.src != nil {
		_ = sb.src.CloseWithError(errStreamBroken) // never pooled, as in failed
	}
	sb.reason = "upstream_cut_after_client_stall"
	sb.settle(false)
	sb.cut(sb.c.ep.dialect.streamError("upstream_stream_cut", msgCutAfterStall))
}

// writeGrace is how long past the stream's deadline the client has to take
// the bytes handed to it (the end of the stream and its trailers).
const writeGrace = time.Second

// bound sets the deadline of fasthttp's next write to the client, the bytes
// Read hands it: StreamIdle from now, and never past the stream's deadline
// (plus writeGrace). A client that stops reading thus cannot hold a stream,
// and its hold, past either: the write fails, fasthttp closes the body
// (CloseWithError), and the call is settled. fasthttp sets no write deadline
// of its own while it streams a body; it sets Server.WriteTimeout again
// before the connection's next response (New).
func (sb *streamBody) bound() {
	now := time.Now()
	sb.handed = now
	if sb.conn == nil {
		return
	}
	d := now.Add(sb.c.s.opts.Timeouts.StreamIdle)
	if last := sb.deadline.Add(writeGrace); last.Before(d) {
		d = last
	}
	if soonest := now.Add(writeGrace); d.Before(soonest) {
		d = soonest
	}
	_ = sb.conn.SetWriteDeadline(d)
}

// pump reads one line from upstream and acts on it.
func (sb *streamBody) pump() {
	if sb.aborted.Load() {
		sb.end(errAborted)
		return
	}
	if time.Now().After(sb.deadline) {
		sb.end(errStreamTimeout)
		return
	}
	line, err := sb.readLine()
	if err != nil {
		if sb.skip {
			sb.dropOversize() // its tail may hold the usage
		} else if len(sb.ev) > 0 && errors.Is(err, io.EOF) {
			sb.dispatch() // a last event without its blank line
		}
		sb.end(err)
		return
	}
	if sb.firstByte < 0 {
		sb.firstByte = time.Since(sb.c.start)
	}
	if sb.terminal {
		// Past the provider's end marker nothing is relayed; the body is
		// still read to its end so that the connection can be reused.
		return
	}
	if len(line) == 0 {
		if sb.skip {
			sb.dropOversize()
		} else if len(sb.ev) > 0 {
			sb.dispatch()
		}
		return
	}
	if sb.skip || sb.lineCut || len(sb.ev)+len(line) > sb.maxLine {
		sb.skipLine(line) // an event past the bound, however long: read through, not relayed
		return
	}
	sb.ev = append(sb.ev, line...)
	sb.ev = append(sb.ev, '\n')
	switch {
	case bytes.HasPrefix(line, strData):
		v := bytes.TrimPrefix(line[len(strData):], []byte(" "))
		if len(sb.data) > 0 {
			sb.data = append(sb.data, '\n')
		}
		sb.data = append(sb.data, v...)
	case bytes.HasPrefix(line, strEvent):
		sb.name = append(sb.name[:0], bytes.TrimSpace(line[len(strEvent):])...)
	}
}

// readLine returns the next line without its end of line. A line longer
// than maxLine is read through but only its end is returned (lineCut). A
// last line without a newline is returned before the end is reported.
func (sb *streamBody) readLine() ([]byte, error) {
	sb.lineCut = false
	if sb.pending != nil {
		return nil, sb.pending
	}
	sb.line = sb.line[:0]
	for {
		frag, err := sb.br.ReadSlice('\n')
		switch {
		case err == nil && len(sb.line) == 0:
			return trimEOL(frag), nil
		case err == nil:
			sb.line = append(sb.line, frag...)
			return trimEOL(sb.line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			sb.line = append(sb.line, frag...)
			if len(sb.line) > sb.maxLine || (sb.lineCut && len(sb.line) > 2*oversizeTail) {
				sb.lineCut = true
				sb.line = sb.keepTail(sb.line, oversizeTail)
			}
			continue
		}
		sb.line = append(sb.line, frag...)
		if len(sb.line) > 0 {
			sb.pending = err
			return trimEOL(sb.line), nil
		}
		return nil, err
	}
}

// oversizeTail is how much of an event too large to relay is kept: its
// end, where the usage of a final event sits (response.completed,
// message_delta, the last chat chunk).
const oversizeTail = 64 << 10

// keepTail moves the last n bytes of b to its start. The web searches
// named in the bytes dropped are counted first (searches): OpenAI bills each
// web_search_call item of a Responses output, and reports them nowhere else.
func (sb *streamBody) keepTail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	cut := len(b) - n
	// Each match starting before cut, once: the kept bytes are counted later.
	sb.dropSearches += int64(bytes.Count(b[:cut+len(strWebSearchCall)-1], strWebSearchCall))
	return b[:copy(b, b[cut:])]
}

// skipLine takes a line of an event past maxLine: the event is not relayed
// (the client is told, dropOversize), and only the end of its data is kept.
func (sb *streamBody) skipLine(line []byte) {
	if !sb.skip {
		sb.skip = true
		sb.tail = append(sb.tail[:0], sb.data...)
		sb.ev, sb.data = sb.ev[:0], sb.data[:0]
	}
	switch {
	case sb.lineCut, bytes.HasPrefix(line, strData): // a cut line's end is data, whatever it began with
		if !sb.lineCut {
			line = bytes.TrimPrefix(line[len(strData):], []byte(" "))
		}
		if len(sb.tail) > 0 {
			sb.tail = append(sb.tail, '\n') // data lines join with a newline
		}
		sb.tail = append(sb.tail, line...)
	case bytes.HasPrefix(line, strEvent):
		sb.name = append(sb.name[:0], bytes.TrimSpace(line[len(strEvent):])...)
	}
	if len(sb.tail) > 2*oversizeTail {
		sb.tail = sb.keepTail(sb.tail, oversizeTail)
	}
}

// dropOversize ends an event past maxLine. It is not relayed, but the
// provider generated it: the call is charged, never released (end). Usage
// sits at the end of the events that carry it, so it is read from the
// event's tail when there; otherwise the call is charged an estimate.
func (sb *streamBody) dropOversize() {
	if sb.idle != nil {
		sb.idle.Reset(sb.timer(false)) // the client's turn: only the deadline holds
	}
	sb.skip, sb.oversize, sb.reason = false, true, "event_too_large"
	sb.dropSearches += int64(bytes.Count(sb.tail, strWebSearchCall))
	if obj := lastUsageObject(sb.tail); obj != nil {
		p := parserPool.Get()
		if v, err := p.ParseBytes(obj); err == nil {
			if u, ok := sb.c.ep.dialect.usageObject(v); ok { // dialect_*.go
				if _, messages := sb.c.ep.dialect.(messagesDialect); messages {
					sb.messageUsage(sb.name, u) // a start's first count, or a delta's final one
				} else {
					sb.u, sb.outFinal = u, true
				}
			}
		}
		parserPool.Put(p)
	}
	if _, ok := sb.c.ep.dialect.(responsesDialect); ok {
		sb.u.WebSearch = max(sb.u.WebSearch, sb.dropSearches) // the output items read through
	}
	sb.tail, sb.name, sb.dropSearches = sb.tail[:0], sb.name[:0], 0
	sb.out = append(sb.out, sb.c.ep.dialect.streamError("event_too_large", msgEventTooLarge)...)
}

const msgEventTooLarge = "The provider sent an event larger than this gateway relays; it was dropped. The call was charged for what the provider generated."

// lastUsageObject returns the last complete object in b that is the value of
// a "usage" member, or nil. b may begin inside a string: a quote inside a
// string is escaped, so a match is a member name.
func lastUsageObject(b []byte) []byte {
	for end := len(b); ; {
		i := bytes.LastIndex(b[:end], strUsageKey)
		if i < 0 {
			return nil
		}
		if j := skipSpace(b, i+len(strUsageKey)); j < len(b) && b[j] == ':' {
			if j = skipSpace(b, j+1); j < len(b) && b[j] == '{' {
				if k := objectEnd(b, j); k >= 0 {
					return b[j : k+1]
				}
			}
		}
		end = i
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// dispatch acts on one complete event: meter it, then pass it on, hold it,
// or drop it.
func (sb *streamBody) dispatch() {
	if sb.idle != nil {
		sb.idle.Reset(sb.timer(false)) // the client's turn: only the deadline holds
	}
	pass := sb.c.ep.dialect.event(sb, sb.name, sb.data) // dialect_*.go
	if pass && len(sb.ev) > 0 {
		sb.out = append(sb.out, sb.ev...)
		sb.out = append(sb.out, '\n')
	}
	sb.ev, sb.data, sb.name = sb.ev[:0], sb.data[:0], sb.name[:0]
}

// recordStored records the id of the response a Responses event carries
// (response.id) for the account, once per stream.
func (sb *streamBody) recordStored(data []byte) {
	if sb.storedID != "" {
		return
	}
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, err := p.ParseBytes(data)
	if err != nil {
		return
	}
	if id := v.GetStringBytes("response", "id"); len(id) > 0 {
		sb.storedID = string(id)
		sb.c.s.recordResponse(sb.c.ident.Account, sb.storedID, sb.up.name, 0) // its context once settled
	}
}

// collect counts the generated text of a delta event and keeps a sample of
// it for an estimate: a copy of the string values, no decoding.
func (sb *streamBody) collect(data []byte) {
	var n int64
	sb.text, n = scanText(sb.text, data, maxTextSample)
	sb.delivered += n
}

// eventType reads the "type" member of an event's JSON without decoding it,
// for servers that send Responses or Messages events without event: lines.
func eventType(data []byte) []byte {
	i := bytes.Index(data, strTypeKey)
	if i < 0 {
		return nil
	}
	j := skipSpace(data, i+len(strTypeKey))
	if j >= len(data) || data[j] != ':' {
		return nil
	}
	j = skipSpace(data, j+1)
	if j >= len(data) || data[j] != '"' {
		return nil
	}
	end := stringEnd(data, j+1)
	if end < 0 {
		return nil
	}
	return data[j+1 : end]
}

var (
	strTypeKey     = []byte(`"type"`)
	strErrorKey    = []byte(`"error"`)
	strDeltaSuffix = []byte(".delta")
	evBlockDelta   = []byte("content_block_delta")
)

// chunkUsage parses one event's JSON with a pooled parser and returns the
// usage found at path, read by parseFn, and whether the value at emptyArr is
// a missing or empty array.
func chunkUsage(data []byte, parseFn func(*fastjson.Value) (usage, bool), emptyArr string, path ...string) (u usage, ok, empty bool) {
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, err := p.ParseBytes(data)
	if err != nil {
		return usage{}, false, false
	}
	u, ok = parseFn(v.Get(path...))
	if emptyArr != "" {
		a := v.Get(emptyArr)
		empty = a == nil || len(a.GetArray()) == 0
	}
	return u, ok, empty
}

// emitHeld writes the held usage chunk (with the charge added) and [DONE].
func (sb *streamBody) emitHeld() {
	if len(sb.held) > 0 {
		sb.out = append(sb.out, strData...)
		sb.out = append(sb.out, ' ')
		sb.out = sb.withCredits(sb.out, sb.held)
		sb.out = append(sb.out, '\n', '\n')
		sb.held = sb.held[:0]
	}
	sb.out = append(sb.out, strDoneEvent...)
	sb.ev = sb.ev[:0] // [DONE] is written here, after the held chunk
}

// withCredits appends chunk with usage.credits (charged) and
// usage.credits_balance added, as decimal credit strings. chunk is a chat
// usage chunk or an Anthropic message_delta: its first "usage" member is the
// one (quotes inside strings are escaped, so text cannot fool the search).
func (sb *streamBody) withCredits(dst, chunk []byte) []byte {
	u := bytes.Index(chunk, strUsageKey)
	if !sb.charged || u < 0 {
		return append(dst, chunk...)
	}
	start := bytes.IndexByte(chunk[u:], '{')
	if start < 0 {
		return append(dst, chunk...)
	}
	start += u
	end := objectEnd(chunk, start)
	if end < 0 {
		return append(dst, chunk...)
	}
	dst = append(dst, chunk[:end]...)
	if end > start+1 {
		dst = append(dst, ',')
	}
	dst = append(dst, `"credits":"`...)
	dst = pricing.AppendCredits(dst, sb.charge.Charged)
	dst = append(dst, `","credits_balance":"`...)
	dst = pricing.AppendCredits(dst, sb.charge.BalanceAfter)
	dst = append(dst, '"')
	return append(dst, chunk[end:]...)
}

// objectEnd returns the index of the brace closing the object that opens at
// b[start], or -1.
func objectEnd(b []byte, start int) int {
	depth := 0
	for j := start; j < len(b); j++ {
		switch b[j] {
		case '"':
			e := stringEnd(b, j+1)
			if e < 0 {
				return -1
			}
			j = e
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// withResponseCredits appends a Responses response.completed (or
// .incomplete) event's data with credits and credits_balance added to
// response.usage. The event echoes the whole response (tools, metadata), so
// it is parsed rather than searched; it is one event per stream.
func (sb *streamBody) withResponseCredits(dst, data []byte) []byte {
	if !sb.charged {
		return append(dst, data...)
	}
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, err := p.ParseBytes(data)
	u := v.Get("response", "usage")
	if err != nil || u == nil || u.Type() != fastjson.TypeObject {
		return append(dst, data...)
	}
	a := arenaPool.Get()
	defer func() { a.Reset(); arenaPool.Put(a) }()
	var nb [24]byte
	u.Set("credits", a.NewStringBytes(pricing.AppendCredits(nb[:0], sb.charge.Charged)))
	u.Set("credits_balance", a.NewStringBytes(pricing.AppendCredits(nb[:0], sb.charge.BalanceAfter)))
	return v.MarshalTo(dst)
}

// usageNow is what the call consumed so far: the provider's usage when it
// reported it, the output estimated from the relayed text when its final
// count is missing (never below a partial count), and the input estimated
// from the request when no usage came at all. estimated says whether any of
// it is an estimate.
func (sb *streamBody) usageNow() (u usage, estimated bool) {
	u = sb.u
	if u.seen && sb.outFinal {
		return u, false
	}
	enc := encodingFor(sb.c.model)
	if !u.seen {
		// No input count came: estimated. A final output count that did
		// come (an Anthropic delta after a start without one) is kept, and
		// the searches of an event dropped (dropOversize).
		out := usage{}
		out.WebSearch = u.WebSearch
		if sb.outFinal {
			out.Output, out.Reasoning = u.Output, u.Reasoning
		}
		u = out
		in, _ := sb.inputEstimate()
		u.Input = in + sb.c.prevContext // a continued response's context too
	}
	u.Output = max(u.Output, streamedTokens(enc, sb.text, sb.delivered))
	u.Reasoning = min(u.Reasoning, u.Output)
	u.WebSearch = max(u.WebSearch, sb.searches)
	return u, true
}

var (
	strServerToolUse = []byte(`"server_tool_use"`)
	strWebSearchCall = []byte(`"web_search_call"`)
)

// searchStarted counts a web search the event starts: an Anthropic
// content_block_start of a server_tool_use block named web_search (web
// fetch and code execution bill no per-use fee), or a Responses
// output_item.added of a web_search_call item (OpenAI bills each). It
// parses only an event that names one (rare: the common events cost a
// substring search).
func (sb *streamBody) searchStarted(data []byte, key []byte, path ...string) {
	if !bytes.Contains(data, key) {
		return
	}
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, err := p.ParseBytes(data)
	if err != nil {
		return
	}
	it := v.Get(path...)
	switch string(it.GetStringBytes("type")) {
	case "server_tool_use":
		if string(it.GetStringBytes("name")) == "web_search" {
			sb.searches++
		}
	case "web_search_call":
		sb.searches++
	}
}

// settle charges the call once: usage if reported, else an estimate.
func (sb *streamBody) settle(cancelled bool) {
	if sb.settled {
		return
	}
	sb.settled = true
	cancelled = cancelled || sb.orphan
	c := &sb.c
	u, estimated := sb.usageNow()
	c.callFees(&u)
	rec := c.record(u, true)
	rec.Provider, rec.Estimated, rec.Cancelled = sb.up.name, estimated, cancelled
	rec.TTFT = max(sb.firstByte, 0)
	if cancelled {
		rec.Reason = "client_disconnected"
		if sb.aborted.Load() {
			rec.Reason = "gateway_shutdown"
		} else if sb.expired.Load() || time.Now().After(sb.deadline) {
			rec.Reason = "stream_timeout"
		} else if sb.reason == "client_stalled" { // how the client left; not what was dropped before
			rec.Reason = sb.reason
		}
		if sb.orphan {
			rec.Reason = sb.left // the client left first, whatever ended the read after
		}
	} else if sb.reason != "" {
		rec.Reason = sb.reason
	}
	ch, ok := c.settle(c.model.Cost(u.Usage, c.start), rec)
	if sb.storedID != "" {
		c.s.recordResponse(c.ident.Account, sb.storedID, sb.up.name, contextTokens(u)) // responses.go
	}
	if !ok {
		return // logged; the trailers stay empty
	}
	sb.charge, sb.charged = ch, true
	if sb.orphan {
		return // the response, and its trailers, went with the client
	}
	var nb [24]byte
	sb.hdr.SetBytesV(hdrCharged, pricing.AppendCredits(nb[:0], ch.Charged))
	sb.hdr.SetBytesV(hdrBalanceAfter, pricing.AppendCredits(nb[:0], ch.BalanceAfter))
}

// failed ends a stream the provider broke off: the call is free, and the
// client is told with an error event. The record keeps what was delivered.
func (sb *streamBody) failed(reason string) {
	if sb.finished {
		return
	}
	if sb.orphan {
		sb.orphanFailed()
		return
	}
	if sb.afterStall() {
		sb.stallCut() // its error may be the provider giving up on a stream that did not drain
		return
	}
	if sb.oversize {
		// The provider generated an event too large to relay before its
		// error: what it generated is charged (by the usage the dropped
		// event carried, or an estimate), never released.
		sb.finished = true
		if sb.src != nil {
			_ = sb.src.CloseWithError(errStreamBroken) // never pooled, as below
		}
		sb.settle(false)
		sb.cut(sb.c.ep.dialect.streamError("upstream_stream_cut", msgEventTooLarge))
		return
	}
	sb.finished = true
	sb.settled = true
	if sb.src != nil {
		// Never pool the connection of a broken stream: fasthttp reads a
		// connection closed at a chunk boundary as the body's clean end.
		_ = sb.src.CloseWithError(errStreamBroken)
	}
	c := &sb.c
	u, estimated := sb.deliveredUsage()
	rec := c.record(u, true)
	rec.Provider, rec.Failed, rec.Reason, rec.Status = sb.up.name, true, reason, 502
	rec.Estimated, rec.TTFT = estimated, max(sb.firstByte, 0)
	c.ended(&rec, nil) // observe.go
	c.upstreamFailed(sb.up, streamFailReason(reason))
	if err := c.s.meter.Release(context.Background(), c.ident.Account, c.ident.KeyID, c.id, &rec); err != nil {
		c.s.log.Warn("releasing hold", zap.String("request_id", c.id), zap.Error(err))
	}
	sb.hdr.Set(hdrCharged, "0.000")
	// Pass on what the provider sent, its own error event last, then ours.
	c.ep.dialect.streamCut(sb) // dialect_*.go: through cut
}

// cut ends a cut stream's output: the event being read (the provider's own
// error, as it came), then the dialect's error event ev. Nothing held is
// relayed after it.
func (sb *streamBody) cut(ev string) {
	sb.held = sb.held[:0]
	if len(sb.ev) > 0 {
		sb.out = append(sb.out, sb.ev...)
		sb.out = append(sb.out, '\n')
		sb.ev = sb.ev[:0]
	}
	sb.out = append(sb.out, ev...)
}

const msgStreamCut = "The provider ended the stream early; the call was not charged."

// deliveredUsage is what a failed stream's record keeps: the usage the
// provider reported, with the output estimated from the relayed text when
// no final count came. The request is not tokenized for a free call.
func (sb *streamBody) deliveredUsage() (usage, bool) {
	u := sb.u
	if u.seen && sb.outFinal {
		return u, false
	}
	if sb.delivered == 0 {
		return u, false
	}
	u.Output = max(u.Output, streamedTokens(encodingFor(sb.c.model), sb.text, sb.delivered))
	return u, true
}

// end handles the end of the upstream body (EOF or error).
func (sb *streamBody) end(err error) {
	switch {
	case sb.finished:
	case sb.orphan:
		// The client left first: charged what the provider reported, or
		// the estimate, as had the upstream been closed then.
		if !sb.terminal {
			_ = sb.src.CloseWithError(errStreamBroken) // never pooled, as in failed
		}
		sb.settle(true)
		sb.finished = true
	case sb.aborted.Load():
		sb.settle(true)
		sb.finished = true
	case sb.terminal:
		sb.settle(false)
		sb.finished = true
	case errors.Is(err, errStreamTimeout) || sb.expired.Load():
		// Our own limit, not an upstream failure: charge what was generated.
		sb.settle(true)
		sb.finished = true
	case sb.oversize:
		// The provider generated an event too large to relay (its usage,
		// when found in it, is the charge): the call is charged, not released.
		sb.settle(false)
		sb.finished = true
	case sb.afterStall():
		sb.stallCut() // the provider gave up on a stream the client had stopped draining
	default:
		reason := "upstream_stream_cut"
		if isTimeout(err) || sb.idleFired.Load() {
			reason = "upstream_idle_timeout"
		}
		sb.failed(reason)
	}
}

const msgCutAfterStall = "The provider ended the stream while the client was not reading it; the call was charged for what was generated."

// abort cuts the stream at shutdown: the blocked upstream read returns, and
// the call is settled for what was generated.
func (sb *streamBody) abort() {
	if sb.aborted.Swap(true) {
		return // cut once: Shutdown aborts every open stream each tick
	}
	if sb.src != nil {
		_ = sb.src.CloseWithError(errAborted)
	}
}

// CloseWithError is called by fasthttp once the body is written or the
// client has gone. A stream the client left is settled for what the provider
// generated until now; closing the upstream connection stops the generation.
// But when that estimate would be no measure of the call (inputUnsized), the
// upstream is read on in the background for the provider's usage (orphan.go),
// and what the stream holds is released when that read ends. Either way it
// is released once.
func (sb *streamBody) CloseWithError(err error) error {
	sb.closeOnce.Do(func() {
		if !sb.finished && sb.canOrphan() {
			sb.left = "client_disconnected"
			if isTimeout(err) {
				sb.left = "client_stalled" // a write waited StreamIdle for the client (bound)
			}
			sb.orphan = true
			go sb.readOrphan() // orphan.go: then release
			return
		}
		if sb.idle != nil {
			sb.idle.Stop()
		}
		if !sb.finished {
			if sb.src != nil {
				_ = sb.src.CloseWithError(errors.New("client gone"))
			}
			if isTimeout(err) {
				sb.reason = "client_stalled" // a write waited StreamIdle for the client (bound)
			}
			sb.settle(true)
			sb.finished = true
		}
		sb.release()
	})
	return nil
}

// release gives back what the stream holds, once it is settled and read no
// more: its timer, the upstream response and reader, its place among the
// open streams, the call in flight.
func (sb *streamBody) release() {
	if sb.idle != nil {
		sb.idle.Stop()
	}
	s := sb.c.s
	sb.c.finish(fasthttp.StatusOK) // observe.go: the stream's metrics and log line
	s.streams.Delete(sb)
	_ = sb.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(sb.resp)
	sb.br.Reset(nil)
	readerPool.Put(sb.br)
	s.inflight.Done()
	s.active.Add(-1)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
