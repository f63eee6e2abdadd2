package billing

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/metering"
)

// Who may call each route. Every route billing registers must be here
// (TestRouteAccess fails for one that is not): a JWT route lists the roles
// that may call it; the others are "public" or "operator" (the admin token).
var routeAccess = map[string]string{
	"GET /healthz":             "public",
	"GET /readyz":              "public",
	"GET /openapi.json":        "public",
	"GET /console/":            "public",
	"GET /console/config.json": "public",
	"GET /v1/billing/packs":    "public",
	"POST /v1/billing/webhook": "public",

	"POST /v1/billing/checkout":              "owner admin billing",
	"GET /v1/billing/history":                "owner admin billing",
	"GET /v1/api-credits":                    "owner admin billing member",
	"POST /v1/keys":                          "owner admin billing member",
	"GET /v1/keys":                           "owner admin billing member",
	"DELETE /v1/keys/{id}":                   "owner admin billing member",
	"PATCH /v1/keys/{id}":                    "owner admin billing member",
	"POST /api/billing/checkout":             "owner admin billing",
	"POST /api/billing/portal":               "owner admin billing",
	"POST /api/billing/cancel":               "owner admin billing",
	"GET /api/billing/usage":                 "owner admin billing member",
	"GET /api/billing/usage/daily":           "owner admin billing member",
	"GET /api/billing/usage/export":          "owner admin billing",
	"GET /api/billing/credits":               "owner admin billing member",
	"POST /api/billing/credits/purchase":     "owner admin billing",
	"PUT /api/billing/credits/auto-recharge": "owner admin billing",
	"PUT /api/billing/credits/alerts":        "owner admin billing",
	"POST /v1/billing/redeem":                "owner admin billing",
	"GET /v1/members":                        "owner admin",
	"POST /v1/members":                       "owner admin",
	"PATCH /v1/members/{user}":               "owner admin",
	"DELETE /v1/members/{user}":              "owner admin",
	"GET /v1/audit":                          "owner admin",
	"GET /v1/me":                             "owner admin billing member",

	"POST /admin/v1/accounts":                     "operator",
	"GET /admin/v1/webhooks/deliveries":           "operator",
	"POST /admin/v1/promo-codes":                  "operator",
	"GET /admin/v1/promo-codes/{code}":            "operator",
	"GET /admin/v1/accounts/{id}":                 "operator",
	"POST /admin/v1/accounts/{id}/keys":           "operator",
	"GET /admin/v1/accounts/{id}/keys":            "operator",
	"DELETE /admin/v1/accounts/{id}/keys/{keyId}": "operator",
	"PATCH /admin/v1/accounts/{id}/keys/{keyId}":  "operator",
	"POST /admin/v1/accounts/{id}/credits":        "operator",
	"GET /admin/v1/accounts/{id}/ledger":          "operator",
	"GET /admin/v1/books":                         "operator",
}

// team is the account "acme" (its own token is the owner's) with an admin
// (ann), a billing member (bob) and a plain member (max); eve is no member.
type team struct {
	e      *env
	tokens map[string]string // role (and "stranger") → token
}

func (e *env) memberToken(user, account string) string {
	return e.token(user, func(c jwt.MapClaims) { c["account"] = account })
}

func newTeam(t *testing.T, e *env) *team {
	t.Helper()
	owner := e.token("acme", nil)
	e.expect(e.do("GET", "/v1/api-credits", owner, nil), http.StatusOK, "") // creates the account
	for user, role := range map[string]string{"ann": "admin", "bob": "billing", "max": "member"} {
		e.expect(e.do("POST", "/v1/members", owner, map[string]string{"user": user, "role": role}), http.StatusCreated, "")
	}
	return &team{e: e, tokens: map[string]string{
		"owner": owner, "admin": e.memberToken("ann", "acme"), "billing": e.memberToken("bob", "acme"),
		"member": e.memberToken("max", "acme"), "stranger": e.memberToken("eve", "acme"),
	}}
}

