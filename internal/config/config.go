// Package config loads Tollgate's one YAML file into one Config.
//
// Scalars may use ${VAR} and ${VAR:-default}; secrets come from the
// environment that way. Unknown keys are refused. Validate reports every
// problem at once, each with its YAML path, so a bad file is refused at start
// and never half-used. Durations are strings such as "30s".
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate/tollgate/pricing"
)

// Config is the whole configuration of every subcommand.
type Config struct {
	Proxy     Proxy               `yaml:"proxy"`
	Billing   Billing             `yaml:"billing"`
	Redis     Redis               `yaml:"redis"`
	Providers map[string]Provider `yaml:"providers"`
	Pricing   pricing.Spec        `yaml:"pricing"`
	Plans     []Plan              `yaml:"plans"`
	Log       Log                 `yaml:"log"`
	Database  Database            `yaml:"database"` // durable books (books.go)
	Ledger    Ledger              `yaml:"ledger"`
	Metrics   Metrics             `yaml:"metrics"`
}

// Metrics configures the Prometheus /metrics listeners: never the public
// ports. "off" turns one off.
type Metrics struct {
	Addr        string `yaml:"addr"`         // the proxy's (and dev's); default 127.0.0.1:9464
	BillingAddr string `yaml:"billing_addr"` // billing's; default 127.0.0.1:9465
}

// HoldMargin is how much longer than the longest call a hold must live: a
// call ends at its timeout (a stream's last write to a client that stopped
// reading is cut a second after it), and its settle follows. A call whose
// hold expired would be charged at most what is then available.
const HoldMargin = 5 * time.Second

// Proxy configures the metering proxy.
type Proxy struct {
	Addr string `yaml:"addr"` // listen address; default 127.0.0.1:8080
	// MaxBodyBytes refuses larger request bodies with 413. Default 8 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// ConnectTimeout bounds dialing a provider. Default 5s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// FirstByteTimeout bounds the wait for the provider's response headers
	// (504 after it, uncharged). Default 120s.
	FirstByteTimeout Duration `yaml:"first_byte_timeout"`
	// RequestTimeout bounds a whole non-streaming call. Default 600s.
	RequestTimeout Duration `yaml:"request_timeout"`
	// StreamIdleTimeout bounds the silence between two streamed chunks. Default 120s.
	StreamIdleTimeout Duration `yaml:"stream_idle_timeout"`
	// StreamTimeout bounds a whole stream. Default 30m.
	StreamTimeout Duration `yaml:"stream_timeout"`
	// HoldTTL is how long a hold outlives a crashed proxy. It must exceed
	// the longest call (StreamTimeout, RequestTimeout) by HoldMargin: a
	// running call's hold never expires. Default: StreamTimeout + 1m, or
	// RequestTimeout + 1m when that is longer.
	HoldTTL Duration `yaml:"hold_ttl"`
	// ReadTimeout bounds reading a client's request (slow clients). Default 30s.
	ReadTimeout Duration `yaml:"read_timeout"`
	// IdleTimeout closes idle keep-alive client connections. Default 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// DrainTimeout is how long SIGTERM waits for calls in flight (while
	// /readyz answers 503 and new calls are refused); the final apply of
	// charges (at most 5s) follows. Default 20s: both fit in Kubernetes'
	// default 30 s grace period.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// MaxConnsPerIP limits concurrent client connections per address (0 = none).
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// Concurrency caps concurrent requests served. Default 262144.
	Concurrency int `yaml:"concurrency"`
	// RedisTimeout bounds each Redis call on the hot path. Default 2s.
	RedisTimeout Duration `yaml:"redis_timeout"`
	// CreditLease serves calls from per-replica credit leases (no Redis
	// round trip per call; settles applied in batches). false holds and
	// settles every call in Redis before it is forwarded and answered.
	// Default true.
	CreditLease *bool `yaml:"credit_lease"`
	// LeaseIdleReturn gives back a lease unused this long. Default 1s.
	LeaseIdleReturn Duration `yaml:"lease_idle_return"`
	// LeaseOffline is how long a lease still serves calls once Redis stops
	// answering (their charges wait for Redis). Default 2s.
	LeaseOffline Duration `yaml:"lease_offline"`
	// Breaker is each deployment's circuit breaker.
	Breaker Breaker `yaml:"breaker"`
	// Retry resends a call that failed before a provider could start it.
	Retry Retry `yaml:"retry"`
}

