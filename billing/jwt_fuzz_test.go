package billing

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/testjwt"
	"github.com/tollgate/tollgate/metering"
)

const (
	fuzzSecret   = "fuzz-jwt-secret-0123456789abcdef-0123456789"
	fuzzIssuer   = "https://fuzz.example"
	fuzzAudience = "tollgate-fuzz"
)

// FuzzJWT feeds arbitrary tokens to the billing API's verifiers (HS256 with a
// secret, RS256 with a public key). No input may panic, and a token is
// accepted only when an independent verification — the one algorithm the key
// allows, exp required, issuer and audience — accepts it too and it names a
// valid account id: no alg none, no algorithm confusion, no expired or
// foreign token gets through, however it is mangled.
func FuzzJWT(f *testing.F) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keyFile := filepath.Join(f.TempDir(), "pub.pem")
	if err := os.WriteFile(keyFile, pubPEM, 0o600); err != nil {
		f.Fatal(err)
	}
	hs, err := newJWTVerifier(config.JWT{Secret: fuzzSecret, Issuer: fuzzIssuer, Audience: fuzzAudience, AccountClaim: "sub"})
	if err != nil {
		f.Fatal(err)
	}
	rs, err := newJWTVerifier(config.JWT{PublicKeyFile: keyFile, Issuer: fuzzIssuer, Audience: fuzzAudience, AccountClaim: "sub"})
	if err != nil {
		f.Fatal(err)
	}

	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "acme", "iss": fuzzIssuer, "aud": fuzzAudience, "exp": time.Now().Add(time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, c jwt.MapClaims, key any) string { return testjwt.Sign(f, m, c, key) }
	none := testjwt.Unsigned
	good := sign(jwt.SigningMethodHS256, claims(nil), []byte(fuzzSecret))
	for _, seed := range []string{
		good,
		sign(jwt.SigningMethodRS256, claims(nil), priv),
		sign(jwt.SigningMethodHS256, claims(nil), pubPEM), // algorithm confusion
		sign(jwt.SigningMethodHS512, claims(nil), []byte(fuzzSecret)),
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), []byte(fuzzSecret)),
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["aud"] = []any{"x", fuzzAudience} }), []byte(fuzzSecret)),
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["sub"] = "a}{b" }), []byte(fuzzSecret)),
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["exp"] = 1e300 }), []byte(fuzzSecret)),
		// Teams: a member acting for an account, and the claim mangled.
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["account"] = "team" }), []byte(fuzzSecret)),
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["account"] = []any{"team"} }), []byte(fuzzSecret)),
		sign(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["account"] = "team"; delete(c, "sub") }), []byte(fuzzSecret)),
		none(claims(func(c jwt.MapClaims) { c["account"] = "team" })),
		none(claims(nil)),
		strings.Replace(good, ".", "..", 1),
		good[:len(good)-1],
		"", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer " + good,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		for _, v := range []struct {
			name   string
			ver    *jwtVerifier
			method jwt.SigningMethod
			key    any
		}{
			{"HS256", hs, jwt.SigningMethodHS256, []byte(fuzzSecret)},
			{"RS256", rs, jwt.SigningMethodRS256, &priv.PublicKey},
		} {
			acct, usr, err := v.ver.account(token)
			if err != nil {
				continue
			}
			if !metering.ValidAccountID(acct) || !metering.ValidAccountID(usr) {
				t.Fatalf("%s verifier accepted account %q", v.name, acct)
			}
			_, err = jwt.Parse(token, func(*jwt.Token) (any, error) { return v.key, nil },
				jwt.WithValidMethods([]string{v.method.Alg()}), jwt.WithExpirationRequired(),
				jwt.WithIssuer(fuzzIssuer), jwt.WithAudience(fuzzAudience), jwt.WithLeeway(jwtLeeway))
			if err != nil {
				t.Fatalf("%s verifier accepted a token an independent %s check refuses (%v): %q", v.name, v.method.Alg(), err, token)
			}
		}
	})
}
