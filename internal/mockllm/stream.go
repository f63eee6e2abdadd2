package mockllm

import (
	"bytes"
	"errors"
	"io"
	"time"
)

var (
	// errCut ends a response on purpose (cut directive); fasthttp then drops
	// the connection without the terminating chunk.
	errCut = errors.New("mockllm: connection cut by directive")
	// errClosing ends a response because the server is closing.
	errClosing = errors.New("mockllm: server closing")
)

// streamer is the body stream of an SSE response. It implements
// fasthttp.BodyWriterTo: fasthttp calls WriteTo on its connection goroutine
// with a writer that turns every Write into one HTTP chunk and flushes it to
// the socket. So each event is on the wire before the next one is produced,
// no goroutine or pipe is involved, and returning an error (cut) drops the
// connection without the final chunk.
type streamer struct {
	s        *Server
	k        kind
	n        int64
	model    []byte // copy of the raw JSON model string
	u        usage
	include  bool // stream_options.include_usage
	cut      int  // -1 = none
	ttft     time.Duration
	interval time.Duration
	timer    *time.Timer
	buf      *[]byte
	consumed bool

	// Read fallback (only used if someone reads instead of WriteTo).
	generated bool
	rbuf      []byte
	rerr      error
}

func newStreamer(s *Server, k kind, n int64, req *request, d *directives, u usage) *streamer {
	st := &streamer{
		s:        s,
		k:        k,
		n:        n,
		model:    append([]byte(nil), req.model...),
		u:        u,
		include:  req.includeUsage,
		cut:      d.cut,
		ttft:     s.cfg.TTFT,
		interval: s.interval,
		buf:      getBuf(),
	}
	if d.ttft >= 0 {
		st.ttft = d.ttft
	}
	if d.rate == 0 {
		st.interval = 0
	} else if d.rate > 0 {
		st.interval = time.Second / time.Duration(d.rate)
	}
	return st
}

// SupportsBodyWriteTo tells fasthttp to call WriteTo instead of Read.
func (st *streamer) SupportsBodyWriteTo() bool { return true }

// WriteTo writes the whole event stream to w, one Write per event.
func (st *streamer) WriteTo(w io.Writer) (int64, error) {
	if st.consumed || st.buf == nil {
		return 0, errors.New("mockllm: stream already consumed")
	}
	st.consumed = true
	var written int64
	emit := func(b []byte) error {
		nw, err := w.Write(b)
		written += int64(nw)
		*st.buf = b[:0]
		return err
	}
	err := st.run(emit)
	if st.timer != nil {
		st.timer.Stop()
	}
	return written, err
}

func (st *streamer) run(emit func([]byte) error) error {
	if !st.wait(st.ttft) {
		return errClosing
	}
	u := &st.u
	usageNull := st.include && st.k == kindChat && !u.noUsage
	seq := 0
	b := (*st.buf)[:0]

	// Opening events.
	switch st.k {
	case kindChat:
		if err := emit(appendChatChunk(b, st.n, st.model, u, chunkRole, 0, usageNull)); err != nil {
			return err
		}
	case kindResponses:
		for step := respCreated; step <= respPartAdded; step++ {
			if err := emit(appendRespEvent((*st.buf)[:0], st.n, st.model, u, step, seq)); err != nil {
				return err
			}
			seq++
		}
	case kindMessages:
		for step := msgStart; step <= msgBlockStart; step++ {
			if err := emit(appendMessageEvent((*st.buf)[:0], st.n, st.model, u, step)); err != nil {
				return err
			}
		}
	}

	// One event per token.
	for i := 1; i <= u.completion; i++ {
		if st.cut >= 0 && i > st.cut {
			return errCut
		}
		if i > 1 && !st.wait(st.interval) {
			return errClosing
		}
		b = (*st.buf)[:0]
		switch st.k {
		case kindChat:
			b = appendChatChunk(b, st.n, st.model, u, chunkToken, i, usageNull)
		case kindCompletions:
			b = appendCompletionChunk(b, st.n, st.model, u, chunkToken, i, usageNull)
		case kindResponses:
			b = appendRespDelta(b, st.n, u, i, seq)
			seq++
		case kindMessages:
			b = appendMessageDelta(b, u, i)
		}
		if err := emit(b); err != nil {
			return err
		}
	}
	if st.cut >= 0 {
		return errCut
	}

	// Closing events.
	switch st.k {
	case kindChat, kindCompletions:
		appendChunk := appendChatChunk
		if st.k == kindCompletions {
			appendChunk = appendCompletionChunk
		}
		if u.completion == 0 {
			if err := emit(appendChunk((*st.buf)[:0], st.n, st.model, u, chunkFinish, 0, usageNull)); err != nil {
				return err
			}
		}
		if st.include && !u.noUsage {
			if err := emit(appendChunk((*st.buf)[:0], st.n, st.model, u, chunkUsage, 0, false)); err != nil {
				return err
			}
		}
		return emit(append((*st.buf)[:0], "data: [DONE]\n\n"...))
	case kindResponses:
		for step := respTextDone; step <= respCompleted; step++ {
			if err := emit(appendRespEvent((*st.buf)[:0], st.n, st.model, u, step, seq)); err != nil {
				return err
			}
			seq++
		}
	case kindMessages:
		for step := msgBlockStop; step <= msgStop; step++ {
			if err := emit(appendMessageEvent((*st.buf)[:0], st.n, st.model, u, step)); err != nil {
				return err
			}
		}
	}
	return nil
}

// wait sleeps d on the streamer's reusable timer; false if the server closed.
func (st *streamer) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	if st.timer == nil {
		st.timer = time.NewTimer(d)
	} else {
		st.timer.Reset(d)
	}
	select {
	case <-st.timer.C:
		return true
	case <-st.s.closing:
		return false
	}
}

// Read is a fallback for consumers that do not use WriteTo (fasthttp does):
// it renders the whole stream into memory first.
func (st *streamer) Read(p []byte) (int, error) {
	if !st.generated {
		st.generated = true
		var bb bytes.Buffer
		_, st.rerr = st.WriteTo(&bb)
		st.rbuf = bb.Bytes()
	}
	if len(st.rbuf) == 0 {
		if st.rerr != nil {
			return 0, st.rerr
		}
		return 0, io.EOF
	}
	n := copy(p, st.rbuf)
	st.rbuf = st.rbuf[n:]
	return n, nil
}

// Close returns the event buffer to the pool; fasthttp calls it once the
// response is written.
func (st *streamer) Close() error {
	if st.buf != nil {
		putBuf(st.buf)
		st.buf = nil
	}
	return nil
}

// cutBody is a fixed-length body of which only the first half is sent
// before the connection is dropped (cut directive on a non-stream request).
type cutBody struct {
	body []byte
	done bool
}

func (c *cutBody) SupportsBodyWriteTo() bool { return true }

func (c *cutBody) WriteTo(w io.Writer) (int64, error) {
	if c.done {
		return 0, errCut
	}
	c.done = true
	n, err := w.Write(c.body[:len(c.body)/2])
	if err != nil {
		return int64(n), err
	}
	if f, ok := w.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return int64(n), err
		}
	}
	return int64(n), errCut
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.done {
		return 0, errCut
	}
	c.done = true
	return copy(p, c.body[:len(c.body)/2]), nil
}