// Breaker configures the circuit breaker of each deployment (a provider
// and its model name): after Failures consecutive failed calls (connect
// errors, timeouts, 429, 5xx) the deployment is skipped for CoolDown while
// a fallback deployment exists, then one call probes it.
type Breaker struct {
	Failures int      `yaml:"failures"`  // default 5
	CoolDown Duration `yaml:"cool_down"` // default 30s
}

// Retry configures resending a call to the same deployment after a connect
// error, 429 or 5xx (nothing relayed yet), with exponential backoff and
// jitter, within the call's deadline.
type Retry struct {
	Attempts   int      `yaml:"attempts"`    // retries per deployment; default 0 (none), at most 10
	Backoff    Duration `yaml:"backoff"`     // the first wait; doubles per retry; default 100ms
	MaxBackoff Duration `yaml:"max_backoff"` // caps one wait; default 2s
}

// Leasing reports whether calls are served from credit leases.
func (p *Proxy) Leasing() bool { return p.CreditLease == nil || *p.CreditLease }

// Billing configures the billing sidecar and the admin API.
type Billing struct {
	Addr       string `yaml:"addr"`        // default 127.0.0.1:8081
	AdminToken string `yaml:"admin_token"` // ≥ 32 characters, or the admin API is off
	// PublicURL is the app's URL; checkout success defaults to <PublicURL>?billing=success.
	PublicURL      string       `yaml:"public_url"`
	SuccessURL     string       `yaml:"success_url"`
	CancelURL      string       `yaml:"cancel_url"`
	AllowedOrigins []string     `yaml:"allowed_origins"`
	JWT            JWT          `yaml:"jwt"`
	Stripe         Stripe       `yaml:"stripe"`
	AutoRecharge   AutoRecharge `yaml:"auto_recharge"`
	// Webhooks are the operator's endpoints for outgoing events (package webhooks).
	Webhooks []Webhook `yaml:"webhooks"`
}

// Webhook is one endpoint of outgoing events: each event whose type is in
// Events (empty: every type) is POSTed to URL, signed with Secret.
type Webhook struct {
	URL    string   `yaml:"url"`    // http or https
	Secret string   `yaml:"secret"` // HMAC-SHA256 key, ≥ 16 characters
	Events []string `yaml:"events"` // event types; empty: all
}

// WebhookEvents are the event types an endpoint may ask for.
var WebhookEvents = []string{"balance.low", "credits.purchased", "credits.reversed", "auto_recharge.succeeded",
	"auto_recharge.failed", "key.budget_exhausted", "plan.limit_reached"}

// JWT configures end-user authentication on the billing API.
type JWT struct {
	Secret        string   `yaml:"secret"`          // HS256 secret
	PublicKeyFile string   `yaml:"public_key_file"` // PEM public key for RS256/ES256/EdDSA
	Algorithms    []string `yaml:"algorithms"`      // allowlist; default from the key kind
	Issuer        string   `yaml:"issuer"`
	Audience      string   `yaml:"audience"`
	AccountClaim  string   `yaml:"account_claim"` // default "sub"
	// MemberClaim names the claim by which a user (sub) acts for an account
	// it is a member of (teams); default "account".
	MemberClaim string `yaml:"member_claim"`
}

// Stripe configures the Stripe client.
type Stripe struct {
	SecretKey     string `yaml:"secret_key"`
	WebhookSecret string `yaml:"webhook_secret"`
	APIBase       string `yaml:"api_base"` // "" = Stripe's
}

// AutoRecharge configures the auto-recharge worker.
type AutoRecharge struct {
	DefaultSpendingLimit string `yaml:"default_spending_limit"` // per period, major units; default "50.00"
	MaxFailures          int    `yaml:"max_failures"`           // declines before it is disabled; default 3
}

// Plan is a subscription plan, sold with Stripe Checkout in subscription mode
// at StripePriceID (a recurring price) with quantity = seats.
type Plan struct {
	ID            string     `yaml:"id"`   // what the API and Redis name it; letters, digits, - _ .
	Name          string     `yaml:"name"` // display name; default ID
	StripePriceID string     `yaml:"stripe_price_id"`
	MinSeats      int64      `yaml:"min_seats"` // default 1
	MaxSeats      int64      `yaml:"max_seats"` // 0 = no maximum
	Limits        PlanLimits `yaml:"limits"`
}

