package billing

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/teststripe"
)

func TestServerBasics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.expect(e.do("GET", "/healthz", "", nil), http.StatusOK, "")
	e.expect(e.do("GET", "/readyz", "", nil), http.StatusOK, "")

	r := e.do("GET", "/v1/nope", "", nil)
	e.expect(r, http.StatusNotFound, "not_found")
	if r.str("error.type") == "" || r.str("error.message") == "" || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("404: %s %v", r.raw, r.header)
	}
	e.expect(e.do("PUT", "/v1/keys", e.token("acme", nil), nil), http.StatusNotFound, "not_found")

	// Errors never carry internal text; the request id ties the log line to the answer.
	e.redis.Stop()
	r = e.do("GET", "/v1/api-credits", e.token("acme", nil), nil)
	e.expect(r, http.StatusServiceUnavailable, "store_unavailable")
	if strings.Contains(r.raw, "127.0.0.1") || strings.Contains(r.raw, "dial") || strings.Contains(r.raw, "redis") {
		t.Fatalf("internal detail in the body: %s", r.raw)
	}
	id := r.header.Get("X-Request-Id")
	logged := e.logs.FilterMessage("request failed").FilterField(stringField("request_id", id))
	if logged.Len() != 1 {
		t.Fatalf("the failure is not logged with request id %q", id)
	}
	e.expect(e.do("GET", "/readyz", "", nil), http.StatusServiceUnavailable, "store_unavailable")
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	pre := func(origin, path string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.http.URL+path, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	res := pre("http://app.example", "/v1/billing/checkout")
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "http://app.example" ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("allowed preflight: %d %v", res.StatusCode, res.Header)
	}
	if res := pre("http://evil.example", "/v1/billing/checkout"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin allowed: %v", res.Header)
	}
	if res := pre("http://app.example", "/v1/billing/webhook"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("the webhook allows browsers: %v", res.Header)
	}
	if res := pre("http://app.example", "/admin/v1/accounts"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("the admin API allows browsers: %v", res.Header)
	}
}

// Older API versions name only the charge of a dispute: the payment is read
// from Stripe.
func TestDisputeWithoutPaymentIntentAsksStripe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stripe: true})
	ev := teststripe.Event("evt_d", "charge.dispute.created", teststripe.Dispute("dp_1", "ch_old", "", 2499, "usd"))
	status, body := e.deliver(ev)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	if n := len(e.stripe.requests("/v1/charges/ch_old")); n != 1 {
		t.Fatalf("the disputed charge was read %d times", n)
	}
}
