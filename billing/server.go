package billing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76/client"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/pricing"
)

// MinAdminTokenLen is the shortest admin token New accepts.
const MinAdminTokenLen = 32

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	// Config is the billing section of the configuration (required fields:
	// none; without jwt, stripe or admin_token the matching routes answer 503
	// or are not mounted).
	Config config.Billing
	// Catalog is the price list: packs on sale. Required.
	Catalog *pricing.Catalog
	// Store is the ledger (a *metering.Store). Required.
	Store Store
	// Logger receives one line per request and every internal error. Default: no logging.
	Logger *zap.Logger
	// Stripe is the Stripe client. Default: built by NewStripeClient from
	// Config.Stripe when a secret key is configured; nil otherwise (checkout
	// then answers 503).
	Stripe *client.API
	// RequestTimeout bounds each request's work (Redis and Stripe calls).
	// Default 30s.
	RequestTimeout time.Duration
	// MaxKeysPerAccount caps the active API keys an account may create for
	// itself (the admin API is not capped). Default 100. A plan's api_keys
	// limit caps them further.
	MaxKeysPerAccount int
	// OnWebhook is told of each Stripe webhook delivery: its event type (a
	// type Tollgate acts on, "other", or "unknown" before the signature is
	// verified) and the result ("processed", "ignored", "bad_signature",
	// "invalid", "error", "disabled"). Optional; for metrics.
	OnWebhook func(eventType, result string)
	// Plans are the subscription plans on sale (config.Config.Plans).
	Plans []config.Plan
	// Payments charges saved cards off session (direct purchases and
	// auto-recharge). Default: NewStripePayments over the Stripe client.
	Payments Payments
	// MaxFailures is how many failed auto-recharge charges in a row turn
	// auto-recharge off. Default Config.AutoRecharge.MaxFailures, else 3.
	MaxFailures int
	// Daily is the source of the usage chart (GET /api/billing/usage/daily).
	// Default: Store, when it implements DailyUsage (*metering.Store does).
	Daily DailyUsage
	// Books is the durable books' status for operators (books.go); nil: none.
	Books Books
	// Export is the source of the usage export (export.go). Default: Store,
	// when it implements UsageExport (*metering.Store does, from Redis; the
	// books' store from the journal).
	Export UsageExport
	// MaxExports is how many usage exports run at once; one more is
	// answered 429 export_busy with Retry-After (a slow export must not hold
	// the books' connections nor the process's memory for the others).
	// Default 4.
	MaxExports int
}

func (o *Options) init() {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.MaxKeysPerAccount <= 0 {
		o.MaxKeysPerAccount = 100
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = o.Config.AutoRecharge.MaxFailures
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 3
	}
	if o.MaxExports <= 0 {
		o.MaxExports = 4
	}
}

// Server is the billing sidecar's HTTP API. It is safe for concurrent use.
type Server struct {
	opts     Options
	cfg      config.Billing
	catalog  *pricing.Catalog
	store    Store
	log      *zap.Logger
	stripe   *client.API
	payments Payments     // nil when payments are off
	jwt      *jwtVerifier // nil: JWT routes answer 503
	plans    []config.Plan
	daily    DailyUsage    // nil: the daily usage route answers 503
	books    Books         // nil: no durable books (books.go)
	export   UsageExport   // nil: the usage export answers 503
	exports  chan struct{} // one token per usage export running (Options.MaxExports)

	adminHash  [32]byte // sha256 of the admin token
	adminOn    bool
	successURL string
	cancelURL  string
	packsBody  []byte // GET /v1/billing/packs, rendered once
	origins    map[string]bool
	anyOrigin  bool
	redirects  map[string]bool // origins checkout may redirect to (never "*")
	returnURL  string          // the billing portal's return URL
	// defaultSpendingLimit is billing.auto_recharge.default_spending_limit in
	// minor units.
	defaultSpendingLimit int64
	handler              http.Handler
}

