package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
)

func runBilling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	l, store, err := startup("billing", args, stderr, func(c *config.Config, addr string) { c.Billing.Addr = addr })
	if err != nil {
		return err
	}
	defer l.log.Sync() //nolint:errcheck
	ln, err := net.Listen("tcp", l.cfg.Billing.Addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv, err := newBillingServer(l, store)
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(stdout, "tollgate billing listening on http://%s\n", ln.Addr())
	return serveHTTP(ctx, l, srv, ln)
}

func newBillingServer(l *loaded, store *metering.Store) (*http.Server, error) {
	if l.cfg.Billing.AdminToken == "" {
		l.log.Warn("TOLLGATE_ADMIN_TOKEN is not set: the admin API is off")
	}
	b, err := billing.New(billing.Options{Config: l.cfg.Billing, Catalog: l.catalog, Store: store, Logger: l.log})
	if err != nil {
		return nil, err
	}
	return &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}, nil
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
