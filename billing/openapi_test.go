package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/tollgate/tollgate/api"
	"github.com/tollgate/tollgate/internal/teststripe"
)

func init() {
	// The console's page: validated as a string.
	openapi3filter.RegisterBodyDecoder("text/html", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(body)
		return string(b), err
	})
}

// loadDoc loads and validates the committed OpenAPI document.
func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("loading api/openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.json is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("api/openapi.json is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	return doc
}

// billingOps are the document's operations that the billing server serves
// (those without a path-level server: the proxy's carry one), "METHOD path".
func billingOps(doc *openapi3.T) map[string]string {
	ops := map[string]string{}
	for path, item := range doc.Paths.Map() {
		if len(item.Servers) > 0 {
			continue
		}
		for method, op := range item.Operations() {
			ops[method+" "+path] = op.OperationID
		}
	}
	return ops
}

// registeredRoutes reads every route billing registers (mux.Handle("METHOD
// /path", …) in its non-test sources), as "METHOD /path" in the document's
// spelling. The catch-all "/" is not an operation.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`mux\.Handle\("([A-Z]+) ([^"]+)"`)
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			out = append(out, m[1]+" "+strings.TrimSuffix(m[2], "{file...}"))
		}
	}
	sort.Strings(out)
	if len(out) < 20 {
		t.Fatalf("found only %d routes: %v", len(out), out)
	}
	return out
}

// TestOpenAPIRoutes: every route the billing server registers is documented,
// and every documented billing operation is registered.
func TestOpenAPIRoutes(t *testing.T) {
	doc := loadDoc(t)
	ops := billingOps(doc)
	registered := map[string]bool{}
	for _, r := range registeredRoutes(t) {
		registered[r] = true
		if _, ok := ops[r]; !ok {
			t.Errorf("route %q is registered but not in api/openapi.json", r)
		}
	}
	for op := range ops {
		if !registered[op] {
			t.Errorf("api/openapi.json documents %q, which billing does not register", op)
		}
	}
	// The proxy's own endpoints are there too.
	for _, p := range []string{"/v1/models", "/v1/generation", "/v1/chat/completions"} {
		if doc.Paths.Find(p) == nil {
			t.Errorf("api/openapi.json lacks the proxy's %s", p)
		}
	}
	for _, h := range []string{"X-Credits-Charged", "X-Credits-Balance", "X-Request-Id"} {
		if doc.Components.Headers[h] == nil {
			t.Errorf("api/openapi.json lacks the %s header", h)
		}
	}
}

// oasClient sends requests to a billing env and validates each request and
// its real response against the document, counting the operations covered.
type oasClient struct {
	t       *testing.T
	e       *env
	router  routers.Router
	covered map[string]int // operationId → 2xx responses validated
	seen    map[string]bool
}

func newOASClient(t *testing.T, e *env) *oasClient {
	doc := loadDoc(t)
	for path, item := range doc.Paths.Map() {
		if len(item.Servers) > 0 { // the proxy's: not served here
			doc.Paths.Delete(path)
		}
	}
	doc.Servers = openapi3.Servers{{URL: e.http.URL}}
	r, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &oasClient{t: t, e: e, router: r, covered: map[string]int{}, seen: map[string]bool{}}
}

func (c *oasClient) do(method, path, bearer string, body any, hdr ...string) response {
	c.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		raw, _ = json.Marshal(b)
	}
	req, err := http.NewRequest(method, c.e.http.URL+path, bytes.NewReader(raw))
	if err != nil {
		c.t.Fatal(err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Fatalf("%s %s: not in the document: %v", method, path, err)
	}
	ctx := context.Background()
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	req.Body = io.NopCloser(bytes.NewReader(raw))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	got, _ := io.ReadAll(res.Body)
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.StatusCode, Header: res.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	out.SetBodyBytes(got)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		c.t.Errorf("%s %s → %d: the response does not match the document: %v\n%s", method, path, res.StatusCode, err, got)
	}
	// A request the document refuses must not succeed (the tests send
	// some bad ones on purpose: those must be refused).
	if reqErr != nil && res.StatusCode < 300 {
		c.t.Errorf("%s %s → %d: succeeded, but the document refuses the request: %v", method, path, res.StatusCode, reqErr)
	}
	c.seen[route.Operation.OperationID] = true
	if res.StatusCode < 300 {
		c.covered[route.Operation.OperationID]++
	}
	r := response{status: res.StatusCode, raw: string(got), header: res.Header}
	if dec := json.NewDecoder(bytes.NewReader(got)); len(bytes.TrimSpace(got)) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		dec.UseNumber()
		_ = dec.Decode(&r.json)
	}
	return r
}

