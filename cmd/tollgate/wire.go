package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/limits"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// common flags of the serving subcommands.
type commonFlags struct {
	config  string
	addr    string
	metrics string
}

func (f *commonFlags) register(fs *flag.FlagSet, addrHelp string) {
	fs.StringVar(&f.config, "config", envOr("TOLLGATE_CONFIG", "configs/tollgate.yaml"), "configuration file")
	fs.StringVar(&f.addr, "addr", "", addrHelp+" (overrides the config)")
	fs.StringVar(&f.metrics, "metrics-addr", "", metricsFlagHelp) // telemetry.go
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, name, stderr)
	return fs
}

// startup parses a serving subcommand's flags, loads the configuration
// (with --addr applied through setAddr) and connects the store. Redis that
// does not answer yet is not fatal: requests get 503 until it does.
func startup(name string, args []string, stderr io.Writer, setAddr func(*config.Config, string)) (*loaded, *metering.Store, error) {
	fs := newFlagSet(name, stderr)
	var f commonFlags
	f.register(fs, "listen address")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	l, err := load(f.config, stderr)
	if err != nil {
		return nil, nil, err
	}
	if f.addr != "" {
		setAddr(l.cfg, f.addr)
		l.override = func(c *config.Config) { setAddr(c, f.addr) }
	}
	setMetricsAddr(l.cfg, name, f.metrics)
	store, err := newStore(l.cfg)
	if store == nil {
		return nil, nil, err
	}
	if err != nil {
		l.log.Warn("starting without Redis; requests get 503 until it answers", zap.Error(err))
	} else {
		warnDurability(l.log, store)
	}
	armEpoch(l, store)
	warnBelowCost(l.log, l.catalog, time.Now())
	return l, store, nil
}

// warnBelowCost says, once per start or reload, which models charge less
// than their providers' list prices (a tier's rates against the model's
// price_book at credits_per_usd): each such call loses the reseller money.
// One line for the catalog, each model with the kinds it loses on.
func warnBelowCost(log *zap.Logger, c *pricing.Catalog, now time.Time) {
	var below []string
	for _, m := range c.Models() {
		ss := m.BelowCost(now)
		if len(ss) == 0 {
			continue
		}
		kinds := make([]string, 0, len(ss))
		for _, s := range ss {
			kinds = append(kinds, fmt.Sprintf("%s %s<%s", s.Kind, s.Rate, s.Cost))
		}
		below = append(below, m.ID+": "+strings.Join(kinds, ", "))
	}
	if len(below) > 0 {
		log.Warn("models priced below their providers' list prices (credits per 1K, the tier's < the price book's at credits_per_usd): "+
			"every call of theirs costs more than it earns; raise the tiers' rates or use pricing.mode: passthrough",
			zap.Strings("below_cost", below))
	}
}

// loaded is a configuration with what every subcommand builds from it.
type loaded struct {
	cfg     *config.Config
	catalog *pricing.Catalog
	log     *zap.Logger
	level   zap.AtomicLevel // log.level, which a reload changes
	path    string          // the configuration file (reload.go reads it again)
	// override applies the command line's settings (--addr) to a configuration read.
	override func(*config.Config)
}

func load(path string, stderr io.Writer) (*loaded, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	catalog, err := pricing.New(cfg.Pricing)
	if err != nil {
		return nil, err
	}
	level := zap.NewAtomicLevel()
	log, err := newLoggerAt(cfg.Log, stderr, level)
	if err != nil {
		return nil, err
	}
	routeLibraryLogs(log) // telemetry.go
	return &loaded{cfg: cfg, catalog: catalog, log: log, level: level, path: path}, nil
}

// newLoggerAt builds the logger with level set from c.Level; a reload
// changes the level through it.
func newLoggerAt(c config.Log, w io.Writer, level zap.AtomicLevel) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	level.SetLevel(lvl)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)), nil
}

// redisClient builds the store's client: Cluster or Sentinel from an address
// list, standalone from a URL. Every command is bounded by the client's
// timeouts (proxy.redis_timeout), so hot-path calls need no per-call context.
func redisClient(c config.Redis, timeout time.Duration) (redis.UniversalClient, error) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	if len(c.Addrs) > 0 {
		return redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: c.Addrs, MasterName: c.MasterName, Username: c.Username, Password: c.Password,
			PoolSize: c.PoolSize, DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
			IsClusterMode: c.MasterName == "" && len(c.Addrs) > 1,
			MaxRetries:    2, MinRetryBackoff: 8 * time.Millisecond, MaxRetryBackoff: 64 * time.Millisecond,
		}), nil
	}
	if c.URL == "" {
		return nil, errors.New("redis.url (REDIS_URL) or redis.addrs is required")
	}
	opt, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	if c.PoolSize > 0 {
		opt.PoolSize = c.PoolSize
	} else if opt.PoolSize == 0 {
		opt.PoolSize = 256
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = timeout, timeout, timeout
	// Fail fast when Redis is down: callers get 503 at once instead of
	// queueing behind retries. Scripts are idempotent, so a retry is safe.
	opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = 2, 8*time.Millisecond, 64*time.Millisecond
	opt.DialerRetries, opt.DialerRetryTimeout = 1, 10*time.Millisecond
	return redis.NewClient(opt), nil
}

