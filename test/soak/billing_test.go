package soak

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/testjwt"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/internal/teststripe"
	"github.com/tollgate/tollgate/metering"
)

const (
	soakJWTSecret  = "soak-jwt-secret-0123456789abcdef-0123456789"
	soakIssuer     = "https://app.soak.example"
	soakAudience   = "tollgate-soak"
	soakWebhookKey = "whsec_soak_0123456789abcdef"
)

// startBilling starts a `tollgate billing` process on rs with extra env.
func startBilling(t *testing.T, name string, rs *testredis.Server, env ...string) *proc {
	t.Helper()
	return startProc(t, "billing", name, writeConfig(t, nil), procEnv("http://127.0.0.1:9/v1", append([]string{"REDIS_URL=" + rs.URL()}, env...)...))
}

// TestHostileJWT: the billing process refuses every token it must not
// trust — alg none, algorithm confusion (HS256 keyed with the RSA public
// key), a wrong key, expired, not yet valid, wrong audience or issuer, no
// expiry, absurdly long — with one and the same 401, creates no account for
// them, and keeps serving. billing/jwt_test.go proves the verifier in-process;
// this is the same wall seen from outside, through the shipped configuration.
func TestHostileJWT(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pubFile := filepath.Join(t.TempDir(), "jwt.pem")
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"TOLLGATE_JWT_ISSUER=" + soakIssuer, "TOLLGATE_JWT_AUDIENCE=" + soakAudience}
	hs := startBilling(t, "billing-hs256", rs, append(common, "TOLLGATE_JWT_SECRET="+soakJWTSecret)...)
	rsProc := startBilling(t, "billing-rs256", rs, append(common, "TOLLGATE_JWT_PUBLIC_KEY_FILE="+pubFile)...)

	claims := func(sub string, edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": sub, "iss": soakIssuer, "aud": soakAudience, "exp": time.Now().Add(time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, c jwt.MapClaims, key any) string { return testjwt.Sign(t, m, c, key) }
	none := testjwt.Unsigned
	secret := []byte(soakJWTSecret)
	get := func(p *proc, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, p.URL+"/v1/api-credits", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = fmt.Fprint(&b, jsonBody(resp))
		return resp.StatusCode, b.String()
	}
	cases := []struct {
		name  string
		p     *proc
		token string
	}{
		{"alg none (HS256 server)", hs, none(claims("jwt-none", nil))},
		{"alg none (RS256 server)", rsProc, none(claims("jwt-none", nil))},
		{"HS256 keyed with the RSA public key PEM", rsProc, sign(jwt.SigningMethodHS256, claims("jwt-confused", nil), pubPEM)},
		{"HS256 keyed with the RSA public key DER", rsProc, sign(jwt.SigningMethodHS256, claims("jwt-confused", nil), der)},
		{"RS256 token on the HS256 server", hs, sign(jwt.SigningMethodRS256, claims("jwt-rs-on-hs", nil), priv)},
		{"another secret", hs, sign(jwt.SigningMethodHS256, claims("jwt-other", nil), []byte("another-secret-0123456789abcdef-0123456"))},
		{"expired an hour ago", hs, sign(jwt.SigningMethodHS256, claims("jwt-expired", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), secret)},
		{"expired (RS256)", rsProc, sign(jwt.SigningMethodRS256, claims("jwt-expired", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), priv)},
		{"no expiry", hs, sign(jwt.SigningMethodHS256, claims("jwt-noexp", func(c jwt.MapClaims) { delete(c, "exp") }), secret)},
		{"not yet valid", hs, sign(jwt.SigningMethodHS256, claims("jwt-nbf", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), secret)},
		{"wrong audience", hs, sign(jwt.SigningMethodHS256, claims("jwt-aud", func(c jwt.MapClaims) { c["aud"] = "another-service" }), secret)},
		{"audience list without ours", hs, sign(jwt.SigningMethodHS256, claims("jwt-aud", func(c jwt.MapClaims) { c["aud"] = []string{"a", "b"} }), secret)},
		{"wrong issuer", hs, sign(jwt.SigningMethodHS256, claims("jwt-iss", func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), secret)},
		{"account with a hash-tag brace", hs, sign(jwt.SigningMethodHS256, claims("a}{b", nil), secret)},
		{"16 KB token", hs, sign(jwt.SigningMethodHS256, claims("jwt-big", func(c jwt.MapClaims) { c["pad"] = strings.Repeat("p", 16<<10) }), secret)},
		{"three dots of nothing", hs, ".."},
		{"no token", hs, ""},
	}
	var reference string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.p, tc.token)
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", status, body)
			}
			if tc.token != "" && tc.name != "16 KB token" {
				if reference == "" {
					reference = body
				} else if body != reference {
					t.Errorf("refusal %s differs from %s: it says why", body, reference)
				}
			}
		})
	}
	for _, id := range []string{"jwt-none", "jwt-confused", "jwt-rs-on-hs", "jwt-other", "jwt-expired", "jwt-noexp", "jwt-nbf", "jwt-aud", "jwt-iss", "jwt-big"} {
		if _, err := st.Account(context.Background(), id); err == nil {
			t.Errorf("a refused token created account %q", id)
		}
	}
	// Both still serve, and a good token works on each.
	if s, b := get(hs, sign(jwt.SigningMethodHS256, claims("jwt-good", nil), secret)); s != 200 {
		t.Errorf("a valid HS256 token: %d %s", s, b)
	}
	if s, b := get(rsProc, sign(jwt.SigningMethodRS256, claims("jwt-good", nil), priv)); s != 200 {
		t.Errorf("a valid RS256 token: %d %s", s, b)
	}
	hs.assertAlive(t)
	rsProc.assertAlive(t)
}

