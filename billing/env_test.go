package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

const (
	testAdminToken    = "admin-token-0123456789abcdef-0123456789"
	testJWTSecret     = "jwt-secret-0123456789abcdef-0123456789"
	testWebhookSecret = "whsec_test_0123456789"
	testIssuer        = "https://app.example"
	testAudience      = "tollgate"
	growthCreditsMC   = 2_374_050_000 // 2,374,050 credits
	growthPriceMinor  = 2499
)

// env is one billing server on a real Redis (and, when asked, stripe-mock),
// served over real HTTP on 127.0.0.1.
type env struct {
	t       *testing.T
	redis   *testredis.Server
	store   *metering.Store
	catalog *pricing.Catalog
	srv     *Server
	http    *httptest.Server
	logs    *observer.ObservedLogs
	stripe  *stripeRecorder // nil without Stripe
}

type envOptions struct {
	stripe     bool // start stripe-mock and configure checkout
	noAdmin    bool // no admin token: admin API off
	noWebhook  bool // no webhook secret
	jwt        *config.JWT
	catalog    *pricing.Catalog // default: the shipped catalog
	plans      []config.Plan
	payments   Payments // default: Stripe's (stripe-mock)
	adjustOpts func(*Options)
}

// testCatalog is the shipped default catalog (configs/tollgate.yaml).
func testCatalog(t testing.TB) *pricing.Catalog {
	t.Helper()
	data, err := os.ReadFile("../configs/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("parsing the shipped config: %v", err)
	}
	c, err := pricing.New(cfg.Pricing)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, redis: testredis.Start(t), catalog: o.catalog}
	if e.catalog == nil {
		e.catalog = testCatalog(t)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.Addr, PoolSize: 64, DialTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	e.store = metering.New(rdb, metering.Options{KeyCacheTTL: -1})

	core, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	cfg := config.Billing{
		AdminToken: testAdminToken, PublicURL: "http://app.example", AllowedOrigins: []string{"http://app.example"},
		JWT: config.JWT{Secret: testJWTSecret, Issuer: testIssuer, Audience: testAudience, AccountClaim: "sub"},
	}
	if o.noAdmin {
		cfg.AdminToken = ""
	}
	if !o.noWebhook {
		cfg.Stripe.WebhookSecret = testWebhookSecret
	}
	if o.jwt != nil {
		cfg.JWT = *o.jwt
	}
	opts := Options{Config: cfg, Catalog: e.catalog, Store: e.store, Logger: zap.New(core), Plans: o.plans, Payments: o.payments}
	if o.stripe {
		mock := teststripe.Start(t)
		e.stripe = newStripeRecorder(t, mock.URL)
		opts.Config.Stripe.SecretKey = teststripe.SecretKey
		opts.Config.Stripe.APIBase = e.stripe.URL
	}
	if o.adjustOpts != nil {
		o.adjustOpts(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("billing.New: %v", err)
	}
	e.srv = srv
	e.http = httptest.NewServer(srv.Handler())
	t.Cleanup(e.http.Close)
	return e
}

// token signs an HS256 JWT for account with the env's issuer and audience,
// valid for an hour; edit adjusts the claims.
func (e *env) token(account string, edit func(jwt.MapClaims)) string {
	e.t.Helper()
	claims := jwt.MapClaims{
		"sub": account, "iss": testIssuer, "aud": testAudience,
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	}
	if edit != nil {
		edit(claims)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testJWTSecret))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// response is a decoded HTTP answer.
type response struct {
	status int
	raw    string
	json   map[string]any
	header http.Header
}

func (r response) str(path string) string {
	v := r.get(path)
	s, _ := v.(string)
	return s
}

// num returns a JSON number's text (the decoder keeps numbers as json.Number).
func (r response) num(path string) string {
	v := r.get(path)
	n, _ := v.(json.Number)
	return string(n)
}

// get walks a dotted path ("error.code", "data.0.id").
func (r response) get(path string) any {
	var v any = r.json
	for _, p := range strings.Split(path, ".") {
		switch m := v.(type) {
		case map[string]any:
			v = m[p]
		case []any:
			i := 0
			for _, c := range p {
				i = i*10 + int(c-'0')
			}
			if i >= len(m) {
				return nil
			}
			v = m[i]
		default:
			return nil
		}
	}
	return v
}

func (r response) list() []any {
	l, _ := r.json["data"].([]any)
	return l
}

// do sends a request with an optional bearer credential and JSON body (a
// string is sent as is).
func (e *env) do(method, path, bearer string, body any) response {
	e.t.Helper()
	return e.doHeaders(method, path, bearer, body)
}

// doHeaders is do with extra request headers, as name, value pairs.
func (e *env) doHeaders(method, path, bearer string, body any, hdr ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, raw: string(raw), header: res.Header}
	if len(bytes.TrimSpace(raw)) > 0 && !strings.HasPrefix(res.Header.Get("Content-Type"), "text/csv") {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&out.json); err != nil {
			e.t.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, path, err, raw)
		}
	}
	return out
}

func (e *env) admin(method, path string, body any) response {
	e.t.Helper()
	return e.do(method, path, testAdminToken, body)
}

// expect fails unless r has the status (and, for errors, the code).
func (e *env) expect(r response, status int, code string) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	if code != "" && r.str("error.code") != code {
		e.t.Fatalf("error.code %q, want %q: %s", r.str("error.code"), code, r.raw)
	}
}

// account reads an account straight from the store.
func (e *env) account(id string) metering.Account {
	e.t.Helper()
	a, err := e.store.Account(context.Background(), id)
	if err != nil {
		e.t.Fatalf("reading account %q: %v", id, err)
	}
	return a
}