func newStore(cfg *config.Config) (*metering.Store, error) {
	rdb, err := redisClient(cfg.Redis, cfg.Proxy.RedisTimeout.D())
	if err != nil {
		return nil, err
	}
	st := metering.New(rdb, metering.Options{HoldTTL: cfg.Proxy.HoldTTL.D()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := st.LoadScripts(ctx); err != nil {
		// Not fatal: the proxy answers 503 until Redis is back, and scripts
		// fall back to EVAL.
		return st, fmt.Errorf("redis not reachable yet: %w", err)
	}
	return st, nil
}

// proxyOptions maps configuration onto proxy.Options. The proxy meters
// through a credit Leaser over st (every call held in Redis one by one when
// proxy.credit_lease is false; settles are retried either way); the returned
// stop gives its leases back and must run after the proxy has drained.
func proxyOptions(l *loaded, st *metering.Store) (proxy.Options, func(context.Context) error) {
	c := l.cfg
	log := l.log.Named("lease")
	lr := lease.New(st, lease.Options{
		IdleReturn: c.Proxy.LeaseIdleReturn.D(), Offline: c.Proxy.LeaseOffline.D(), PerCall: !c.Proxy.Leasing(),
		OnError: func(account string, err error) {
			log.Warn("settled calls not applied yet; retrying", zap.String("account", account), zap.Error(err))
		},
	})
	meter, stop := lr, lr.Close
	live := proxyLive(c, l.catalog, st)
	opts := proxy.Options{
		Catalog: live.Catalog, Providers: live.Providers, Limiter: live.Limiter, Meter: meter, Logger: l.log,
		MaxBodyBytes: c.Proxy.MaxBodyBytes,
		Timeouts: proxy.Timeouts{
			Connect: c.Proxy.ConnectTimeout.D(), FirstByte: c.Proxy.FirstByteTimeout.D(), Request: c.Proxy.RequestTimeout.D(),
			StreamIdle: c.Proxy.StreamIdleTimeout.D(), Stream: c.Proxy.StreamTimeout.D(),
		},
		ReadTimeout: c.Proxy.ReadTimeout.D(), IdleTimeout: c.Proxy.IdleTimeout.D(),
		MaxConnsPerIP: c.Proxy.MaxConnsPerIP, Concurrency: c.Proxy.Concurrency,
		Breaker: proxy.Breaker{Failures: c.Proxy.Breaker.Failures, CoolDown: c.Proxy.Breaker.CoolDown.D()},
		Retry: proxy.Retry{Attempts: c.Proxy.Retry.Attempts, Backoff: c.Proxy.Retry.Backoff.D(),
			MaxBackoff: c.Proxy.Retry.MaxBackoff.D()},
	}
	log = l.log.Named("recharge")
	opts.OnSettle = metering.NewRechargeQueue(st, metering.RechargeQueueOptions{
		OnError: func(account string, err error) {
			log.Warn("auto-recharge request not queued; the next call retries", zap.String("account", account), zap.Error(err))
		},
	}).OnSettle
	return opts, stop
}

// proxyLive is the part of the proxy's configuration a reload replaces: the
// catalog, the providers and the plan limits (which use the Redis store
// itself).
func proxyLive(c *config.Config, cat *pricing.Catalog, st *metering.Store) proxy.Live {
	live := proxy.Live{Catalog: cat}
	for name, p := range c.Providers {
		pr := proxy.Provider{
			Name: name, Kind: p.Kind, BaseURL: p.BaseURL, NativeBaseURL: p.NativeBaseURL, APIKey: p.APIKey, Headers: p.Headers,
		}
		for _, k := range p.APIKeys {
			pr.APIKeys = append(pr.APIKeys, proxy.APIKey{Key: k.Key, Weight: k.Weight})
		}
		live.Providers = append(live.Providers, pr)
	}
	if len(c.Plans) > 0 {
		live.Limiter = limits.New(st, limits.Options{Plans: c.Plans})
	}
	return live
}

// warnDurability warns at start when Redis may lose money: it evicts keys
// (maxmemory-policy other than noeviction) or keeps nothing on disk.
func warnDurability(log *zap.Logger, st *metering.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := st.Durability(ctx)
	if err != nil {
		log.Warn("could not check Redis persistence and eviction (CONFIG GET refused?): make sure it persists (AOF) and uses maxmemory-policy noeviction", zap.Error(err))
		return
	}
	for _, p := range d.Problems() {
		log.Warn("redis: "+p, zap.String("maxmemory_policy", d.MaxmemoryPolicy), zap.Bool("aof", d.AOF), zap.Bool("rdb", d.RDB))
	}
}