// PlanLimits are a plan's limits; 0 means unlimited. Requests, tokens and
// credits count per billing period (the subscription's current period);
// RequestsPerMinute per fixed clock minute; APIKeys is the number of active
// keys at any time. Credits are whole credits. With PerSeat every limit is
// per seat and multiplied by the subscription's seats.
type PlanLimits struct {
	Requests          int64 `yaml:"requests"`
	InputTokens       int64 `yaml:"input_tokens"`
	OutputTokens      int64 `yaml:"output_tokens"`
	Credits           int64 `yaml:"credits"`
	APIKeys           int64 `yaml:"api_keys"`
	RequestsPerMinute int64 `yaml:"requests_per_minute"`
	PerSeat           bool  `yaml:"per_seat"`
}

// maxLimit bounds every limit so that a per-seat product stays far inside 64
// bits (and credits in milli-credits too).
const maxLimit = 1 << 40

// Effective returns the limits for a subscription of seats (at least 1):
// per-seat limits multiplied, PerSeat cleared.
func (p Plan) Effective(seats int64) PlanLimits {
	l := p.Limits
	if !l.PerSeat {
		return l
	}
	seats = max(seats, 1)
	mul := func(v int64) int64 {
		if v > maxLimit/seats {
			return maxLimit
		}
		return v * seats
	}
	return PlanLimits{
		Requests: mul(l.Requests), InputTokens: mul(l.InputTokens), OutputTokens: mul(l.OutputTokens),
		Credits: mul(l.Credits), APIKeys: mul(l.APIKeys), RequestsPerMinute: mul(l.RequestsPerMinute),
	}
}

// Seats reports whether n seats may be bought on the plan.
func (p Plan) Seats(n int64) bool { return n >= p.MinSeats && (p.MaxSeats == 0 || n <= p.MaxSeats) }

// FindPlan returns the plan of plans with that id.
func FindPlan(plans []Plan, id string) (Plan, bool) {
	for _, p := range plans {
		if p.ID == id && id != "" {
			return p, true
		}
	}
	return Plan{}, false
}

// FindPlanByPrice returns the plan of plans sold at a Stripe price.
func FindPlanByPrice(plans []Plan, price string) (Plan, bool) {
	for _, p := range plans {
		if p.StripePriceID == price && price != "" {
			return p, true
		}
	}
	return Plan{}, false
}

func validPlanID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Redis selects the store. URL for standalone; Addrs for Cluster, or with
// MasterName for Sentinel.
type Redis struct {
	URL        string   `yaml:"url"`
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"master_name"`
	Username   string   `yaml:"username"`
	Password   string   `yaml:"password"`
	PoolSize   int      `yaml:"pool_size"`
}

// Provider is an upstream model provider.
type Provider struct {
	// Kind is the wire protocol: "openai" (any OpenAI-compatible server) or
	// "anthropic" (native Messages API, for /v1/messages). Default openai.
	Kind    string `yaml:"kind"`
	BaseURL string `yaml:"base_url"` // e.g. https://api.openai.com/v1
	APIKey  string `yaml:"api_key"`
	// APIKeys are several keys, each taking a share of the calls in
	// proportion to its weight (instead of api_key).
	APIKeys []APIKey          `yaml:"api_keys"`
	Headers map[string]string `yaml:"headers"` // extra headers sent upstream
	// NativeBaseURL is where the provider's native API lives, when it differs
	// from BaseURL (Anthropic: /v1/messages).
	NativeBaseURL string `yaml:"native_base_url"`
}

// APIKey is one of a provider's keys and its weight (default 1).
type APIKey struct {
	Key    string `yaml:"key"`
	Weight int    `yaml:"weight"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error; default info
	Format string `yaml:"format"` // json or console; default json
	// Calls is which calls get an Info line when they end: all (default),
	// errors (status ≥ 400 or failed) or none.
	Calls string `yaml:"calls"`
}

