package soak

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// rawUpstream is a provider written on raw TCP that misbehaves as each
// request's prompt asks: "hang" (never answers), "trickle-headers" (the
// response headers one byte a second), "trickle-stream" (an SSE stream whose
// body arrives one byte a second, never completing an event) and
// "trickle-body" (a JSON answer whose body arrives one byte a second). It
// records when the proxy gave up each connection.
type rawUpstream struct {
	ln  net.Listener
	URL string

	mu     sync.Mutex
	closed map[string]time.Time // mode → when the proxy closed the connection
	conns  []net.Conn
}

func startRawUpstream(t testing.TB) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, URL: "http://" + ln.Addr().String() + "/v1", closed: map[string]time.Time{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, c := range u.conns {
			c.Close()
		}
	})
	return u
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	body, _ := io.ReadAll(req.Body)
	var mode, head string
	switch {
	case strings.Contains(string(body), "trickle-headers"):
		mode, head = "trickle-headers", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Padding: "+strings.Repeat("x", 4000)+"\r\n\r\n"
	case strings.Contains(string(body), "trickle-stream"):
		mode = "trickle-stream"
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100000\r\n\r\n"); err != nil {
			return
		}
		head = `data: {"id":"chatcmpl-trickle","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("z", 2000)
	case strings.Contains(string(body), "trickle-body"):
		mode = "trickle-body"
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"); err != nil {
			return
		}
		head = `{"id":"chatcmpl-trickle","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("z", 2000)
	default:
		mode = "hang"
	}
	defer func() {
		u.mu.Lock()
		u.closed[mode] = time.Now()
		u.mu.Unlock()
	}()
	if mode == "hang" {
		_, _ = io.Copy(io.Discard, c) // until the proxy closes it
		return
	}
	// One byte a second; a write fails once the proxy has closed the
	// connection (the second write after its close, at the latest).
	go func() { _, _ = io.Copy(io.Discard, br) }()
	for i := 0; i < len(head); i++ {
		if _, err := c.Write([]byte{head[i]}); err != nil {
			return
		}
		time.Sleep(time.Second)
	}
}

func (u *rawUpstream) closedAt(mode string) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.closed[mode]
	return t, ok
}

// TestFaultSlowUpstream: an upstream that never answers gets a 504 at the
// configured timeout (first_byte_timeout for streams, request_timeout for
// whole answers), uncharged; an upstream that trickles one byte a second is
// bounded by the same timeouts — before the headers by first_byte_timeout,
// in a stream by stream_idle_timeout (no event completes), in a whole answer
// by request_timeout — never by stream_timeout. Each call is free, its hold
// released, and the proxy closes the upstream connection.
func TestFaultSlowUpstream(t *testing.T) {
	const (
		firstByte = 2 * time.Second
		idle      = 2 * time.Second
		request   = 4 * time.Second
		slack     = 3 * time.Second // scheduling, the race detector, one trickle interval
	)
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	mock := startMock(t, mockllm.Config{})
	raw := startRawUpstream(t)
	cfg := writeConfig(t, map[string]any{
		"proxy.first_byte_timeout": firstByte.String(), "proxy.stream_idle_timeout": idle.String(),
		"proxy.request_timeout": request.String(), "proxy.stream_timeout": "60s", "proxy.hold_ttl": "65s",
	})
	// The mock serves openai; the raw upstream serves deepseek.
	p := startProxy(t, "proxy", cfg, procEnv(mock.URL, "REDIS_URL="+rs.URL(), "DEEPSEEK_BASE_URL="+raw.URL))

	cases := []struct {
		name, model string
		directives  string // for the mock
		stream      bool
		mode        string // the raw upstream's mode ("" = the mock)
		bound       time.Duration
		status      int
		code        string // for non-200 answers
	}{
		{"hang", "gpt-4o-mini", "hang", false, "", request, 504, "upstream_timeout"},
		{"hang stream", "gpt-4o-mini", "hang", true, "", firstByte, 504, "upstream_timeout"},
		{"raw hang stream", "deepseek-chat", "", true, "hang", firstByte, 504, "upstream_timeout"},
		{"trickled headers stream", "deepseek-chat", "", true, "trickle-headers", firstByte, 504, "upstream_timeout"},
		{"trickled stream body", "deepseek-chat", "", true, "trickle-stream", idle, 200, ""},
		{"trickled whole answer", "deepseek-chat", "", false, "trickle-body", request, 504, "upstream_timeout"},
	}
	accts := createAccounts(t, st, "slow", len(cases), func(int) int64 { return 100_000 })
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := accts[i]
			c := &callSpec{tag: int64(i + 1), account: a, base: p.URL, ep: epChat, model: tc.model, stream: tc.stream, maxTokens: 64}
			if tc.mode == "" {
				c.directives = tc.directives
			} else {
				c.promptOverride = fmt.Sprintf("call-%d %s", c.tag, tc.mode)
			}
			r := c.do(client)
			switch {
			case r.err != nil:
				t.Fatalf("after %s: %v (bound %s)", r.elapsed.Round(time.Millisecond), r.err, tc.bound)
			case r.status != tc.status || (tc.code != "" && r.code != tc.code):
				t.Fatalf("status %d %q after %s, want %d %q", r.status, r.code, r.elapsed.Round(time.Millisecond), tc.status, tc.code)
			case tc.status == 200 && (!r.cut || r.terminal):
				t.Fatalf("the trickled stream ended without the error event (cut %v, terminal %v)", r.cut, r.terminal)
			}
			if r.elapsed < tc.bound-100*time.Millisecond || r.elapsed > tc.bound+slack {
				t.Errorf("answered after %s, want about %s (the configured bound)", r.elapsed.Round(time.Millisecond), tc.bound)
			}
			if tc.mode != "" {
				deadline := time.Now().Add(slack)
				for {
					if at, ok := raw.closedAt(tc.mode); ok {
						if d := at.Sub(r.start); d > tc.bound+slack {
							t.Errorf("the upstream connection was closed %s after the call started, want within %s", d.Round(time.Millisecond), tc.bound)
						}
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("the proxy still holds the upstream connection %s after answering", slack)
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			// Free: no debit, the hold released (not left to expire).
			deadline := time.Now().Add(slack)
			for {
				ac, entries, problems := ledgerInvariant(st, a.id)
				if len(problems) == 0 && ac.Balance == a.funded && len(usageByRef(entries)) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("not free: balance %d of %d, reserved %d, %d debits; %v", ac.Balance, a.funded, ac.Reserved, len(usageByRef(entries)), problems)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			g, err := st.Generation(context.Background(), a.id, r.reqID)
			if err != nil || !g.Failed || g.Charged != 0 {
				t.Errorf("cost record %+v, %v: want failed, charged 0", g, err)
			}
		})
	}
	t.Cleanup(func() { p.assertAlive(t) })
}
