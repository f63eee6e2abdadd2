package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/internal/teststripe"
)

// TestOperatorReferencesOneNamespace: an operator's credit is the same
// credit from the CLI (`tollgate admin credit`) and from the admin API, and
// it never collides with a purchase. A grant whose reference reads
// "checkout:<session>" does not mark that session as credited: the real
// checkout webhook for it still credits the purchase. Operators' grants and
// adjustments never change total_purchased.
func TestOperatorReferencesOneNamespace(t *testing.T) {
	rs := testredis.Start(t)
	sm := teststripe.Start(t)
	const whsec = "whsec_operator_refs"
	jwtSecret, admin := strings.Repeat("j", 40), strings.Repeat("a", 40)
	t.Setenv("REDIS_URL", rs.URL())
	t.Setenv("STRIPE_SECRET_KEY", teststripe.SecretKey)
	t.Setenv("STRIPE_WEBHOOK_SECRET", whsec)
	t.Setenv("STRIPE_API_BASE", sm.URL)
	t.Setenv("TOLLGATE_JWT_SECRET", jwtSecret)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", admin)
	t.Setenv("TOLLGATE_PUBLIC_URL", "https://app.example.com")
	baddr := freeAddr(t)
	start(t, "billing", "--config", "../../configs/tollgate.yaml", "--addr", baddr)
	B := "http://" + baddr
	waitHTTP(t, B+"/healthz")

	// Each entry point credits once per reference and says whether it applied.
	cli := func(t *testing.T, account, credits, ref string) bool {
		t.Helper()
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"admin", "--config", "../../configs/tollgate.yaml", "credit", account, credits, ref}, &out, &errb)
		var res struct{ Applied bool }
		if err != nil || json.Unmarshal(out.Bytes(), &res) != nil {
			t.Fatalf("tollgate admin credit %s %s %s: %v\n%s%s", account, credits, ref, err, out.String(), errb.String())
		}
		return res.Applied
	}
	api := func(t *testing.T, account, credits, ref string) bool {
		t.Helper()
		st, _, m := call(t, "POST", B+"/admin/v1/accounts/"+account+"/credits", admin, `{"credits":`+credits+`,"reference":"`+ref+`"}`)
		if st != 200 {
			t.Fatalf("admin API credit %s %s %s: %d %v", account, credits, ref, st, m)
		}
		return m["applied"] == true
	}
	const growth = 2374050.0
	for _, tt := range []struct {
		name         string
		credit, also func(t *testing.T, account, credits, ref string) bool
	}{
		{"cli", cli, api},
		{"admin api", api, cli},
	} {
		t.Run(tt.name, func(t *testing.T) {
			account := "buyer-" + strings.ReplaceAll(tt.name, " ", "-")
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
				"sub": account, "exp": time.Now().Add(time.Hour).Unix(),
			}).SignedString([]byte(jwtSecret))
			if err != nil {
				t.Fatal(err)
			}
			st, _, co := call(t, "POST", B+"/v1/billing/checkout", tok, `{"pack":"growth"}`)
			session, _ := co["id"].(string)
			if st != 200 || session == "" {
				t.Fatalf("checkout: %d %v", st, co)
			}

			if !tt.credit(t, account, "5", "checkout:"+session) {
				t.Fatal("the grant was not applied")
			}
			ev := teststripe.Event("evt_"+account, "checkout.session.completed", teststripe.CheckoutSession(teststripe.Session{
				ID: session, Account: account, Pack: "growth", AmountTotal: 2499, PaymentIntent: "pi_" + account,
			}))
			if status, body, err := teststripe.Deliver(B+"/v1/billing/webhook", whsec, ev); err != nil || status != 200 {
				t.Fatalf("webhook: %d %s %v", status, body, err)
			}
			credits := func() map[string]any {
				_, _, cr := call(t, "GET", B+"/v1/api-credits", tok, "")
				return cr
			}
			if cr := credits(); cr["balance"] != growth+5 || cr["total_purchased"] != growth {
				t.Fatalf("after a grant under the session's reference and the session's webhook: %v; want the purchase credited", cr)
			}
			// One namespace: the same reference from the other entry point is the same credit.
			if tt.also(t, account, "5", "checkout:"+session) {
				t.Fatal("the same operator reference was applied twice through two entry points")
			}
			if !tt.credit(t, account, "-1.5", "fix-1") || tt.also(t, account, "-1.5", "fix-1") {
				t.Fatal("the adjustment was not applied once")
			}
			cr := credits()
			for f, want := range map[string]float64{
				"balance": growth + 5 - 1.5, "total_purchased": growth, "total_granted": 5, "total_adjusted": -1.5,
			} {
				if cr[f] != want {
					t.Errorf("%s = %v, want %v: %v", f, cr[f], want, cr)
				}
			}
			var out bytes.Buffer
			if err := run(context.Background(), []string{"admin", "--config", "../../configs/tollgate.yaml", "account", "show", account}, &out, &out); err != nil {
				t.Fatalf("account show: %v\n%s", err, out.String())
			}
			var shown map[string]string
			if err := json.Unmarshal(out.Bytes(), &shown); err != nil || shown["total_purchased"] != "2374050.000" ||
				shown["total_granted"] != "5.000" || shown["total_adjusted"] != "-1.500" {
				t.Fatalf("account show: %v %s", err, out.String())
			}
		})
	}
}
