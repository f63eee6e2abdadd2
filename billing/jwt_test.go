package billing

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testjwt"
)

// writePEM writes a public key (or any DER) as a PEM file and returns its path.
func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func publicPEM(t *testing.T, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := writePEM(t, "PUBLIC KEY", der)
	data, _ := os.ReadFile(path)
	return path, data
}

func claims(account string) jwt.MapClaims {
	return jwt.MapClaims{"sub": account, "iss": testIssuer, "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix()}
}

var (
	sign     = testjwt.Sign
	unsigned = testjwt.Unsigned
)

// expectSameRefusal requires every token to get a 401 whose body is exactly
// the reference refusal: nothing says why.
func expectSameRefusal(t *testing.T, e *env, tokens map[string]string) {
	t.Helper()
	var reference string
	for name, tok := range tokens {
		for _, path := range []string{"/v1/api-credits", "/v1/keys", "/v1/billing/history"} {
			r := e.do("GET", path, tok, nil)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s on %s: status %d: %s", name, path, r.status, r.raw)
				continue
			}
			if reference == "" {
				reference = r.raw
			}
			if r.raw != reference {
				t.Errorf("%s on %s: body %s differs from %s", name, path, r.raw, reference)
			}
		}
	}
	if !strings.Contains(reference, `"code":"invalid_token"`) || !strings.Contains(reference, "invalid or expired token") {
		t.Fatalf("refusal body %s", reference)
	}
}

func TestJWTRefusalsHS256(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	secret := []byte(testJWTSecret)
	with := func(edit func(jwt.MapClaims)) jwt.MapClaims { c := claims("acme"); edit(c); return c }
	expectSameRefusal(t, e, map[string]string{
		"expired":                sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), secret),
		"no exp":                 sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "exp") }), secret),
		"not yet valid":          sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), secret),
		"wrong issuer":           sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), secret),
		"no issuer":              sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "iss") }), secret),
		"wrong audience":         sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["aud"] = "other-service" }), secret),
		"other secret":           sign(t, jwt.SigningMethodHS256, claims("acme"), []byte("another-secret-0123456789abcdef-0123")),
		"HS512 not in allowlist": sign(t, jwt.SigningMethodHS512, claims("acme"), secret),
		"alg none":               unsigned(claims("acme")),
		"garbage":                "not.a.jwt",
		"bad account id":         sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = "a{b}" }), secret),
		"account not a string":   sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = 42 }), secret),
		"tampered payload": func() string {
			tok := sign(t, jwt.SigningMethodHS256, claims("acme"), secret)
			parts := strings.Split(tok, ".")
			p, _ := json.Marshal(claims("victim"))
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
		}(),
	})
	// No refused token created an account.
	for _, id := range []string{"acme", "victim", "a{b}"} {
		if _, err := e.store.Account(t.Context(), id); err == nil {
			t.Errorf("a refused token created account %q", id)
		}
	}
	// A token expired 10 s ago is within the 30 s clock-skew leeway.
	e.expect(e.do("GET", "/v1/api-credits", e.token("acme", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }), nil), http.StatusOK, "")
}

func TestJWTRefusalsRS256(t *testing.T) {
	t.Parallel()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path, pubPEM := publicPEM(t, &priv.PublicKey)
	e := newEnv(t, envOptions{jwt: &config.JWT{PublicKeyFile: path, Issuer: testIssuer, Audience: testAudience, AccountClaim: "sub"}})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	expired := claims("acme")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	expectSameRefusal(t, e, map[string]string{
		// The classic confusion: HS256 keyed with the RSA public key's bytes.
		"HS256 signed with the public key PEM": sign(t, jwt.SigningMethodHS256, claims("acme"), pubPEM),
		"HS256 signed with the public key DER": func() string {
			der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
			return sign(t, jwt.SigningMethodHS256, claims("acme"), der)
		}(),
		"alg none":               unsigned(claims("acme")),
		"another RSA key":        sign(t, jwt.SigningMethodRS256, claims("acme"), other),
		"expired":                sign(t, jwt.SigningMethodRS256, expired, priv),
		"PS256 not in allowlist": sign(t, jwt.SigningMethodPS256, claims("acme"), priv),
	})
	r := e.do("GET", "/v1/api-credits", sign(t, jwt.SigningMethodRS256, claims("acme"), priv), nil)
	e.expect(r, http.StatusOK, "")
	if r.str("account") != "acme" {
		t.Fatalf("RS256 token: %s", r.raw)
	}
}

