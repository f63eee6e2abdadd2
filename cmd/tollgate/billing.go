package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/webhooks"
)

func runBilling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	l, store, err := startup("billing", args, stderr, func(c *config.Config, addr string) { c.Billing.Addr = addr })
	if err != nil {
		return err
	}
	defer l.log.Sync()                                                  //nolint:errcheck
	m, err := startMetrics(l, l.cfg.Metrics.BillingAddr, store, stdout) // telemetry.go
	if err != nil {
		return err
	}
	defer m.Close()
	ln, err := net.Listen("tcp", l.cfg.Billing.Addr)
	if err != nil {
		return listenError("billing", l.cfg.Billing.Addr, err, "--addr", "")
	}
	srv, opts, err := newBillingServer(l, store, m)
	if err != nil {
		ln.Close()
		return err
	}
	// A reload builds the billing API anew from the file (packs, plans,
	// billing settings) and swaps it in: a request in progress finishes on
	// the one it started on.
	h := newSwapHandler(srv.Handler)
	srv.Handler = h
	newReloader(l, billingLivePaths, billingRestartPaths, billingIgnoredPaths, func(c *config.Config, cat *pricing.Catalog) error {
		// The same store (the durable books' when they are on), books status
		// and metrics hooks: only what the file says changes.
		o := opts
		o.Config, o.Catalog, o.Plans = c.Billing, cat, c.Plans
		b, err := billing.New(o)
		if err != nil {
			return err
		}
		h.swap(b.Handler())
		return nil
	}).watch(ctx)
	fmt.Fprintf(stdout, "tollgate billing listening on http://%s\n", ln.Addr())
	return serveHTTP(ctx, l, srv, ln)
}

// newBillingServer builds the billing HTTP server and returns it with the
// options it was built from (a reload builds the API anew from them).
func newBillingServer(l *loaded, store *metering.Store, m *metrics) (*http.Server, billing.Options, error) {
	if l.cfg.Billing.AdminToken == "" {
		l.log.Warn("TOLLGATE_ADMIN_TOKEN is not set: the admin API is off")
	}
	bstore, booksStatus, stopBooks := startBooks(l, store, m.books())
	opts := billing.Options{Config: l.cfg.Billing, Catalog: l.catalog, Store: bstore, Logger: l.log, Plans: l.cfg.Plans, Books: booksStatus}
	m.instrumentBilling(&opts)
	b, err := billing.New(opts)
	if err != nil {
		stopBooks()
		return nil, opts, err
	}
	srv := &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(l.log.Named("http")),
	}
	// The shipper and the scheduled reconcile stop with the server.
	srv.RegisterOnShutdown(stopBooks)
	// The auto-recharge worker lives as long as the server: it starts now and
	// stops when the server shuts down (a request it was working on stays
	// pending in Redis and is taken over by the next worker).
	if w := b.RechargeWorker(billing.WorkerOptions{}); w != nil {
		ctx, stop := context.WithCancel(context.Background())
		go w.Run(ctx) //nolint:errcheck // Run returns nil when stopped
		srv.RegisterOnShutdown(stop)
	} else {
		l.log.Warn("STRIPE_SECRET_KEY is not set: auto-recharge requests wait until payments are configured")
	}
	// Outgoing events: moved from the accounts' outboxes, scheduled and
	// delivered to billing.webhooks for as long as the server lives (events
	// queue in Redis meanwhile: none is lost across a restart).
	wctx, stopHooks := context.WithCancel(context.Background())
	go webhooks.New(webhooks.Options{Queue: store, Endpoints: l.cfg.Billing.Webhooks, Logger: l.log}).Run(wctx) //nolint:errcheck // returns nil when stopped
	srv.RegisterOnShutdown(stopHooks)
	// Promotional grants expire as they fall due, as long as the server lives.
	pctx, stopPromo := context.WithCancel(context.Background())
	go b.RunPromoSweeper(pctx, 0)
	srv.RegisterOnShutdown(stopPromo)
	return srv, opts, nil
}

// serveHTTP serves an http.Server until ctx is done, then shuts it down.
func serveHTTP(ctx context.Context, l *loaded, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), l.cfg.Proxy.DrainTimeout.D())
	defer cancel()
	return srv.Shutdown(sctx)
}