// Duration is a time.Duration written as a string ("30s").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses "30s", "1m30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		// A TypeError: yaml.v3 goes on decoding the other values.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (e.g. \"30s\")", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Load reads, expands and decodes path, fills defaults and validates.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML, expanding ${VAR} and ${VAR:-default} in scalars with
// lookup, fills defaults and validates.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	expandNode(&root, lookup)
	expanded, err := yaml.Marshal(&root)
	if err != nil {
		return nil, fmt.Errorf("expanding variables: %w", err)
	}
	// Every unknown key and every value that does not fit, with its YAML
	// path and its line in the file; then what the values mean (Validate).
	var problems []error
	check("", &root, reflect.TypeOf(Config{}), &problems)
	var cfg Config
	if len(problems) == 0 {
		dec := yaml.NewDecoder(bytes.NewReader(expanded))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("decoding: %w", err)
		}
	} else {
		// The values that fit, for Validate to judge the rest; those that
		// do not are reported above.
		_ = yaml.Unmarshal(expanded, &cfg)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return &cfg, nil
}

func expandNode(n *yaml.Node, lookup func(string) (string, bool)) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		// Let the expanded text resolve as if written in the file: "8080"
		// decodes into an int, "a: b" stays a string.
		n.Value, n.Tag, n.Style = Expand(n.Value, lookup), "", 0
	}
	for _, c := range n.Content {
		expandNode(c, lookup)
	}
}