func jsonBody(resp *http.Response) string {
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "(not JSON)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestSoakWebhookStorm: 1,000 signed Stripe events (10,000 at full size) for
// 500 purchases — each purchase announced twice, either the same event
// redelivered or checkout.session.async_payment_succeeded after
// checkout.session.completed — shuffled and delivered concurrently to a
// billing process, retried like Stripe on any non-2xx. Every purchase is
// credited exactly once, with the credits it was sold for.
func TestSoakWebhookStorm(t *testing.T) {
	purchases, accounts, workers := 500, 50, 32
	if fullSoak() {
		purchases, accounts = 5000, 500
	}
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	b := startBilling(t, "billing", rs, "STRIPE_WEBHOOK_SECRET="+soakWebhookKey)
	url := b.URL + "/v1/billing/webhook"
	packs := loadPacks(t)
	rng := mrand.New(mrand.NewPCG(seed(t), 7))

	accts := make([]string, accounts)
	for i := range accts {
		accts[i] = fmt.Sprintf("storm-%04d", i)
		if _, err := st.CreateAccount(context.Background(), accts[i]); err != nil {
			t.Fatal(err)
		}
	}
	type sale struct {
		session, account, payment string
		pack                      soakPack
	}
	sales := make([]sale, purchases)
	sold := map[string]int64{}
	var events [][]byte
	for i := range sales {
		s := sale{session: fmt.Sprintf("cs_soak_%05d", i), account: accts[i%accounts], payment: fmt.Sprintf("pi_soak_%05d", i),
			pack: packs[rng.IntN(len(packs))]}
		sales[i] = s
		sold[s.account] += s.pack.credits
		// What checkout records when it sells a pack (billing/checkout.go).
		if err := st.SaveCheckout(context.Background(), metering.Checkout{SessionID: s.session, Account: s.account, Pack: s.pack.key,
			Credits: s.pack.credits, PriceMinor: s.pack.priceMinor, Currency: "usd"}); err != nil {
			t.Fatal(err)
		}
		obj := teststripe.CheckoutSession(teststripe.Session{ID: s.session, Account: s.account, Pack: s.pack.key,
			AmountTotal: s.pack.priceMinor, Currency: "usd", PaymentIntent: s.payment})
		first := teststripe.Event("evt_soak_"+s.session, "checkout.session.completed", obj)
		events = append(events, first)
		if i%2 == 0 {
			events = append(events, first) // Stripe redelivers the same event
		} else {
			events = append(events, teststripe.Event("evt_soak_async_"+s.session, "checkout.session.async_payment_succeeded", obj))
		}
	}
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })

	var (
		retries, failed atomic.Int64
		wg              sync.WaitGroup
		next            = make(chan []byte)
		errMu           sync.Mutex
		errs            []string
	)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range next {
				for attempt := 0; ; attempt++ {
					status, body, err := teststripe.Deliver(url, soakWebhookKey, ev)
					if err == nil && status >= 200 && status < 300 {
						if strings.Contains(body, `"ignored":true`) {
							errMu.Lock()
							errs = append(errs, "a paid checkout was ignored: "+body)
							errMu.Unlock()
						}
						break
					}
					if attempt == 5 {
						failed.Add(1)
						errMu.Lock()
						errs = append(errs, fmt.Sprintf("delivery refused 6 times: %d %s %v", status, body, err))
						errMu.Unlock()
						break
					}
					retries.Add(1)
					time.Sleep(time.Duration(50<<attempt) * time.Millisecond)
				}
			}
		}()
	}
	for _, ev := range events {
		next <- ev
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)

	problems := append([]string(nil), errs...)
	credited := map[string]int{}
	for _, a := range accts {
		ac, entries, inv := ledgerInvariant(st, a)
		problems = append(problems, inv...)
		if ac.Purchased != sold[a] || ac.Balance != sold[a] {
			problems = append(problems, fmt.Sprintf("%s: purchased %d, balance %d; sold %d", a, ac.Purchased, ac.Balance, sold[a]))
		}
		for _, e := range entries {
			credited[e.Reference]++
		}
	}
	for _, s := range sales {
		if n := credited[metering.CheckoutReference(s.session)]; n != 1 {
			problems = append(problems, fmt.Sprintf("%s credited %d times", s.session, n))
		}
	}
	t.Logf("webhook storm: events=%d purchases=%d accounts=%d workers=%d retries=%d refused=%d elapsed=%s ledger_mismatches=%d",
		len(events), purchases, accounts, workers, retries.Load(), failed.Load(), elapsed.Round(time.Millisecond), len(problems))
	for i, p := range problems {
		if i == 30 {
			t.Errorf("… and %d more", len(problems)-30)
			break
		}
		t.Error(p)
	}
	b.assertAlive(t)
}

// soakPack is a credit pack as the shipped catalog sells it.
type soakPack struct {
	key        string
	priceMinor int64
	credits    int64 // mc
}

// loadPacks prices the shipped packs from the file, independently of the
// pricing package: credits = price × credits per minor unit × (10000 − fee) /
// 10000 (docs/architecture.md §3), in mc.
func loadPacks(t testing.TB) []soakPack {
	t.Helper()
	pr := shippedConfig(t)["pricing"].(map[string]any)
	perUSD, fee := int64(pr["credits_per_usd"].(int)), int64(pr["fee_bps"].(int))
	var out []soakPack
	for _, v := range pr["packs"].([]any) {
		m := v.(map[string]any)
		whole, frac, _ := strings.Cut(m["price"].(string), ".")
		var w, f int64
		fmt.Sscan(whole, &w)
		fmt.Sscan(frac, &f)
		minor := w*100 + f
		out = append(out, soakPack{key: m["key"].(string), priceMinor: minor, credits: minor * (perUSD / 100) * (10000 - fee) / 10000 * 1000})
	}
	if len(out) == 0 {
		t.Fatal("no packs in the shipped catalog")
	}
	return out
}