// TestOpenAPIResponses drives every documented billing and admin operation
// against the real handlers (Redis, stripe-mock, signed webhooks) and
// validates each request and response against api/openapi.json.
func TestOpenAPIResponses(t *testing.T) {
	e := newEnv(t, envOptions{stripe: true, plans: testPlans, adjustOpts: func(o *Options) {
		o.Books = fakeBooks{BooksStatus{Accounts: 1, Entries: 2, LastShipped: time.Now()}}
	}})
	e.stripe.onResponse(succeedPayments)
	c := newOASClient(t, e)
	want := func(r response, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
		}
	}
	admin := testAdminToken

	for _, p := range []string{"/healthz", "/readyz", "/openapi.json", "/console/", "/console/config.json", "/v1/billing/packs"} {
		want(c.do("GET", p, "", nil), http.StatusOK)
	}

	// Admin.
	want(c.do("POST", "/admin/v1/accounts", admin, map[string]any{"id": "oas"}), http.StatusCreated)
	want(c.do("POST", "/admin/v1/accounts", admin, map[string]any{"id": "oas"}), http.StatusConflict)
	want(c.do("GET", "/admin/v1/accounts/oas", admin, nil), http.StatusOK)
	want(c.do("GET", "/admin/v1/accounts/nobody", admin, nil), http.StatusNotFound)
	want(c.do("GET", "/admin/v1/accounts/oas", "wrong", nil), http.StatusUnauthorized)
	want(c.do("POST", "/admin/v1/accounts/oas/credits", admin, map[string]any{"credits": 100, "reference": "r1", "description": "seed"}), http.StatusOK)
	want(c.do("POST", "/admin/v1/accounts/oas/credits", admin, map[string]any{"credits": "0.5", "reference": "r2"}), http.StatusOK)
	want(c.do("POST", "/admin/v1/accounts/oas/credits", admin, map[string]any{"credits": 0, "reference": "r3"}), http.StatusBadRequest)
	k := c.do("POST", "/admin/v1/accounts/oas/keys", admin, map[string]any{"name": "ops", "credit_limit": 5})
	want(k, http.StatusCreated)
	want(c.do("GET", "/admin/v1/accounts/oas/keys", admin, nil), http.StatusOK)
	want(c.do("PATCH", "/admin/v1/accounts/oas/keys/"+k.str("id"), admin, map[string]any{
		"budget": map[string]any{"credits": "25", "period": "day"}, "models": []string{"gpt-4o-mini"},
		"expires_at": "2099-01-01T00:00:00Z", "rpm": 60, "tpm": 100000, "max_parallel": 4}), http.StatusOK)
	want(c.do("PATCH", "/admin/v1/accounts/oas/keys/"+k.str("id"), admin, map[string]any{"rpm": 0}), http.StatusBadRequest)
	want(c.do("GET", "/admin/v1/accounts/oas/keys", admin, nil), http.StatusOK)
	want(c.do("DELETE", "/admin/v1/accounts/oas/keys/"+k.str("id"), admin, nil), http.StatusNoContent)

	// The customer's API.
	tok := e.token("oas", nil)
	want(c.do("GET", "/v1/api-credits", tok, nil), http.StatusOK)
	want(c.do("GET", "/v1/api-credits", "", nil), http.StatusUnauthorized)
	own := c.do("POST", "/v1/keys", tok, map[string]any{"name": "mine"})
	want(own, http.StatusCreated)
	want(c.do("GET", "/v1/keys", tok, nil), http.StatusOK)
	want(c.do("PATCH", "/v1/keys/"+own.str("id"), tok, map[string]any{"name": "renamed", "budget": nil, "rpm": 10}), http.StatusOK)
	want(c.do("PATCH", "/v1/keys/"+own.str("id")+"x", tok, map[string]any{"name": "x"}), http.StatusNotFound)
	want(c.do("DELETE", "/v1/keys/"+own.str("id"), tok, nil), http.StatusNoContent)
	want(c.do("DELETE", "/v1/keys/"+own.str("id")+"x", tok, nil), http.StatusNotFound)
	// Teams.
	want(c.do("POST", "/v1/members", tok, map[string]any{"user": "oas-dev", "role": "member"}), http.StatusCreated)
	want(c.do("POST", "/v1/members", tok, map[string]any{"user": "oas-dev", "role": "admin",
		"budget": map[string]any{"credits": 50, "period": "week"}}), http.StatusOK)
	want(c.do("POST", "/v1/members", tok, map[string]any{"user": "oas-dev", "role": "root"}), http.StatusBadRequest)
	want(c.do("GET", "/v1/members", tok, nil), http.StatusOK)
	want(c.do("PATCH", "/v1/members/oas-dev", tok, map[string]any{"role": "billing"}), http.StatusOK)
	want(c.do("PATCH", "/v1/members/oas-dev", tok, map[string]any{"budget": nil}), http.StatusOK)
	want(c.do("PATCH", "/v1/members/oas-nobody", tok, map[string]any{"role": "member"}), http.StatusNotFound)
	want(c.do("PATCH", "/v1/members/oas-dev", tok, map[string]any{}), http.StatusBadRequest)
	want(c.do("GET", "/v1/members", e.memberToken("stranger", "oas"), nil), http.StatusForbidden)
	want(c.do("DELETE", "/v1/members/oas-dev", tok, nil), http.StatusNoContent)
	want(c.do("DELETE", "/v1/members/oas", tok, nil), http.StatusConflict)
	want(c.do("GET", "/v1/audit?limit=5", tok, nil), http.StatusOK)
	want(c.do("GET", "/v1/me", tok, nil), http.StatusOK)
	want(c.do("GET", "/v1/me", e.memberToken("stranger", "oas"), nil), http.StatusForbidden)
	co := c.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "growth"})
	want(co, http.StatusOK)
	want(c.do("POST", "/v1/billing/checkout", tok, map[string]any{"pack": "nope"}), http.StatusBadRequest)
	pack, _ := e.catalog.Pack("growth")
	paid := teststripe.Event("evt_oas_1", "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
		ID: co.str("id"), Account: "oas", Pack: "growth", AmountTotal: pack.PriceMinor, Currency: pack.Currency, PaymentIntent: "pi_oas_1"}))
	want(c.do("POST", "/v1/billing/webhook", "", paid, "Stripe-Signature", teststripe.Sign(paid, testWebhookSecret, time.Now())), http.StatusOK)
	want(c.do("POST", "/v1/billing/webhook", "", paid, "Stripe-Signature", "t=1,v1=bad"), http.StatusBadRequest)
	h := c.do("GET", "/v1/billing/history?limit=1", tok, nil)
	want(h, http.StatusOK)
	if len(h.list()) != 1 {
		t.Fatalf("history: %s", h.raw)
	}
	want(c.do("GET", "/admin/v1/accounts/oas/ledger?limit=2", admin, nil), http.StatusOK)
	want(c.do("GET", "/admin/v1/books", admin, nil), http.StatusOK)
	want(c.do("POST", "/admin/v1/promo-codes", admin, map[string]any{"code": "OAS", "credits": "10.5", "max_redemptions": 5,
		"expires_at": "2099-01-01T00:00:00Z", "grant_expires_in": "720h"}), http.StatusCreated)
	want(c.do("POST", "/admin/v1/promo-codes", admin, map[string]any{"code": "OAS", "credits": 1}), http.StatusConflict)
	want(c.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "OAS"}), http.StatusOK)
	want(c.do("POST", "/v1/billing/redeem", tok, map[string]any{"code": "OAS"}), http.StatusConflict)
	if r := c.do("GET", "/admin/v1/promo-codes/OAS", admin, nil); r.status != http.StatusOK || r.num("redeemed") != "1" {
		t.Fatalf("promo code: %d %s", r.status, r.raw)
	}
	want(c.do("GET", "/admin/v1/promo-codes/NOPE", admin, nil), http.StatusNotFound)
	want(c.do("GET", "/v1/billing/history?starting_after=nope", tok, nil), http.StatusBadRequest)

	// Credits, usage and plans.
	e.spend("oas", "call-1", 1234)
	d := c.do("GET", "/api/billing/usage/daily?days=7", tok, nil)
	want(d, http.StatusOK)
	if len(d.list()) != 1 {
		t.Fatalf("daily usage: %s", d.raw)
	}
	want(c.do("GET", "/api/billing/usage/daily?days=99", tok, nil), http.StatusBadRequest)
	x := c.do("GET", "/api/billing/usage/export?granularity=day", tok, nil)
	want(x, http.StatusOK)
	if !strings.HasPrefix(x.raw, "date,model,requests,input_tokens,output_tokens,credits\n") || strings.Count(x.raw, "\n") != 2 {
		t.Fatalf("usage export: %q", x.raw)
	}
	want(c.do("GET", "/api/billing/usage/export?granularity=hour", tok, nil), http.StatusBadRequest)
	want(c.do("GET", "/api/billing/credits?limit=2", tok, nil), http.StatusOK)
	want(c.do("PUT", "/api/billing/credits/alerts", tok, map[string]any{"lowBalance": "5"}), http.StatusOK)
	want(c.do("PUT", "/api/billing/credits/alerts", tok, map[string]any{"lowBalance": -1}), http.StatusBadRequest)
	want(c.do("GET", "/api/billing/credits?limit=2", tok, nil), http.StatusOK)
	want(c.do("GET", "/admin/v1/webhooks/deliveries?limit=5", admin, nil), http.StatusOK)
	want(c.do("PUT", "/api/billing/credits/auto-recharge", tok, map[string]any{"enabled": true, "threshold": 100, "packId": "starter", "spendingLimit": 5000}), http.StatusOK)
	e.customerFor("oas")
	want(c.do("POST", "/api/billing/credits/purchase", tok, map[string]any{"packId": "starter"}), http.StatusOK)
	want(c.do("GET", "/api/billing/usage", tok, nil), http.StatusOK)
	want(c.do("POST", "/api/billing/checkout", tok, map[string]any{"planId": "pro", "seats": 2}), http.StatusOK)
	want(c.do("POST", "/api/billing/checkout", tok, map[string]any{"planId": "pro", "successUrl": "https://evil.example/"}), http.StatusBadRequest)
	want(c.do("POST", "/api/billing/cancel", tok, nil), http.StatusNotFound)
	now := time.Now()
	e.deliverOK(subscriptionEvent("evt_oas_sub", "customer.subscription.created", "sub_oas", "cus_oas", "oas", "price_pro",
		2, "active", now.Add(-time.Hour), now.Add(24*time.Hour), false))
	want(c.do("GET", "/api/billing/usage", tok, nil), http.StatusOK)
	want(c.do("POST", "/api/billing/portal", tok, nil), http.StatusOK)
	want(c.do("POST", "/api/billing/portal", tok, map[string]any{"returnUrl": "http://app.example/settings"}), http.StatusOK)
	want(c.do("POST", "/api/billing/cancel", tok, nil), http.StatusOK)

	// Every documented billing and admin operation answered at least once
	// with a 2xx that matched the document.
	for _, opID := range billingOps(loadDoc(t)) {
		if c.covered[opID] == 0 {
			t.Errorf("operation %s was not exercised with a successful response", opID)
		}
	}
}