// invariant checks, for account: Σ ledger amounts = balance =
// purchased + granted + adjusted − consumed, and purchased = Σ billing
// history (purchases, refunds, disputes: never an operator's credit).
func (e *env) invariant(account string) {
	e.t.Helper()
	a := e.account(account)
	entries, err := e.store.AllEntries(context.Background(), account)
	if err != nil {
		e.t.Fatal(err)
	}
	var sum int64
	for _, en := range entries {
		sum += en.Amount
	}
	history, err := e.store.BillingHistory(context.Background(), account, metering.LedgerQuery{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	var bought int64
	for _, h := range history {
		bought += h.Amount
	}
	if sum != a.Balance || a.Balance != a.Credits()-a.Consumed || bought != a.Purchased {
		e.t.Fatalf("ledger invariant broken for %q: Σ ledger %d, balance %d, purchased %d (Σ history %d) + granted %d + adjusted %d − consumed %d = %d",
			account, sum, a.Balance, a.Purchased, bought, a.Granted, a.Adjusted, a.Consumed, a.Credits()-a.Consumed)
	}
}

// webhookURL is where Stripe would deliver.
func (e *env) webhookURL() string { return e.http.URL + "/v1/billing/webhook" }

// deliver signs payload with the env's secret and posts it.
func (e *env) deliver(payload []byte) (int, string) {
	e.t.Helper()
	status, body, err := teststripe.Deliver(e.webhookURL(), testWebhookSecret, payload)
	if err != nil {
		e.t.Fatal(err)
	}
	return status, body
}

// sell records a checkout session for account as checkout would (without
// Stripe): the record the webhook credits from.
func (e *env) sell(account, session, packKey string) pricing.Pack {
	e.t.Helper()
	if _, err := e.store.EnsureAccount(context.Background(), account); err != nil {
		e.t.Fatal(err)
	}
	p, err := e.catalog.Pack(packKey)
	if err != nil {
		e.t.Fatal(err)
	}
	err = e.store.SaveCheckout(context.Background(), metering.Checkout{
		SessionID: session, Account: account, Pack: p.Key, Credits: p.Credits, PriceMinor: p.PriceMinor, Currency: p.Currency,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// paid delivers checkout.session.completed (paid) for a sold session and
// requires a 200.
func (e *env) paid(eventID, account, session, payment string, p pricing.Pack) {
	e.t.Helper()
	payload := teststripe.Event(eventID, "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: session, Account: account, Pack: p.Key, AmountTotal: p.PriceMinor, Currency: p.Currency, PaymentIntent: payment,
	}))
	if status, body := e.deliver(payload); status != http.StatusOK {
		e.t.Fatalf("webhook: %d %s", status, body)
	}
}

// spend charges usage of mc to account through a hold, as the proxy does.
func (e *env) spend(account, hold string, mc int64) {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.store.Reserve(ctx, metering.HoldRequest{Account: account, HoldID: hold, Fixed: mc}); err != nil {
		e.t.Fatalf("reserving %d mc: %v", mc, err)
	}
	_, err := e.store.Settle(ctx, metering.Settlement{Account: account, HoldID: hold, Cost: mc,
		Record: metering.Record{RequestID: hold, Model: "gpt-4o-mini", Status: 200}})
	if err != nil {
		e.t.Fatal(err)
	}
}

// stripeRecorder is a reverse proxy in front of stripe-mock that records what
// the billing server asked Stripe.
type stripeRecorder struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []stripeRequest
	patch func(method, path string, body map[string]any) // edits stripe-mock's JSON answers
}

// onResponse edits stripe-mock's answers from now on: stripe-mock is
// stateless and answers fixtures (a PaymentIntent it confirmed still says
// requires_payment_method); patch plays the bank.
func (s *stripeRecorder) onResponse(patch func(method, path string, body map[string]any)) {
	s.mu.Lock()
	s.patch = patch
	s.mu.Unlock()
}

type stripeRequest struct {
	method, path   string
	form           url.Values
	idempotencyKey string
}

func newStripeRecorder(t *testing.T, target string) *stripeRecorder {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &stripeRecorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(res *http.Response) error {
		rec.mu.Lock()
		patch := rec.patch
		rec.mu.Unlock()
		if patch == nil || res.StatusCode != http.StatusOK {
			return nil
		}
		raw, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		var body map[string]any
		if json.Unmarshal(raw, &body) == nil {
			patch(res.Request.Method, res.Request.URL.Path, body)
			raw, _ = json.Marshal(body)
		}
		res.Body = io.NopCloser(bytes.NewReader(raw))
		res.ContentLength = int64(len(raw))
		res.Header.Set("Content-Length", strconv.Itoa(len(raw)))
		return nil
	}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, stripeRequest{r.Method, r.URL.Path, form, r.Header.Get("Idempotency-Key")})
		rec.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(rec.Close)
	return rec
}

// requests returns the recorded requests to path.
func (s *stripeRecorder) requests(path string) []stripeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stripeRequest
	for _, r := range s.reqs {
		if r.path == path {
			out = append(out, r)
		}
	}
	return out
}

// refund delivers charge.refunded for a charge of payment with the cumulative
// amount refunded, and requires a 200.
func (e *env) refund(eventID, charge, payment string, amount, refunded int64) {
	e.t.Helper()
	payload := teststripe.Event(eventID, "charge.refunded", teststripe.Charge(charge, payment, amount, refunded, "usd", nil))
	if status, body := e.deliver(payload); status != http.StatusOK {
		e.t.Fatalf("refund webhook: %d %s", status, body)
	}
}

func stringField(key, value string) zapcore.Field { return zap.String(key, value) }