func TestJWTOtherKeyKinds(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPath, _ := publicPEM(t, &ec.PublicKey)
	edPath, _ := publicPEM(t, edPub)
	for name, c := range map[string]struct {
		path   string
		method jwt.SigningMethod
		key    any
	}{
		"ES256": {ecPath, jwt.SigningMethodES256, ec},
		"EdDSA": {edPath, jwt.SigningMethodEdDSA, edPriv},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{jwt: &config.JWT{PublicKeyFile: c.path, AccountClaim: "account_id"}})
			cl := jwt.MapClaims{"account_id": "team-7", "sub": "user-1", "exp": time.Now().Add(time.Hour).Unix()}
			r := e.do("GET", "/v1/api-credits", sign(t, c.method, cl, c.key), nil)
			e.expect(r, http.StatusOK, "")
			if r.str("account") != "team-7" {
				t.Fatalf("account from the configured claim: %s", r.raw)
			}
			e.expect(e.do("GET", "/v1/api-credits", unsigned(cl), nil), http.StatusUnauthorized, "invalid_token")
		})
	}
}

func TestJWTAccountCreatedOnFirstUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	if _, err := e.store.Account(t.Context(), "newcomer"); err == nil {
		t.Fatal("account exists before first use")
	}
	r := e.do("GET", "/v1/api-credits", e.token("newcomer", nil), nil)
	e.expect(r, http.StatusOK, "")
	if r.num("balance") != "0.000" || r.num("total_purchased") != "0.000" || r.num("total_consumed") != "0.000" {
		t.Fatalf("first use: %s", r.raw)
	}
	e.account("newcomer")
}

func TestAPIKeyRefusedOnBillingAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.expect(e.admin("POST", "/admin/v1/accounts", map[string]any{"id": "acme"}), http.StatusCreated, "")
	key := e.admin("POST", "/admin/v1/accounts/acme/keys", map[string]any{"name": "ci"}).str("key")
	for _, path := range []string{"/v1/api-credits", "/v1/keys", "/v1/billing/history"} {
		r := e.do("GET", path, key, nil)
		e.expect(r, http.StatusUnauthorized, "api_key_not_accepted")
		if !strings.Contains(r.str("error.message"), "JWT") {
			t.Errorf("%s: message does not say what to send: %s", path, r.raw)
		}
	}
	e.expect(e.do("GET", "/v1/api-credits", "", nil), http.StatusUnauthorized, "invalid_token")
}

// A valid token for another account sees only its own (empty) account, and
// cannot touch this account's keys.
func TestJWTAccountIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, mallory := e.token("alice", nil), e.token("mallory", nil)
	p := e.sell("alice", "cs_alice", "growth")
	e.paid("evt_alice", "alice", "cs_alice", "pi_alice", p)
	key := e.do("POST", "/v1/keys", alice, map[string]any{"name": "prod"})
	e.expect(key, http.StatusCreated, "")

	r := e.do("GET", "/v1/api-credits", mallory, nil)
	if r.str("account") != "mallory" || r.num("balance") != "0.000" {
		t.Fatalf("mallory sees %s", r.raw)
	}
	if r := e.do("GET", "/v1/billing/history", mallory, nil); len(r.list()) != 0 {
		t.Fatalf("mallory sees history %s", r.raw)
	}
	if r := e.do("GET", "/v1/keys", mallory, nil); len(r.list()) != 0 {
		t.Fatalf("mallory sees keys %s", r.raw)
	}
	e.expect(e.do("DELETE", "/v1/keys/"+key.str("id"), mallory, nil), http.StatusNotFound, "key_not_found")
	r = e.do("GET", "/v1/keys", alice, nil)
	if len(r.list()) != 1 || r.get("data.0.revoked") != false {
		t.Fatalf("alice's key after mallory's attempt: %s", r.raw)
	}
	// A token whose claim names alice but signed by someone else is refused.
	forged := sign(t, jwt.SigningMethodHS256, claims("alice"), []byte("mallory-secret-0123456789abcdef-0123"))
	e.expect(e.do("GET", "/v1/api-credits", forged, nil), http.StatusUnauthorized, "invalid_token")
}

func TestJWTConfigRefusedAtStart(t *testing.T) {
	t.Parallel()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPath, _ := publicPEM(t, &rsaKey.PublicKey)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPath, _ := publicPEM(t, &small.PublicKey)
	privPath := writePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))
	long := strings.Repeat("s", 32)
	for name, cfg := range map[string]config.JWT{
		"short secret":         {Secret: "too-short"},
		"secret and key":       {Secret: long, PublicKeyFile: rsaPath},
		"none allowed":         {Secret: long, Algorithms: []string{"none"}},
		"HS with a public key": {PublicKeyFile: rsaPath, Algorithms: []string{"HS256"}},
		"RS with a secret":     {Secret: long, Algorithms: []string{"RS256"}},
		"small RSA key":        {PublicKeyFile: smallPath},
		"private key file":     {PublicKeyFile: privPath},
		"missing key file":     {PublicKeyFile: filepath.Join(t.TempDir(), "nope.pem")},
	} {
		if _, err := newJWTVerifier(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if v, err := newJWTVerifier(config.JWT{}); v != nil || err != nil {
		t.Fatalf("no JWT config: %v %v", v, err)
	}
}
