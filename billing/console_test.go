package billing

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// The console's settings say which features exist, so that the page asks
// for nothing that would fail.
func TestConsoleConfig(t *testing.T) {
	tests := []struct {
		name string
		o    envOptions
		want string
	}{
		{"everything", envOptions{stripe: true, plans: testPlans},
			`{"auth":true,"payments":true,"admin":true,"returnToConsole":false,"plans":[{"id":"pro","name":"Pro","minSeats":1,"maxSeats":10},{"id":"burst","name":"Burst","minSeats":1,"maxSeats":0}],"books":null,"webhooks":0}`},
		{"no stripe, no admin", envOptions{noAdmin: true},
			`{"auth":true,"payments":false,"admin":false,"returnToConsole":false,"plans":[],"books":null,"webhooks":0}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.o)
			r := e.do("GET", "/console/config.json", "", nil)
			if r.status != http.StatusOK || strings.TrimSpace(r.raw) != tt.want {
				t.Fatalf("config: %d %s\nwant %s", r.status, r.raw, tt.want)
			}
			if csp := r.header.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors http://app.example") {
				t.Fatalf("CSP %q", csp)
			}
		})
	}
	// Endpoints for outgoing events: the operator's deliveries panel knows
	// how many.
	e := newEnv(t, envOptions{adjustOpts: func(o *Options) {
		o.Config.Webhooks = []config.Webhook{{URL: "http://hooks.example/a", Secret: "0123456789abcdef"}, {URL: "http://hooks.example/b", Secret: "0123456789abcdef"}}
	}})
	if r := e.do("GET", "/console/config.json", "", nil); r.status != http.StatusOK || !strings.Contains(r.raw, `"webhooks":2`) {
		t.Fatalf("config with two endpoints: %d %s", r.status, r.raw)
	}
	// The console's own origin among the allowed ones: Checkout may return to it.
	e = newEnv(t, envOptions{adjustOpts: func(o *Options) {
		o.Config.AllowedOrigins = append(o.Config.AllowedOrigins, "http://billing.example")
	}})
	req, _ := http.NewRequest("GET", e.http.URL+"/console/config.json", nil)
	req.Host = "billing.example"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(body), `"returnToConsole":true`) {
		t.Fatalf("config for an allowed console origin: %s", body)
	}
}