// TestRouteAccess walks every route billing registers and, for each JWT
// route, every role: a role the table allows is not refused (and the route
// does not fail), any other gets 403 permission_denied, a non-member 403
// not_a_member. A route missing from routeAccess fails the test.
func TestRouteAccess(t *testing.T) {
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	path := strings.NewReplacer("{id}", "acme", "{keyId}", "key_0000000000000000", "{user}", "nobody")
	routes := registeredRoutes(t)
	for _, route := range routes {
		access, ok := routeAccess[route]
		if !ok {
			t.Errorf("route %q has no entry in routeAccess (give it a permission in authz.go and here)", route)
			continue
		}
		method, p, _ := strings.Cut(route, " ")
		p = path.Replace(p)
		if route == "DELETE /v1/keys/{id}" || route == "PATCH /v1/keys/{id}" {
			p = "/v1/keys/key_0000000000000000"
		}
		switch access {
		case "public":
			req, _ := http.NewRequest(method, e.http.URL+p, nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden {
				t.Errorf("%s: public route answered %d", route, res.StatusCode)
			}
			continue
		case "operator":
			if r := e.do(method, p, tm.tokens["owner"], nil); r.status != http.StatusUnauthorized {
				t.Errorf("%s: an owner's JWT on the admin API answered %d, want 401", route, r.status)
			}
			if r := e.admin(method, p, nil); r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
				t.Errorf("%s: the admin token answered %d", route, r.status)
			}
			continue
		}
		allowed := strings.Fields(access)
		for _, role := range []string{"owner", "admin", "billing", "member", "stranger"} {
			r := e.do(method, p, tm.tokens[role], nil)
			switch {
			case role == "stranger":
				if r.status != http.StatusForbidden || r.str("error.code") != "not_a_member" {
					t.Errorf("%s as a non-member: %d %s", route, r.status, r.raw)
				}
			case slices.Contains(allowed, role):
				if r.status == http.StatusForbidden || r.status == http.StatusUnauthorized || r.status >= 500 && r.status != 503 {
					t.Errorf("%s as %s (allowed): %d %s", route, role, r.status, r.raw)
				}
			default:
				if r.status != http.StatusForbidden || r.str("error.code") != "permission_denied" || r.str("error.type") != "permission_error" {
					t.Errorf("%s as %s (not allowed): %d %s", route, role, r.status, r.raw)
				}
			}
		}
		if r := e.do(method, p, "", nil); r.status != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d", route, r.status)
		}
	}
	// And the other way round: no stale entries.
	for route := range routeAccess {
		if !slices.Contains(routes, route) {
			t.Errorf("routeAccess names %q, which billing does not register", route)
		}
	}
	for route := range routePermissions {
		if !slices.Contains(routes, route) {
			t.Errorf("routePermissions names %q, which billing does not register", route)
		}
	}
}

// TestMe: GET /v1/me names the caller, its role and exactly the permissions
// the console may rely on: a role is given a permission's name if and only if
// routeAccess lets it call every route that needs that permission. A
// non-member is refused, as on every JWT route.
func TestMe(t *testing.T) {
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	users := map[string]string{"owner": "acme", "admin": "ann", "billing": "bob", "member": "max"}
	for role, user := range users {
		t.Run(role, func(t *testing.T) {
			r := e.do("GET", "/v1/me", tm.tokens[role], nil)
			if r.status != http.StatusOK || r.str("object") != "member" || r.str("user") != user || r.str("account") != "acme" || r.str("role") != role {
				t.Fatalf("GET /v1/me as %s: %s", role, r.raw)
			}
			got := map[string]bool{}
			for _, p := range r.get("permissions").([]any) {
				got[p.(string)] = true
			}
			for _, pn := range permissionNames {
				if want := rolePermissions[role]&pn.p != 0; got[pn.name] != want {
					t.Errorf("%s: permission %q listed %v, want %v", role, pn.name, got[pn.name], want)
				}
				for route, need := range routePermissions {
					if need != pn.p {
						continue
					}
					if allowed := slices.Contains(strings.Fields(routeAccess[route]), role); allowed != got[pn.name] {
						t.Errorf("%s: permission %q listed %v, but routeAccess allows %s: %v", role, pn.name, got[pn.name], route, allowed)
					}
				}
				delete(got, pn.name)
			}
			if len(got) != 0 {
				t.Errorf("unknown permissions %v", got)
			}
		})
	}
	e.expect(e.do("GET", "/v1/me", tm.tokens["stranger"], nil), http.StatusForbidden, "not_a_member")
	e.expect(e.do("GET", "/v1/me", "", nil), http.StatusUnauthorized, "")
	// Every permission has a name (one missing would hide a feature from
	// every role in the console).
	var named permission
	for _, pn := range permissionNames {
		named |= pn.p
	}
	if all := rolePermissions[metering.RoleOwner]; named != all {
		t.Errorf("permissions without a name: %b", all&^named)
	}
}
