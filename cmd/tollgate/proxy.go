package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/proxy"
)

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	l, store, err := startup("proxy", args, stderr, func(c *config.Config, addr string) { c.Proxy.Addr = addr })
	if err != nil {
		return err
	}
	defer l.log.Sync() //nolint:errcheck
	srv, err := proxy.New(proxyOptions(l, store))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", l.cfg.Proxy.Addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	l.log.Info("proxy listening", zap.String("addr", ln.Addr().String()))
	fmt.Fprintf(stdout, "tollgate proxy listening on http://%s\n", ln.Addr())
	return serveUntil(ctx, l, srv, ln)
}

// serveUntil serves until ctx is done, then drains within the configured timeout.
func serveUntil(ctx context.Context, l *loaded, srv *proxy.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	l.log.Info("draining", zap.Duration("timeout", l.cfg.Proxy.DrainTimeout.D()))
	dctx, cancel := context.WithTimeout(context.Background(), l.cfg.Proxy.DrainTimeout.D())
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	l.log.Info("stopped")
	return nil
}

var _ proxy.Meter = (*metering.Store)(nil)
