package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
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
	idle      *time.Timer // cuts the upstream when no event arrives within StreamIdle
	closeOnce sync.Once
	charge    metering.Charge
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
	h := &ctx.Response.Header
	var nb [24]byte
	h.SetBytesV(hdrBalance, pricing.AppendCredits(nb[:0], c.hold.Available))
	h.SetContentType("text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	_ = h.AddTrailer(hdrCharged)
	_ = h.AddTrailer(hdrBalanceAfter)
	c.s.streams.Store(sb, struct{}{})
	if d := c.s.opts.Timeouts.StreamIdle; d > 0 && sb.src != nil {
		// Silence is measured between events, not reads: an upstream that
		// trickles a byte a second never completes one.
		sb.idle = time.AfterFunc(d, func() {
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
	for sb.off == len(sb.out) {
		if sb.finished {
			return 0, io.EOF
		}
		sb.out, sb.off = sb.out[:0], 0
		if sb.idle != nil && len(sb.ev) == 0 {
			// The upstream's turn: its silence is measured from here to the
			// end of the next event, never while the client is slow to read.
			sb.idle.Reset(sb.c.s.opts.Timeouts.StreamIdle)
		}
		sb.pump()
	}
	n := copy(p, sb.out[sb.off:])
	sb.off += n
	return n, nil
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
		if len(sb.ev) > 0 && errors.Is(err, io.EOF) {
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
		if len(sb.ev) > 0 {
			sb.dispatch()
		}
		return
	}
	if len(sb.ev)+len(line) > sb.maxLine {
		sb.end(errLineTooLong) // an event without end: bounded like a line
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

// readLine returns the next line without its end of line, bounded by
// maxLine. A last line without a newline is returned before the end is reported.
func (sb *streamBody) readLine() ([]byte, error) {
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
			if len(sb.line) > sb.maxLine {
				return nil, errLineTooLong
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

var errLineTooLong = errors.New("proxy: upstream SSE line or event too long")

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// dispatch acts on one complete event: meter it, then pass it on, hold it,
// or drop it.
func (sb *streamBody) dispatch() {
	if sb.idle != nil {
		sb.idle.Stop() // the client's turn
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
	e := sb.c.estimator(sb.up)
	enc := e.enc
	if !u.seen {
		// No input count came: estimated. A final output count that did
		// come (an Anthropic delta after a start without one) is kept.
		out := usage{}
		if sb.outFinal {
			out.Output, out.Reasoning, out.WebSearch = u.Output, u.Reasoning, u.WebSearch
		}
		u = out
		u.Input = requestTokens(e, sb.c.ep.dialect, sb.reqBody) + sb.c.prevContext // a continued response's context too
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
	c := &sb.c
	u, estimated := sb.usageNow()
	rec := c.record(u, true)
	rec.Provider, rec.Estimated, rec.Cancelled = sb.up.name, estimated, cancelled
	rec.TTFT = max(sb.firstByte, 0)
	if cancelled {
		rec.Reason = "client_disconnected"
		if sb.aborted.Load() {
			rec.Reason = "gateway_shutdown"
		} else if time.Now().After(sb.deadline) {
			rec.Reason = "stream_timeout"
		}
	}
	ch, ok := c.settle(c.model.Cost(u.Usage, c.start), rec)
	if sb.storedID != "" {
		c.s.recordResponse(c.ident.Account, sb.storedID, "", contextTokens(u)) // responses.go
	}
	if !ok {
		return // logged; the trailers stay empty
	}
	sb.charge, sb.charged = ch, true
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
	case sb.aborted.Load():
		sb.settle(true)
		sb.finished = true
	case sb.terminal:
		sb.settle(false)
		sb.finished = true
	case errors.Is(err, errStreamTimeout):
		// Our own limit, not an upstream failure: charge what was generated.
		sb.settle(true)
		sb.finished = true
	default:
		reason := "upstream_stream_cut"
		if isTimeout(err) || sb.idleFired.Load() {
			reason = "upstream_idle_timeout"
		}
		sb.failed(reason)
	}
}

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
func (sb *streamBody) CloseWithError(err error) error {
	sb.closeOnce.Do(func() {
		if sb.idle != nil {
			sb.idle.Stop()
		}
		if !sb.finished {
			if sb.src != nil {
				_ = sb.src.CloseWithError(errors.New("client gone"))
			}
			sb.settle(true)
			sb.finished = true
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
	})
	return nil
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