// Expand replaces ${VAR} and ${VAR:-default} in s. An unset or empty VAR with
// no default becomes "".
func Expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		expr := s[i+2 : i+j]
		name, def, hasDef := strings.Cut(expr, ":-")
		v, ok := lookup(name)
		if (!ok || v == "") && hasDef {
			v = def
		}
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// SetDefaults fills every zero value with its documented default.
func (c *Config) SetDefaults() {
	// redis.addrs entries may be comma-separated lists (one env variable
	// fills the whole list); empty entries are dropped.
	var addrs []string
	for _, a := range c.Redis.Addrs {
		for _, one := range strings.Split(a, ",") {
			if one = strings.TrimSpace(one); one != "" {
				addrs = append(addrs, one)
			}
		}
	}
	c.Redis.Addrs = addrs
	p := &c.Proxy
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	if p.Addr == "" {
		p.Addr = "127.0.0.1:8080"
	}
	if p.MaxBodyBytes == 0 {
		p.MaxBodyBytes = 8 << 20
	}
	def(&p.ConnectTimeout, 5*time.Second)
	def(&p.FirstByteTimeout, 120*time.Second)
	def(&p.RequestTimeout, 600*time.Second)
	def(&p.StreamIdleTimeout, 120*time.Second)
	def(&p.StreamTimeout, 30*time.Minute)
	def(&p.HoldTTL, max(p.StreamTimeout.D(), p.RequestTimeout.D())+time.Minute)
	def(&p.ReadTimeout, 30*time.Second)
	def(&p.IdleTimeout, 120*time.Second)
	def(&p.DrainTimeout, 20*time.Second)
	def(&p.RedisTimeout, 2*time.Second)
	def(&p.LeaseIdleReturn, time.Second)
	def(&p.LeaseOffline, 2*time.Second)
	def(&p.Breaker.CoolDown, 30*time.Second)
	def(&p.Retry.Backoff, 100*time.Millisecond)
	def(&p.Retry.MaxBackoff, 2*time.Second)
	if p.Breaker.Failures == 0 {
		p.Breaker.Failures = 5
	}
	if p.Concurrency == 0 {
		p.Concurrency = 256 * 1024
	}
	if c.Billing.Addr == "" {
		c.Billing.Addr = "127.0.0.1:8081"
	}
	if c.Billing.JWT.AccountClaim == "" {
		c.Billing.JWT.AccountClaim = "sub"
	}
	if c.Billing.JWT.MemberClaim == "" {
		c.Billing.JWT.MemberClaim = "account"
	}
	if c.Billing.AutoRecharge.DefaultSpendingLimit == "" {
		c.Billing.AutoRecharge.DefaultSpendingLimit = "50.00"
	}
	if c.Billing.AutoRecharge.MaxFailures == 0 {
		c.Billing.AutoRecharge.MaxFailures = 3
	}
	for i := range c.Plans {
		pl := &c.Plans[i]
		if pl.Name == "" {
			pl.Name = pl.ID
		}
		if pl.MinSeats == 0 {
			pl.MinSeats = 1
		}
	}
	for name, pr := range c.Providers {
		if pr.Kind == "" {
			pr.Kind = "openai"
		}
		pr.BaseURL = strings.TrimRight(pr.BaseURL, "/")
		pr.NativeBaseURL = strings.TrimRight(pr.NativeBaseURL, "/")
		if pr.NativeBaseURL == "" {
			pr.NativeBaseURL = pr.BaseURL
		}
		for i := range pr.APIKeys {
			if pr.APIKeys[i].Weight == 0 {
				pr.APIKeys[i].Weight = 1
			}
		}
		c.Providers[name] = pr
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.setBooksDefaults()
	if c.Log.Calls == "" {
		c.Log.Calls = "all"
	}
	if c.Metrics.Addr == "" {
		c.Metrics.Addr = "127.0.0.1:9464"
	}
	if c.Metrics.BillingAddr == "" {
		c.Metrics.BillingAddr = "127.0.0.1:9465"
	}
}

// Validate reports every problem at once, each with its YAML path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	c.validateBooks(bad)
	p := c.Proxy
	if p.MaxBodyBytes < 1024 {
		bad("proxy.max_body_bytes", "must be at least 1024, got %d", p.MaxBodyBytes)
	}
	for path, d := range map[string]Duration{
		"proxy.connect_timeout": p.ConnectTimeout, "proxy.first_byte_timeout": p.FirstByteTimeout,
		"proxy.request_timeout": p.RequestTimeout, "proxy.stream_idle_timeout": p.StreamIdleTimeout,
		"proxy.stream_timeout": p.StreamTimeout, "proxy.hold_ttl": p.HoldTTL, "proxy.read_timeout": p.ReadTimeout,
		"proxy.idle_timeout": p.IdleTimeout, "proxy.drain_timeout": p.DrainTimeout, "proxy.redis_timeout": p.RedisTimeout,
		"proxy.lease_idle_return": p.LeaseIdleReturn, "proxy.lease_offline": p.LeaseOffline,
		"proxy.breaker.cool_down": p.Breaker.CoolDown, "proxy.retry.backoff": p.Retry.Backoff, "proxy.retry.max_backoff": p.Retry.MaxBackoff,
	} {
		if d < 0 {
			bad(path, "must not be negative")
		}
	}
	if longest := max(p.StreamTimeout.D(), p.RequestTimeout.D()) + HoldMargin; p.HoldTTL.D() < longest {
		bad("proxy.hold_ttl", "must outlive the longest call by %s (stream_timeout %s, request_timeout %s): at least %s, got %s",
			HoldMargin, p.StreamTimeout.D(), p.RequestTimeout.D(), longest, p.HoldTTL.D())
	}
	if p.Breaker.Failures < 1 {
		bad("proxy.breaker.failures", "must be at least 1, got %d", p.Breaker.Failures)
	}
	if p.Retry.Attempts < 0 || p.Retry.Attempts > 10 {
		bad("proxy.retry.attempts", "must be 0 to 10, got %d", p.Retry.Attempts)
	}
	if p.Retry.Backoff > p.Retry.MaxBackoff {
		bad("proxy.retry.backoff", "must not exceed max_backoff (%s), got %s", p.Retry.MaxBackoff.D(), p.Retry.Backoff.D())
	}
	if len(c.Providers) == 0 {
		bad("providers", "at least one provider is required")
	}
	for name, pr := range c.Providers {
		path := "providers." + name
		if pr.Kind != "openai" && pr.Kind != "anthropic" {
			bad(path+".kind", "must be openai or anthropic, got %q", pr.Kind)
		}
		if u, err := url.Parse(pr.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(path+".base_url", "must be an http(s) URL, got %q", pr.BaseURL)
		}
		if pr.APIKey != "" && len(pr.APIKeys) > 0 {
			bad(path+".api_keys", "set api_key or api_keys, not both")
		}
		for i, k := range pr.APIKeys {
			if k.Key == "" {
				bad(fmt.Sprintf("%s.api_keys[%d].key", path, i), "is required (an unset ${VAR}?)")
			}
			if k.Weight < 1 || k.Weight > 1_000_000 {
				bad(fmt.Sprintf("%s.api_keys[%d].weight", path, i), "must be 1 to 1000000, got %d", k.Weight)
			}
		}
	}
	if _, err := pricing.New(c.Pricing); err != nil {
		errs = append(errs, err)
	}
	for i, m := range c.Pricing.Models {
		for j, d := range m.Deployments {
			if _, ok := c.Providers[d.Provider]; d.Provider != "" && !ok {
				bad(fmt.Sprintf("pricing.models[%d].deployments[%d].provider", i, j), "unknown provider %q", d.Provider)
			}
		}
	}
	if c.Redis.URL != "" {
		if _, err := url.Parse(c.Redis.URL); err != nil || !strings.HasPrefix(c.Redis.URL, "redis") {
			bad("redis.url", "must be a redis:// or rediss:// URL")
		}
	}
	if t := c.Billing.AdminToken; t != "" && len(t) < 32 {
		bad("billing.admin_token", "must be at least 32 characters (got %d)", len(t))
	}
	if _, err := pricing.ParseMinor(c.Billing.AutoRecharge.DefaultSpendingLimit, 2); err != nil {
		bad("billing.auto_recharge.default_spending_limit", "%v", err)
	}
	if c.Billing.AutoRecharge.MaxFailures < 1 {
		bad("billing.auto_recharge.max_failures", "must be at least 1, got %d", c.Billing.AutoRecharge.MaxFailures)
	}
	hookURLs := map[string]int{}
	for i, w := range c.Billing.Webhooks {
		path := fmt.Sprintf("billing.webhooks[%d]", i)
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(path+".url", "must be an http:// or https:// URL, got %q", w.URL)
		} else if j, dup := hookURLs[w.URL]; dup {
			bad(path+".url", "is billing.webhooks[%d]'s too (one endpoint per URL)", j)
		}
		hookURLs[w.URL] = i
		if len(w.Secret) < 16 {
			bad(path+".secret", "must be at least 16 characters (got %d)", len(w.Secret))
		}
		for j, ev := range w.Events {
			if !slices.Contains(WebhookEvents, ev) {
				bad(fmt.Sprintf("%s.events[%d]", path, j), "unknown event %q (one of %s)", ev, strings.Join(WebhookEvents, ", "))
			}
		}
	}
	seen, prices := map[string]bool{}, map[string]string{}
	for i, pl := range c.Plans {
		path := fmt.Sprintf("plans[%d]", i)
		switch {
		case pl.ID == "":
			bad(path+".id", "is required")
		case !validPlanID(pl.ID):
			bad(path+".id", "must be 1–64 letters, digits, - _ or ., got %q", pl.ID)
		case seen[pl.ID]:
			bad(path+".id", "duplicate plan %q", pl.ID)
		}
		seen[pl.ID] = true
		if pl.StripePriceID == "" {
			bad(path+".stripe_price_id", "is required (the recurring Stripe price the plan is sold at)")
		} else if other, dup := prices[pl.StripePriceID]; dup {
			bad(path+".stripe_price_id", "price %q is already plan %q's", pl.StripePriceID, other)
		} else {
			prices[pl.StripePriceID] = pl.ID
		}
		if pl.MinSeats < 1 {
			bad(path+".min_seats", "must be at least 1, got %d", pl.MinSeats)
		}
		if pl.MaxSeats < 0 || (pl.MaxSeats != 0 && pl.MaxSeats < pl.MinSeats) {
			bad(path+".max_seats", "must be 0 (no maximum) or at least min_seats")
		}
		l := pl.Limits
		for name, v := range map[string]int64{
			"requests": l.Requests, "input_tokens": l.InputTokens, "output_tokens": l.OutputTokens,
			"credits": l.Credits, "api_keys": l.APIKeys, "requests_per_minute": l.RequestsPerMinute,
		} {
			if v < 0 || v > maxLimit {
				bad(path+".limits."+name, "must be between 0 (unlimited) and %d, got %d", int64(maxLimit), v)
			}
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "must be json or console, got %q", c.Log.Format)
	}
	switch c.Log.Calls {
	case "all", "errors", "none":
	default:
		bad("log.calls", "must be all, errors or none, got %q", c.Log.Calls)
	}
	for _, m := range [...]struct{ path, addr string }{{"metrics.addr", c.Metrics.Addr}, {"metrics.billing_addr", c.Metrics.BillingAddr}} {
		if _, _, err := net.SplitHostPort(m.addr); err != nil && m.addr != "off" {
			bad(m.path, "must be host:port or off, got %q", m.addr)
		}
	}
	return errors.Join(errs...)
}
