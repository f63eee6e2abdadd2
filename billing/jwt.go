package billing

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
)

const (
	// jwtLeeway absorbs clock skew between the app that issues tokens and us.
	jwtLeeway = 30 * time.Second
	// maxTokenLen refuses absurd tokens before any parsing.
	maxTokenLen = 8 << 10
	// minHMACSecret: RFC 7518 §3.2 requires an HS256 key of at least 256 bits.
	minHMACSecret = 32
)

// jwtVerifier checks the app's tokens: one key, an explicit algorithm
// allowlist that matches the key's kind, exp required, iss/aud when configured.
type jwtVerifier struct {
	parser *jwt.Parser
	key    any // []byte for HMAC; *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	claim  string
	member string // the claim naming the account a member acts for
}

// userIDsAreAccountIDs: the account claim is sub, so a user's id and its own
// account's id are one (the same person); otherwise they are two namespaces
// and an account's id says nothing about a user.
func (v *jwtVerifier) userIDsAreAccountIDs() bool { return v.claim == "sub" }

// newJWTVerifier builds the verifier from config; nil (and no error) when no
// key is configured.
func newJWTVerifier(cfg config.JWT) (*jwtVerifier, error) {
	const path = "billing.jwt"
	if cfg.Secret == "" && cfg.PublicKeyFile == "" {
		return nil, nil
	}
	if cfg.Secret != "" && cfg.PublicKeyFile != "" {
		return nil, fmt.Errorf("%s: set either secret (HS256) or public_key_file (RS256/ES256/EdDSA), not both", path)
	}
	v := &jwtVerifier{claim: cfg.AccountClaim, member: cfg.MemberClaim}
	if v.claim == "" {
		v.claim = "sub"
	}
	if v.member == "" {
		v.member = "account"
	}
	if v.member == v.claim {
		return nil, fmt.Errorf("%s.member_claim: %q is also the account_claim; name another claim", path, v.member)
	}
	var allowed map[string]bool
	var defaults []string
	if cfg.Secret != "" {
		if len(cfg.Secret) < minHMACSecret {
			return nil, fmt.Errorf("%s.secret: must be at least %d bytes for HS256 (got %d)", path, minHMACSecret, len(cfg.Secret))
		}
		v.key = []byte(cfg.Secret)
		allowed, defaults = set("HS256", "HS384", "HS512"), []string{"HS256"}
	} else {
		key, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.public_key_file: %w", path, err)
		}
		v.key = key
		switch k := key.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("%s.public_key_file: RSA key of %d bits; at least 2048 required", path, k.N.BitLen())
			}
			allowed, defaults = set("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), []string{"RS256"}
		case *ecdsa.PublicKey:
			alg, ok := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[k.Curve]
			if !ok {
				return nil, fmt.Errorf("%s.public_key_file: unsupported elliptic curve", path)
			}
			allowed, defaults = set(alg), []string{alg}
		case ed25519.PublicKey:
			allowed, defaults = set("EdDSA"), []string{"EdDSA"}
		default:
			return nil, fmt.Errorf("%s.public_key_file: unsupported key type %T", path, key)
		}
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = defaults
	}
	for _, a := range algs {
		if !allowed[a] {
			return nil, fmt.Errorf("%s.algorithms: %q cannot be used with the configured key (allowed: %s)", path, a, strings.Join(sortedSet(allowed), ", "))
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(jwtLeeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// account verifies token and returns the account it acts for and the user
// acting. With the member claim (billing.jwt.member_claim) the account is
// the claim's and the user is sub (a member, checked by the caller);
// without it the account is the account claim's, as ever, and the user is
// the account itself (its owner). Every failure is the same
// errInvalidToken (the reason is for the log only), but for a member token
// whose sub is the account's id when the account claim is not sub
// (errNotMember: user and account ids are then different namespaces, and
// only the account's own token is its seeded owner).
func (v *jwtVerifier) account(token string) (account, user string, err error) {
	if len(token) > maxTokenLen {
		return "", "", fmt.Errorf("token of %d bytes: %w", len(token), errInvalidToken)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.keyFunc); err != nil {
		return "", "", fmt.Errorf("%w: %w", errInvalidToken, err)
	}
	if m, ok := claims[v.member]; ok && m != nil {
		acct, _ := m.(string)
		sub, _ := claims["sub"].(string)
		if !metering.ValidAccountID(acct) || !metering.ValidAccountID(sub) {
			return "", "", fmt.Errorf("claims %q and sub must be valid ids: %w", v.member, errInvalidToken)
		}
		if sub == acct && !v.userIDsAreAccountIDs() {
			// The account's own id is its first owner (metering's seed),
			// which stands for the account's own token: a user whose sub
			// merely equals the id is not it.
			return "", "", errNotMember
		}
		return acct, sub, nil
	}
	acct, _ := claims[v.claim].(string)
	if !metering.ValidAccountID(acct) {
		return "", "", fmt.Errorf("claim %q is not a valid account id: %w", v.claim, errInvalidToken)
	}
	return acct, acct, nil
}

// keyFunc hands out the one key, and only for a method of its own kind (the
// parser has already checked the allowlist; this guards it twice).
func (v *jwtVerifier) keyFunc(t *jwt.Token) (any, error) {
	var ok bool
	switch v.key.(type) {
	case []byte:
		_, ok = t.Method.(*jwt.SigningMethodHMAC)
	case *rsa.PublicKey:
		switch t.Method.(type) {
		case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
			ok = true
		}
	case *ecdsa.PublicKey:
		_, ok = t.Method.(*jwt.SigningMethodECDSA)
	case ed25519.PublicKey:
		_, ok = t.Method.(*jwt.SigningMethodEd25519)
	}
	if !ok {
		return nil, errors.New("signing method does not match the key")
	}
	return v.key, nil
}

func readPublicKey(file string) (any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a public key (a private key must never be configured here)", block.Type)
}

// bearer returns the credentials of an Authorization: Bearer header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// userHandler is a handler of the public API, called with the authenticated account.
type userHandler func(w http.ResponseWriter, r *http.Request, account string) error

// user authenticates the caller's JWT, checks that the caller may use the
// route (authorize, authz.go), creates its account on first use, and calls h
// with it.
func (s *Server) user(h userHandler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if s.jwt == nil {
			return errJWTOff
		}
		token := bearer(r)
		switch {
		case token == "":
			return errMissingToken
		case strings.HasPrefix(token, metering.KeyPrefix):
			return errAPIKeyRefused
		}
		acct, usr, err := s.jwt.account(token)
		if err != nil {
			return err
		}
		infoFrom(r.Context()).account = acct
		c, err := s.authorize(r, acct, usr)
		if err != nil {
			return err
		}
		if c.user == acct {
			// Only an account's own token creates it: a member's names one that exists.
			if _, err := s.store.EnsureAccount(r.Context(), acct); err != nil {
				return fmt.Errorf("creating account on first use: %w", err)
			}
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)), acct)
	})
}

func set(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, i := range items {
		m[i] = true
	}
	return m
}

func sortedSet(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
