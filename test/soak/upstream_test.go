package soak

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/internal/mockllm"
)

// mockUpstream is the deterministic mock provider, served in this process on
// a loopback port, with a record of which calls reached it: every request body
// carries its call's tag ("call-<n>"), so that the test knows exactly which
// calls were forwarded and how many times.
type mockUpstream struct {
	mock *mockllm.Server
	srv  *fasthttp.Server
	URL  string // provider base URL, ".../v1"

	mu       sync.Mutex
	seen     map[int64]int // call tag → times forwarded
	untagged int
}

var tagPrefix = []byte("call-")

func startMock(t testing.TB, cfg mockllm.Config) *mockUpstream {
	t.Helper()
	u := &mockUpstream{mock: mockllm.New(cfg), seen: map[int64]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.srv = &fasthttp.Server{
		Handler: u.handle, Name: "mockllm", ReadBufferSize: 16 << 10, MaxRequestBodySize: 64 << 20,
		CloseOnShutdown: true, Logger: quiet{},
	}
	go func() { _ = u.srv.Serve(ln) }()
	u.URL = "http://" + ln.Addr().String() + "/v1"
	t.Cleanup(func() {
		_ = u.mock.Close() // ends hangs and paced streams
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = u.srv.ShutdownWithContext(ctx)
	})
	return u
}

func (u *mockUpstream) handle(ctx *fasthttp.RequestCtx) {
	tag, ok := callTag(ctx.PostBody())
	u.mu.Lock()
	if ok {
		u.seen[tag]++
	} else {
		u.untagged++
	}
	u.mu.Unlock()
	u.mock.Handler(ctx)
}

// callTag finds "call-<n>" in a body.
func callTag(body []byte) (int64, bool) {
	i := bytes.Index(body, tagPrefix)
	if i < 0 {
		return 0, false
	}
	j := i + len(tagPrefix)
	k := j
	for k < len(body) && body[k] >= '0' && body[k] <= '9' {
		k++
	}
	n, err := strconv.ParseInt(string(body[j:k]), 10, 64)
	return n, err == nil
}

// forwarded returns how many times the call tagged n reached the provider.
func (u *mockUpstream) forwarded(n int64) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[n]
}

// snapshot returns a copy of the forwarded counts.
func (u *mockUpstream) snapshot() (map[int64]int, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[int64]int, len(u.seen))
	for k, v := range u.seen {
		m[k] = v
	}
	return m, u.untagged
}

// Requests is the mock's own request counter (every request, tagged or not).
func (u *mockUpstream) Requests() int64 { return u.mock.Requests() }

type quiet struct{}

func (quiet) Printf(string, ...any) {}