// New validates opts and builds a Server. It fails when an admin token shorter
// than MinAdminTokenLen is configured, when the JWT settings are unusable, or
// when Stripe is configured without usable success and cancel URLs.
func New(opts Options) (*Server, error) {
	opts.init()
	if opts.Catalog == nil || opts.Store == nil {
		return nil, errors.New("billing: Catalog and Store are required")
	}
	s := &Server{
		opts: opts, cfg: opts.Config, catalog: opts.Catalog, store: opts.Store,
		log: opts.Logger.Named("billing"), stripe: opts.Stripe,
	}
	var errs []error
	if t := s.cfg.AdminToken; t != "" {
		if len(t) < MinAdminTokenLen {
			errs = append(errs, fmt.Errorf("billing.admin_token: must be at least %d characters (got %d)", MinAdminTokenLen, len(t)))
		}
		s.adminHash, s.adminOn = sha256.Sum256([]byte(t)), true
	}
	jv, err := newJWTVerifier(s.cfg.JWT)
	if err != nil {
		errs = append(errs, err)
	}
	s.jwt = jv
	if s.stripe == nil && s.cfg.Stripe.SecretKey != "" {
		sc, err := NewStripeClient(s.cfg.Stripe, opts.Logger)
		if err != nil {
			errs = append(errs, err)
		}
		s.stripe = sc
	}
	if s.stripe != nil {
		s.successURL, s.cancelURL, err = redirectURLs(s.cfg)
		if err != nil {
			errs = append(errs, err)
		}
		s.payments = opts.Payments
		if s.payments == nil {
			s.payments = NewStripePayments(s.stripe)
		}
	}
	s.plans = opts.Plans
	s.daily = opts.Daily
	s.books = opts.Books
	if d, ok := opts.Store.(DailyUsage); ok && s.daily == nil {
		s.daily = d
	}
	s.export = opts.Export
	s.exports = make(chan struct{}, opts.MaxExports)
	if x, ok := opts.Store.(UsageExport); ok && s.export == nil {
		s.export = x
	}
	s.origins, s.redirects = make(map[string]bool), make(map[string]bool)
	for _, o := range s.cfg.AllowedOrigins {
		o = strings.TrimRight(o, "/")
		s.anyOrigin = s.anyOrigin || o == "*"
		if o != "" {
			s.origins[o] = true
		}
		if origin, ok := originOf(o); ok {
			s.redirects[origin] = true
		}
	}
	for _, u := range []string{s.cfg.PublicURL, s.successURL, s.cancelURL} {
		if origin, ok := originOf(u); ok {
			s.redirects[origin] = true
		}
	}
	s.returnURL = s.cfg.PublicURL
	if _, ok := originOf(s.returnURL); !ok {
		s.returnURL = s.successURL
	}
	s.defaultSpendingLimit, err = pricing.ParseMinor(s.cfg.AutoRecharge.DefaultSpendingLimit, 2)
	if s.cfg.AutoRecharge.DefaultSpendingLimit == "" {
		s.defaultSpendingLimit, err = 5000, nil
	}
	if err != nil || s.defaultSpendingLimit < 0 {
		errs = append(errs, fmt.Errorf("billing.auto_recharge.default_spending_limit: %q is not an amount", s.cfg.AutoRecharge.DefaultSpendingLimit))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.packsBody = renderPacks(s.catalog)
	s.handler = s.middleware(s.routes())
	return s, nil
}

// Handler returns the HTTP handler of every billing route.
func (s *Server) Handler() http.Handler { return s.handler }

// PaymentsEnabled reports whether checkout can reach Stripe.
func (s *Server) PaymentsEnabled() bool { return s.stripe != nil }

// AdminEnabled reports whether the admin API is mounted.
func (s *Server) AdminEnabled() bool { return s.adminOn }

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	h := s.handle
	mux.Handle("GET /healthz", h(s.healthz))
	mux.Handle("GET /readyz", h(s.readyz))

	mux.Handle("GET /v1/billing/packs", h(s.packs))
	mux.Handle("POST /v1/billing/checkout", s.user(s.checkout))
	mux.Handle("POST /v1/billing/webhook", h(s.webhook))
	mux.Handle("GET /v1/billing/history", s.user(s.history))
	mux.Handle("GET /v1/api-credits", s.user(s.apiCredits))
	mux.Handle("POST /v1/billing/redeem", s.user(s.redeem))
	mux.Handle("POST /v1/keys", s.user(s.createOwnKey))
	mux.Handle("GET /v1/keys", s.user(s.listOwnKeys))
	mux.Handle("DELETE /v1/keys/{id}", s.user(s.revokeOwnKey))
	mux.Handle("PATCH /v1/keys/{id}", s.user(s.patchOwnKey))

	// The plans and credits API (camelCase, as the app's front end reads it).
	mux.Handle("POST /api/billing/checkout", s.user(s.subscribe))
	mux.Handle("POST /api/billing/portal", s.user(s.portal))
	mux.Handle("POST /api/billing/cancel", s.user(s.cancel))
	mux.Handle("GET /api/billing/usage", s.user(s.usage))
	mux.Handle("GET /api/billing/usage/daily", s.user(s.dailyUsage))
	mux.Handle("GET /api/billing/usage/export", s.user(s.usageExport))
	mux.Handle("GET /api/billing/credits", s.user(s.credits))
	mux.Handle("POST /api/billing/credits/purchase", s.user(s.purchase))
	mux.Handle("PUT /api/billing/credits/auto-recharge", s.user(s.setAutoRecharge))
	mux.Handle("PUT /api/billing/credits/alerts", s.user(s.setAlerts))

	// Teams (members.go); who may call what: authz.go.
	mux.Handle("GET /v1/members", s.user(s.listMembers))
	mux.Handle("POST /v1/members", s.user(s.setMember))
	mux.Handle("PATCH /v1/members/{user}", s.user(s.patchMember))
	mux.Handle("DELETE /v1/members/{user}", s.user(s.removeMember))
	mux.Handle("GET /v1/audit", s.user(s.listAudit))
	mux.Handle("GET /v1/me", s.user(s.me))

	if s.adminOn {
		mux.Handle("POST /admin/v1/accounts", s.admin(s.adminCreateAccount))
		mux.Handle("GET /admin/v1/accounts/{id}", s.admin(s.adminAccount))
		mux.Handle("POST /admin/v1/accounts/{id}/keys", s.admin(s.adminCreateKey))
		mux.Handle("GET /admin/v1/accounts/{id}/keys", s.admin(s.adminListKeys))
		mux.Handle("DELETE /admin/v1/accounts/{id}/keys/{keyId}", s.admin(s.adminRevokeKey))
		mux.Handle("PATCH /admin/v1/accounts/{id}/keys/{keyId}", s.admin(s.adminPatchKey))
		mux.Handle("POST /admin/v1/accounts/{id}/credits", s.admin(s.adminCredit))
		mux.Handle("GET /admin/v1/accounts/{id}/ledger", s.admin(s.adminLedger))
		mux.Handle("GET /admin/v1/books", s.admin(s.adminBooks))
		mux.Handle("POST /admin/v1/promo-codes", s.admin(s.adminCreatePromo))
		mux.Handle("GET /admin/v1/promo-codes/{code}", s.admin(s.adminPromo))
		mux.Handle("GET /admin/v1/webhooks/deliveries", s.admin(s.adminDeliveries))
	}
	s.consoleRoutes(mux)
	// Everything else, including the admin API when it is off: an OpenAI-shaped 404.
	mux.Handle("/", h(func(http.ResponseWriter, *http.Request) error { return errNoRoute }))
	return mux
}

