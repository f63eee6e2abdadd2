package config

import (
	"net/url"
	"time"
)

// Database configures the durable books (PostgreSQL, package books). Without
// a URL Tollgate keeps no durable books: Redis alone, as before.
type Database struct {
	URL string `yaml:"url"` // postgres://…; DATABASE_URL
	// Migrate applies the schema's migrations when the billing process
	// starts (as `tollgate migrate` does).
	Migrate bool `yaml:"migrate"`
	// MaxConns bounds the connection pool. Default 8.
	MaxConns int32 `yaml:"max_conns"`
}

// Ledger configures the Redis ledger streams.
type Ledger struct {
	// Retention: entries already in the books and older than this are
	// trimmed from Redis. Default 7 days (168h). Only with a database.
	Retention Duration `yaml:"retention"`
	// ReconcileEvery is how often the billing process reconciles the books
	// with Redis (a loud error on any mismatch). Default 15m.
	ReconcileEvery Duration `yaml:"reconcile_every"`
}

// DefaultRetention is ledger.retention's default.
const DefaultRetention = 7 * 24 * time.Hour

func (c *Config) setBooksDefaults() {
	if c.Ledger.Retention == 0 {
		c.Ledger.Retention = Duration(DefaultRetention)
	}
	if c.Ledger.ReconcileEvery == 0 {
		c.Ledger.ReconcileEvery = Duration(15 * time.Minute)
	}
	if c.Database.MaxConns == 0 {
		c.Database.MaxConns = 8
	}
}

func (c *Config) validateBooks(bad func(path, format string, args ...any)) {
	if u := c.Database.URL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
			bad("database.url", "must be a postgres:// URL")
		}
	}
	if c.Ledger.Retention.D() < time.Minute {
		bad("ledger.retention", "must be at least 1m, got %s", c.Ledger.Retention.D())
	}
	if c.Database.MaxConns < 1 {
		bad("database.max_conns", "must be at least 1, got %d", c.Database.MaxConns)
	}
}
