package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	l, store, err := startup("proxy", args, stderr, func(c *config.Config, addr string) { c.Proxy.Addr = addr })
	if err != nil {
		return err
	}
	defer l.log.Sync() //nolint:errcheck
	// Metrics (telemetry.go) on their own address, never the public one.
	m, err := startMetrics(l, l.cfg.Metrics.Addr, store, stdout)
	if err != nil {
		return err
	}
	defer m.Close()
	opts, stopMeter := proxyOptions(l, store)
	m.instrumentProxy(l, &opts)
	srv, err := proxy.New(opts)
	if err != nil {
		return err
	}
	newReloader(l, proxyLivePaths, nil, proxyIgnoredPaths, func(c *config.Config, cat *pricing.Catalog) error {
		return srv.Reload(proxyLive(c, cat, store))
	}).watch(ctx)
	ln, err := net.Listen("tcp", l.cfg.Proxy.Addr)
	if err != nil {
		return listenError("proxy", l.cfg.Proxy.Addr, err, "--addr", "")
	}
	l.log.Info("proxy listening", zap.String("addr", ln.Addr().String()))
	fmt.Fprintf(stdout, "tollgate proxy listening on http://%s\n", ln.Addr())
	return serveUntil(ctx, l, srv, ln, stopMeter)
}

// finalApplyTimeout bounds the final apply of charges at exit. With the
// default proxy.drain_timeout (20s) the whole stop fits in Kubernetes'
// default 30 s grace period with room for a preStop pause.
const finalApplyTimeout = 5 * time.Second

// serveUntil serves until ctx is done, then drains within the configured
// timeout, then stops the meter (applying what it still holds) — also when
// serving failed.
func serveUntil(ctx context.Context, l *loaded, srv *proxy.Server, ln net.Listener, stopMeter func(context.Context) error) error {
	defer func() {
		// Settled calls still queued are applied even when draining used
		// the whole timeout: a few more seconds, not charges lost.
		mctx, cancel := context.WithTimeout(context.Background(), finalApplyTimeout)
		defer cancel()
		if err := stopMeter(mctx); err != nil {
			l.log.Error("settled calls left unapplied at exit", zap.Error(err))
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Draining: the listener stays open so that /readyz answers 503 (the
	// load balancer takes this replica out) and new calls are refused with
	// 503 while the calls in flight finish; then the listener closes, and
	// streams still open at drain_timeout are cut and charged for what they
	// generated. The final apply of charges (stopMeter) follows.
	l.log.Info("draining", zap.Duration("timeout", l.cfg.Proxy.DrainTimeout.D()), zap.Int64("in_flight", srv.InFlight()))
	dctx, cancel := context.WithTimeout(context.Background(), l.cfg.Proxy.DrainTimeout.D())
	defer cancel()
	if err := srv.Drain(dctx); err != nil {
		l.log.Warn("drain timeout: cutting the calls still in flight", zap.Int64("in_flight", srv.InFlight()))
	}
	if err := srv.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	l.log.Info("stopped")
	return nil
}

var _ proxy.Meter = (*lease.Leaser)(nil)
