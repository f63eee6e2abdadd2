// Package testjwt builds JSON Web Tokens for tests: signed ones, and the
// unsigned ("alg": "none") tokens an attacker would send.
package testjwt

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// Sign returns claims signed with m and key.
func Sign(tb testing.TB, m jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Unsigned returns claims as an "alg": "none" token with an empty signature.
func Unsigned(claims jwt.MapClaims) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}
