package main

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/telemetry"
)

// metricsFlagHelp is --metrics-addr's help.
const metricsFlagHelp = "Prometheus /metrics listen address, or off (overrides metrics.addr; billing: metrics.billing_addr)"

// setMetricsAddr applies --metrics-addr to the configuration of subcommand
// name: billing has its own address, proxy and dev share metrics.addr.
func setMetricsAddr(c *config.Config, name, addr string) {
	if addr == "" {
		return
	}
	if name == "billing" {
		c.Metrics.BillingAddr = addr
		return
	}
	c.Metrics.Addr = addr
}

// metrics is a process's registry and its /metrics server; the zero value
// (metrics off) does nothing.
type metrics struct {
	reg *telemetry.Registry
	srv *telemetry.Server
}

// startMetrics binds addr and serves a new registry on it, counting store's
// failed Redis commands. addr "off" turns metrics off. A taken address is an
// error: several replicas on one host each need their own.
func startMetrics(l *loaded, addr string, store *metering.Store, stdout io.Writer) (*metrics, error) {
	if addr == telemetry.Off {
		l.log.Info("metrics off")
		return &metrics{}, nil
	}
	reg := telemetry.New()
	srv, err := reg.Listen(addr, l.log)
	if err != nil {
		return nil, err
	}
	if store != nil {
		store.Client().AddHook(reg.StoreHook())
	}
	go func() {
		if err := srv.Serve(); err != nil {
			l.log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	l.log.Info("metrics listening", zap.String("addr", srv.Addr().String()))
	fmt.Fprintf(stdout, "tollgate metrics on http://%s/metrics\n", srv.Addr())
	return &metrics{reg: reg, srv: srv}, nil
}

// Close stops the metrics server.
func (m *metrics) Close() {
	if m != nil && m.srv != nil {
		_ = m.srv.Close()
	}
}

// instrumentProxy adds the proxy's families to m and wires them into opts,
// with the call log mode.
func (m *metrics) instrumentProxy(l *loaded, opts *proxy.Options) {
	opts.LogCalls = l.cfg.Log.Calls
	if m == nil || m.reg == nil {
		return
	}
	names := make([]string, 0, len(opts.Providers))
	for _, p := range opts.Providers {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	opts.Observer = m.reg.NewProxy(l.catalog, names)
	if lr, ok := opts.Meter.(*lease.Leaser); ok {
		m.reg.LeaseCredits(lr.Leased)
	}
}

// books registers the durable books' families (nil without metrics).
func (m *metrics) books() *telemetry.Books {
	if m == nil || m.reg == nil {
		return nil
	}
	return m.reg.NewBooks()
}

// instrumentBilling adds billing's families to m and wires them into opts.
func (m *metrics) instrumentBilling(opts *billing.Options) {
	if m == nil || m.reg == nil {
		return
	}
	b := m.reg.NewBilling()
	opts.OnWebhook = b.Webhook
}

// routeLibraryLogs sends what libraries log through log, so that every line
// is JSON when log.format is json: go-redis's own logger and the standard
// library's (net/http servers without an ErrorLog). Both are process-wide.
func routeLibraryLogs(log *zap.Logger) {
	redis.SetLogger(redisLogger{log.Named("redis").WithOptions(zap.AddCallerSkip(2))})
	_ = zap.RedirectStdLog(log.Named("stdlog"))
}

// redisLogger is go-redis's logging interface over zap: its messages are
// about connections and pools going wrong, logged as warnings.
type redisLogger struct{ log *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.log.Warn(fmt.Sprintf(format, v...))
}
