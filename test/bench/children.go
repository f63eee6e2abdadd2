package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/internal/mockllm"
)

// The harness re-executes itself for the mock provider and the bare
// forwarder, so that each runs in its own process: the load generator's
// work never shares a Go runtime with what it measures, and /proc gives each
// process's CPU time and RSS on its own.

// runMock serves the mock provider on addr until ctx is done.
func runMock(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mock", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, url, err := mockllm.StartAt(mockllm.Config{}, *addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "mock listening on", url)
	<-ctx.Done()
	return srv.Close()
}

// runForwarder is the floor: a bare fasthttp reverse proxy that hands each
// request to HostClient.Do and the answer back, nothing else. Streams (a body
// asking for "stream":true) use a client that streams the response body.
// With -redis it is the "bare+redis" reference instead (see below).
func runForwarder(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("forwarder", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream host:port")
	redisAddr := fs.String("redis", "", "also make two Redis round trips (PING) per call, before and after forwarding")
	if err := fs.Parse(args); err != nil {
		return err
	}
	plain := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1 << 16}
	stream := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1 << 16, StreamResponseBody: true}
	handler := func(ctx *fasthttp.RequestCtx) {
		c := plain
		if bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) {
			c = stream
		}
		if err := c.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}
	if *redisAddr != "" {
		// The floor of any design that reserves before forwarding and
		// settles before answering: the same forwarder plus two round trips
		// to Redis through go-redis, with no script and no metering work.
		rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 256})
		defer rdb.Close()
		// A stream's second round trip (its settle) comes after its last
		// byte, so it is left out there: it would only delay the first.
		forward := handler
		handler = func(ctx *fasthttp.RequestCtx) {
			if err := rdb.Ping(context.Background()).Err(); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
				return
			}
			forward(ctx)
			if ctx.Response.IsBodyStream() {
				return
			}
			if err := rdb.Ping(context.Background()).Err(); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
			}
		}
	}
	srv := &fasthttp.Server{Handler: handler}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "forwarder listening on", ln.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(sctx)
	}()
	return srv.Serve(ln)
}