// handlerFunc is a handler that returns its error to the edge.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle turns a handlerFunc into an http.Handler: writeError is called once
// per failed request, here.
func (s *Server) handle(f handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeRaw(w, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.store.Ping(r.Context()); err != nil {
		return err
	}
	writeRaw(w, http.StatusOK, []byte(`{"status":"ready"}`))
	return nil
}

// requestInfo is what the logging middleware reports about a request; the
// handlers fill in the account.
type requestInfo struct {
	id      string
	account string
}

type infoKey struct{}

func infoFrom(ctx context.Context) *requestInfo {
	if i, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return i
	}
	return &requestInfo{}
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// middleware: request id, deadline, CORS, panic recovery and one log line per request.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: requestID(r)}
		ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), infoKey{}, info), s.opts.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		w.Header().Set("X-Request-Id", info.id)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panicked", zap.String("request_id", info.id), zap.String("path", r.URL.Path),
					zap.String("panic", fmt.Sprint(p)), zap.Stack("stack"))
				if sw.status == 0 {
					s.writeError(sw, r, errors.New("panic"))
				}
			}
			s.log.Info("request", zap.String("request_id", info.id), zap.String("method", r.Method),
				zap.String("route", r.Pattern), zap.String("account", info.account), zap.Int("status", sw.status),
				zap.Duration("latency", time.Since(start)))
		}()
		if s.cors(sw, r) {
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// cors answers preflights and sets the allow headers for the public API when
// the request's Origin is allowed. It reports whether the request was answered.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	public := strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, "/api/billing/")
	if origin == "" || !public || r.URL.Path == "/v1/billing/webhook" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if !s.anyOrigin && !s.origins[strings.TrimRight(origin, "/")] {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "X-Request-Id")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// requestID keeps a caller's X-Request-Id when it is short and plain, and
// makes one otherwise.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 64 && plainID(id) {
		return id
	}
	return "req_" + randomHex(12)
}

func plainID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// redirectURLs resolves checkout's success and cancel URLs: success_url, or
// <public_url>?billing=success; cancel_url, or <public_url>?billing=cancel.
func redirectURLs(cfg config.Billing) (success, cancel string, err error) {
	withQuery := func(base, q string) string {
		if base == "" {
			return ""
		}
		if strings.Contains(base, "?") {
			return base + "&" + q
		}
		return base + "?" + q
	}
	success, cancel = cfg.SuccessURL, cfg.CancelURL
	if success == "" {
		success = withQuery(cfg.PublicURL, "billing=success")
	}
	if cancel == "" {
		cancel = withQuery(cfg.PublicURL, "billing=cancel")
	}
	var errs []error
	for _, c := range [...]struct{ path, v string }{{"billing.success_url", success}, {"billing.cancel_url", cancel}} {
		path, v := c.path, c.v
		if u, perr := url.Parse(v); perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: checkout needs an absolute http(s) URL (set it or billing.public_url), got %q", path, v))
		}
	}
	return success, cancel, errors.Join(errs...)
}

// originOf returns the scheme://host[:port] of an absolute http(s) URL, lower
// case; ok is false for anything else (relative URLs, "*", user info).
func originOf(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

// redirectAllowed checks a redirect URL a caller asks for: an absolute http(s)
// URL on an allowed origin (billing.allowed_origins, or the configured public,
// success and cancel URLs). A wildcard origin allows no redirect: Checkout
// and the portal must never send a buyer to a site we do not know.
func (s *Server) redirectAllowed(raw string) bool {
	if len(raw) > 2048 {
		return false
	}
	origin, ok := originOf(raw)
	return ok && s.redirects[origin]
}
