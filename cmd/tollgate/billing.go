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
	"github.com/tollgate/tollgate/metering"
)

func runBilling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("billing", stderr)
	var f commonFlags
	f.register(fs, "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := load(f.config, stderr)
	if err != nil {
		return err
	}
	defer l.log.Sync() //nolint:errcheck
	if f.addr != "" {
		l.cfg.Billing.Addr = f.addr
	}
	store, err := newStore(l.cfg)
	if store == nil {
		return err
	}
	if err != nil {
		l.log.Warn("starting without Redis; requests get 503 until it answers", zap.Error(err))
	}
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
