package billing

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/metering"
)

// Authorization of the public (JWT) API, in one place: each route needs one
// permission (routePermissions), each role has a set of them (rolePermissions),
// and user() checks the one against the other before any handler runs. A
// JWT route missing from routePermissions is refused (500, logged): a new
// route is closed until it is given a permission.

// permission is one thing a member may do; a set of them is a bit mask.
type permission uint16

const (
	// permUsage: read usage and the balance.
	permUsage permission = 1 << iota
	// permKeys: create keys, and see and manage the keys one created.
	permKeys
	// permAllKeys: see and manage every key of the account.
	permAllKeys
	// permBilling: buy credits, check out, subscribe, manage auto-recharge,
	// the card and the subscription, read the purchase history.
	permBilling
	// permMembers: list and change the account's members.
	permMembers
	// permAudit: read the audit log.
	permAudit
)

// permMember: any member of the account (GET /v1/me: who the caller is).
const permMember permission = 0

// permissionNames are the names GET /v1/me gives the permissions, in bit
// order (the console shows what a role may do from them).
var permissionNames = []struct {
	p    permission
	name string
}{
	{permUsage, "usage"}, {permKeys, "keys"}, {permAllKeys, "all_keys"},
	{permBilling, "billing"}, {permMembers, "members"}, {permAudit, "audit"},
}

// rolePermissions: what each role may do. Owners and admins may do
// everything; only an owner may grant, change or remove the owner role
// (metering.ChangeMember enforces it atomically).
var rolePermissions = map[string]permission{
	metering.RoleOwner:   permUsage | permKeys | permAllKeys | permBilling | permMembers | permAudit,
	metering.RoleAdmin:   permUsage | permKeys | permAllKeys | permBilling | permMembers | permAudit,
	metering.RoleBilling: permUsage | permKeys | permBilling,
	metering.RoleMember:  permUsage | permKeys,
}

// routePermissions: the permission each JWT route (its ServeMux pattern)
// needs.
var routePermissions = map[string]permission{
	"POST /v1/billing/checkout":              permBilling,
	"GET /v1/billing/history":                permBilling,
	"GET /v1/api-credits":                    permUsage,
	"POST /v1/keys":                          permKeys,
	"GET /v1/keys":                           permKeys,
	"DELETE /v1/keys/{id}":                   permKeys,
	"PATCH /v1/keys/{id}":                    permKeys,
	"POST /api/billing/checkout":             permBilling,
	"POST /api/billing/portal":               permBilling,
	"POST /api/billing/cancel":               permBilling,
	"GET /api/billing/usage":                 permUsage,
	"GET /api/billing/usage/daily":           permUsage,
	"GET /api/billing/usage/export":          permBilling,
	"GET /api/billing/credits":               permUsage,
	"POST /api/billing/credits/purchase":     permBilling,
	"PUT /api/billing/credits/auto-recharge": permBilling,
	"PUT /api/billing/credits/alerts":        permBilling,
	"POST /v1/billing/redeem":                permBilling,
	"GET /v1/members":                        permMembers,
	"POST /v1/members":                       permMembers,
	"PATCH /v1/members/{user}":               permMembers,
	"DELETE /v1/members/{user}":              permMembers,
	"GET /v1/audit":                          permAudit,
	"GET /v1/me":                             permMember,
}

// caller is who makes a JWT request: the account it acts for, the user
// acting, and the user's role in it.
type caller struct {
	account, user, role string
	perms               permission
}

func (c caller) may(p permission) bool { return c.perms&p == p }

// owns reports whether the caller may see and manage key k: every key with
// permAllKeys, otherwise the keys it created (a key without a creator is
// the account's own).
func (c caller) owns(k metering.Key) bool {
	if c.may(permAllKeys) {
		return true
	}
	by := k.CreatedBy
	if by == "" {
		by = c.account
	}
	return by == c.user
}

type callerKey struct{}

// callerFrom returns the caller of a JWT request; ok is false on the admin
// API (an operator).
func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// actor names who makes a change, for the audit log: the user, or
// "operator" on the admin API.
func actor(ctx context.Context) string {
	if c, ok := callerFrom(ctx); ok {
		return c.user
	}
	return "operator"
}

var (
	errNotMember = &apiError{status: http.StatusForbidden, typ: typePermission, code: "not_a_member",
		message: "the token's user is not a member of the account it names"}
	errForbidden = func(role string) *apiError {
		return &apiError{status: http.StatusForbidden, typ: typePermission, code: "permission_denied",
			message: fmt.Sprintf("the %s role may not do this; ask an owner or admin of the account", role)}
	}
)

// authorize resolves the user's role in account and checks it against the
// permission the route needs.
func (s *Server) authorize(r *http.Request, account, user string) (caller, error) {
	need, ok := routePermissions[r.Pattern]
	if !ok {
		return caller{}, fmt.Errorf("billing: route %q has no permission in routePermissions", r.Pattern)
	}
	role, err := s.store.MemberRole(r.Context(), account, user)
	if err != nil {
		return caller{}, fmt.Errorf("reading the caller's role: %w", err)
	}
	if role == "" {
		return caller{}, errNotMember
	}
	c := caller{account: account, user: user, role: role, perms: rolePermissions[role]}
	if !c.may(need) {
		return caller{}, errForbidden(role)
	}
	return c, nil
}

// meJSON is GET /v1/me: who the caller is in the account it acts for, and
// what its role may do (the console shows only what the caller may use).
type meJSON struct {
	Object      string   `json:"object"`
	User        string   `json:"user"`
	Account     string   `json:"account"`
	Role        string   `json:"role"`
	Permissions []string `json:"permissions"`
}

// GET /v1/me
func (s *Server) me(w http.ResponseWriter, r *http.Request, account string) error {
	c, _ := callerFrom(r.Context())
	out := meJSON{Object: "member", User: c.user, Account: account, Role: c.role, Permissions: make([]string, 0, len(permissionNames))}
	for _, pn := range permissionNames {
		if c.may(pn.p) {
			out.Permissions = append(out.Permissions, pn.name)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
