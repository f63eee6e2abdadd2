package main

import (
	"context"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/pricing"
)

// Live settings: a reload applies these to calls that start afterwards. Every
// other changed setting is reported as needing a restart.
var (
	proxyLivePaths   = []string{"pricing", "providers", "plans", "log.level"}
	billingLivePaths = []string{"pricing", "plans", "log.level", "billing"}
	// billingRestart are billing settings the auto-recharge worker (started
	// once) and the listener keep until a restart.
	billingRestartPaths = []string{"billing.addr", "billing.stripe", "billing.auto_recharge", "billing.webhooks"}
	// Settings a process does not use: a change to them is not reported.
	proxyIgnoredPaths   = []string{"billing"}
	billingIgnoredPaths = []string{"providers"}
)

// reloader re-reads the configuration file on SIGHUP and applies it with
// apply; a file that does not load or validate is refused whole, every
// problem logged, and the configuration in force keeps serving.
type reloader struct {
	l       *loaded
	live    []string
	restart []string
	ignore  []string
	apply   func(cfg *config.Config, cat *pricing.Catalog) error

	mu      sync.Mutex
	running *config.Config // what the process runs with (restart-only settings as started)
	reloads atomic.Int64
}

// newReloader returns a reloader of l's file (live: the YAML paths apply can
// take; restart: paths under them it cannot).
func newReloader(l *loaded, live, restart, ignore []string, apply func(*config.Config, *pricing.Catalog) error) *reloader {
	return &reloader{l: l, live: live, restart: restart, ignore: ignore, apply: apply, running: l.cfg}
}

// watch reloads on every SIGHUP until ctx is done.
func (r *reloader) watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = r.reload()
			}
		}
	}()
}

// reload reads, validates and applies the file once.
func (r *reloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.l.log.Named("reload")
	cfg, err := config.Load(r.l.path)
	var cat *pricing.Catalog
	if err == nil {
		if r.l.override != nil {
			r.l.override(cfg)
		}
		cat, err = pricing.New(cfg.Pricing)
	}
	if err == nil {
		err = r.apply(cfg, cat)
	}
	if err != nil {
		log.Error("configuration refused; the previous one keeps serving", zap.String("file", r.l.path), zap.Strings("problems", problems(err)))
		return err
	}
	if lvl, err := zapcore.ParseLevel(cfg.Log.Level); err == nil {
		r.l.level.SetLevel(lvl)
	}
	var applied, restart []string
	next := *r.running
	for _, p := range config.Changed(r.running, cfg) {
		if under(p, r.ignore) {
			continue
		}
		if under(p, r.live) && !under(p, r.restart) {
			applied = append(applied, p)
		} else {
			restart = append(restart, p)
		}
	}
	// What is live is now the file's; the rest stays as started.
	next.Pricing, next.Providers, next.Plans, next.Log.Level = cfg.Pricing, cfg.Providers, cfg.Plans, cfg.Log.Level
	if under("billing", r.live) {
		next.Billing = cfg.Billing
		next.Billing.Addr, next.Billing.Stripe, next.Billing.AutoRecharge = r.running.Billing.Addr, r.running.Billing.Stripe, r.running.Billing.AutoRecharge
	}
	r.running = &next
	r.l.catalog = cat
	r.reloads.Add(1)
	warnBelowCost(log, cat, time.Now())
	log.Info("configuration reloaded", zap.String("file", r.l.path), zap.Strings("applied", applied))
	if len(restart) > 0 {
		log.Warn("changed settings need a restart to apply; the running values stay", zap.Strings("restart_needed", restart))
	}
	return nil
}

func under(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		if config.Under(p, pre) {
			return true
		}
	}
	return false
}

// problems splits a (joined) error into its lines: one problem each.
func problems(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// swapHandler is an http.Handler replaced whole by a reload: a request runs
// on the handler current when it started.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func newSwapHandler(h http.Handler) *swapHandler {
	s := &swapHandler{}
	s.h.Store(&h)
	return s
}

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

func (s *swapHandler) swap(h http.Handler) { s.h.Store(&h) }
