package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
)

// TestTeamMembers: the members API, its validation and the rules that keep
// a team governable.
func TestTeamMembers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	owner, admin := tm.tokens["owner"], tm.tokens["admin"]

	r := e.do("GET", "/v1/members", admin, nil)
	e.expect(r, http.StatusOK, "")
	got := []string{}
	for _, m := range r.list() {
		mm := m.(map[string]any)
		got = append(got, mm["user"].(string)+"="+mm["role"].(string))
	}
	if strings.Join(got, " ") != "acme=owner ann=admin bob=billing max=member" {
		t.Fatalf("members: %s", r.raw)
	}

	for _, c := range []struct {
		name   string
		token  string
		body   any
		status int
		code   string
		param  string
	}{
		{"unknown role", owner, map[string]string{"user": "zed", "role": "root"}, 400, "invalid_role", "role"},
		{"no role", owner, map[string]string{"user": "zed"}, 400, "invalid_role", "role"},
		{"bad user", owner, map[string]string{"user": "a b", "role": "member"}, 400, "invalid_user", "user"},
		{"no user", owner, map[string]string{"role": "member"}, 400, "invalid_user", "user"},
		{"unknown field", owner, `{"user":"zed","role":"member","x":1}`, 400, "", ""},
		{"not JSON", owner, `[`, 400, "", ""},
		{"admin grants owner", admin, map[string]string{"user": "max", "role": "owner"}, 403, "owner_required", ""},
		{"admin demotes the owner", admin, map[string]string{"user": "acme", "role": "member"}, 403, "owner_required", ""},
		{"last owner demoted", owner, map[string]string{"user": "acme", "role": "admin"}, 409, "last_owner", ""},
		{"role change", admin, map[string]string{"user": "max", "role": "billing"}, 200, "", ""},
		{"role back", admin, map[string]string{"user": "max", "role": "member"}, 200, "", ""},
	} {
		r := e.do("POST", "/v1/members", c.token, c.body)
		if r.status != c.status || (c.code != "" && r.str("error.code") != c.code) || (c.param != "" && r.str("error.param") != c.param) {
			t.Errorf("%s: %d %s", c.name, r.status, r.raw)
		}
		if r.status >= 400 && r.str("error.type") == "" {
			t.Errorf("%s: not an OpenAI-shaped error: %s", c.name, r.raw)
		}
	}
	e.expect(e.do("DELETE", "/v1/members/acme", owner, nil), http.StatusConflict, "last_owner")
	e.expect(e.do("DELETE", "/v1/members/acme", admin, nil), http.StatusForbidden, "owner_required")
	e.expect(e.do("DELETE", "/v1/members/nobody", admin, nil), http.StatusNotFound, "member_not_found")
	e.expect(e.do("DELETE", "/v1/members/bob", admin, nil), http.StatusNoContent, "")
	e.expect(e.do("GET", "/api/billing/usage", tm.tokens["billing"], nil), http.StatusForbidden, "not_a_member")

	// A member acting for its own account (or without the claim) is its owner there.
	e.expect(e.do("GET", "/v1/members", e.token("max", nil), nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v1/members", e.memberToken("max", "max"), nil), http.StatusOK, "")

	// A non-member naming an account that does not exist gets 403 and creates nothing.
	e.expect(e.do("GET", "/api/billing/usage", e.memberToken("eve", "ghost"), nil), http.StatusForbidden, "not_a_member")
	if _, err := e.store.Account(context.Background(), "ghost"); !errors.Is(err, metering.ErrNoAccount) {
		t.Fatalf("a non-member's token created the account it named: %v", err)
	}
	// A member claim that is not a string, or without sub: the token is invalid.
	e.expect(e.do("GET", "/v1/keys", e.token("max", func(c jwt.MapClaims) { c["account"] = 42 }), nil), http.StatusUnauthorized, "invalid_token")
	e.expect(e.do("GET", "/v1/keys", e.token("max", func(c jwt.MapClaims) { c["account"] = "acme"; delete(c, "sub") }), nil),
		http.StatusUnauthorized, "invalid_token")

	// A second owner; then the first may leave, and then cannot act for the account.
	e.expect(e.do("POST", "/v1/members", owner, map[string]string{"user": "ann", "role": "owner"}), http.StatusOK, "")
	e.expect(e.do("DELETE", "/v1/members/acme", tm.tokens["admin"], nil), http.StatusNoContent, "")
	e.expect(e.do("GET", "/v1/keys", owner, nil), http.StatusForbidden, "not_a_member")

	r = e.do("GET", "/v1/audit", tm.tokens["admin"], nil)
	e.expect(r, http.StatusOK, "")
	var actions []string
	for _, a := range r.list() {
		m := a.(map[string]any)
		if m["id"] == "" || m["created_at"] == "" {
			t.Fatalf("audit entry without id or time: %s", r.raw)
		}
		actions = append(actions, m["actor"].(string)+":"+m["action"].(string)+":"+m["target"].(string))
	}
	// Newest first; the first three (added from a map) in any order.
	want := "ann:member.removed:acme acme:member.updated:ann ann:member.removed:bob ann:member.updated:max ann:member.updated:max"
	first := slices.Sorted(slices.Values(actions[min(5, len(actions)):]))
	if len(actions) != 8 || strings.Join(actions[:5], " ") != want ||
		strings.Join(first, " ") != "acme:member.added:ann acme:member.added:bob acme:member.added:max" {
		t.Fatalf("audit log:\n%s\nwant\n%s, then the three added", strings.Join(actions, " "), want)
	}
	r = e.do("GET", "/v1/audit?limit=2", tm.tokens["admin"], nil)
	e.expect(r, http.StatusOK, "")
	if len(r.list()) != 2 || r.get("has_more") != true || r.str("data.0.action") != "member.removed" {
		t.Fatalf("a page of the audit log: %s", r.raw)
	}
	if r = e.do("GET", "/v1/audit?limit=8", tm.tokens["admin"], nil); len(r.list()) != 8 || r.get("has_more") != false {
		t.Fatalf("the whole audit log: %s", r.raw)
	}
	e.expect(e.do("GET", "/v1/audit?limit=0", tm.tokens["admin"], nil), http.StatusBadRequest, "invalid_limit")
}

// TestTeamKeys: a plain member sees and manages only the keys it created;
// an admin all of them; every key change is audited.
func TestTeamKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	owner, admin, member, buyer := tm.tokens["owner"], tm.tokens["admin"], tm.tokens["member"], tm.tokens["billing"]

	create := func(tok, name string) string {
		t.Helper()
		r := e.do("POST", "/v1/keys", tok, map[string]any{"name": name})
		e.expect(r, http.StatusCreated, "")
		return r.str("id")
	}
	ownerKey, maxKey, bobKey := create(owner, "owner"), create(member, "max"), create(buyer, "bob")
	names := func(tok string) string {
		t.Helper()
		r := e.do("GET", "/v1/keys", tok, nil)
		e.expect(r, http.StatusOK, "")
		var out []string
		for _, k := range r.list() {
			m := k.(map[string]any)
			by, _ := m["created_by"].(string)
			out = append(out, m["name"].(string)+"@"+by)
		}
		slices.Sort(out) // keys created in the same second list in id order
		return strings.Join(out, " ")
	}
	if got := names(member); got != "max@max" {
		t.Fatalf("a member's keys: %s", got)
	}
	if got := names(admin); got != "bob@bob max@max owner@acme" {
		t.Fatalf("an admin's keys: %s", got)
	}
	for _, id := range []string{ownerKey, bobKey} {
		e.expect(e.do("DELETE", "/v1/keys/"+id, member, nil), http.StatusNotFound, "key_not_found")
		e.expect(e.do("PATCH", "/v1/keys/"+id, member, map[string]any{"rpm": 5}), http.StatusNotFound, "key_not_found")
	}
	e.expect(e.do("PATCH", "/v1/keys/"+maxKey, member, map[string]any{"rpm": 5}), http.StatusOK, "")
	e.expect(e.do("DELETE", "/v1/keys/"+bobKey, admin, nil), http.StatusNoContent, "")
	e.expect(e.do("DELETE", "/v1/keys/"+maxKey, member, nil), http.StatusNoContent, "")
	if got := names(owner); got != "bob@bob max@max owner@acme" {
		t.Fatalf("the owner's keys: %s", got)
	}
	// A member who leaves the team loses its keys.
	leaver := create(buyer, "bob2")
	e.expect(e.do("DELETE", "/v1/members/bob", admin, nil), http.StatusNoContent, "")
	r := e.do("GET", "/v1/keys", owner, nil)
	for _, k := range r.list() {
		m := k.(map[string]any)
		if m["id"] == leaver && m["revoked"] != true {
			t.Fatalf("a removed member's key is still active: %s", r.raw)
		}
	}
	e.expect(e.do("DELETE", "/v1/keys/"+leaver, owner, nil), http.StatusNoContent, "")
	// Keys created on the admin API have no creator: the account's own.
	r = e.admin("POST", "/admin/v1/accounts/acme/keys", map[string]any{"name": "ops"})
	e.expect(r, http.StatusCreated, "")
	if r.get("created_by") != nil {
		t.Fatalf("an operator's key: %s", r.raw)
	}
	if got := names(member); got != "max@max" {
		t.Fatalf("a member's keys after an operator's: %s", got)
	}

	r = e.do("GET", "/v1/audit", owner, nil)
	e.expect(r, http.StatusOK, "")
	var log []string
	for _, a := range r.list() {
		m := a.(map[string]any)
		if strings.HasPrefix(m["action"].(string), "key.") {
			log = append(log, m["actor"].(string)+":"+m["action"].(string)+":"+m["target"].(string))
		}
	}
	want := []string{"operator:key.created:" + r.str("data.0.target"), "acme:key.revoked:" + leaver, "ann:key.revoked:" + leaver,
		"bob:key.created:" + leaver, "max:key.revoked:" + maxKey, "ann:key.revoked:" + bobKey,
		"max:key.updated:" + maxKey, "bob:key.created:" + bobKey, "max:key.created:" + maxKey, "acme:key.created:" + ownerKey}
	if strings.Join(log, " ") != strings.Join(want, " ") {
		t.Fatalf("audit log:\n%s\nwant\n%s", strings.Join(log, " "), strings.Join(want, " "))
	}
}

// TestTeamMemberBudget: owners and admins set a member's budget with POST
// /v1/members; its keys are then held call by call (where the proxy enforces
// it); GET /v1/members shows it; null removes it; bad budgets are 400.
func TestTeamMemberBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	ctx := context.Background()
	r := e.do("POST", "/v1/keys", tm.tokens["member"], map[string]any{"name": "dev"})
	e.expect(r, http.StatusCreated, "")
	secret := r.str("key")
	if id, err := e.store.Authenticate(ctx, []byte(secret)); err != nil || id.Limited {
		t.Fatalf("before a budget: %+v %v", id, err)
	}
	for _, c := range []struct {
		body  string
		param string
	}{
		{`{"user":"max","role":"member","budget":{"credits":0,"period":"day"}}`, "budget.credits"},
		{`{"user":"max","role":"member","budget":{"credits":"1","period":"year"}}`, "budget.period"},
		{`{"user":"max","role":"member","budget":{"credits":"1"}}`, "budget.period"},
		{`{"user":"max","role":"member","budget":7}`, "budget"},
	} {
		r := e.do("POST", "/v1/members", tm.tokens["admin"], c.body)
		if r.status != http.StatusBadRequest || r.str("error.code") != "invalid_budget" || r.str("error.param") != c.param {
			t.Errorf("%s: %d %s", c.body, r.status, r.raw)
		}
	}
	r = e.do("POST", "/v1/members", tm.tokens["admin"], map[string]any{"user": "max", "role": "member",
		"budget": map[string]any{"credits": "0.3", "period": "day"}})
	e.expect(r, http.StatusOK, "")
	if r.num("budget.credits") != "0.300" || r.str("budget.period") != "day" || r.num("period_used") != "0.000" {
		t.Fatalf("member with a budget: %s", r.raw)
	}
	if id, err := e.store.Authenticate(ctx, []byte(secret)); err != nil || !id.Limited {
		t.Fatalf("a key under a member budget: %+v %v", id, err)
	}
	r = e.do("GET", "/v1/members", tm.tokens["owner"], nil)
	if !strings.Contains(r.raw, `{"user":"max","role":"member","budget":{"credits":0.300,"period":"day"},"period_used":0.000}`) ||
		!strings.Contains(r.raw, `{"user":"ann","role":"admin","budget":null,"period_used":0.000}`) {
		t.Fatalf("members: %s", r.raw)
	}
	// Changing the role alone leaves the budget; null removes it.
	r = e.do("POST", "/v1/members", tm.tokens["admin"], map[string]any{"user": "max", "role": "billing"})
	if r.num("budget.credits") != "0.300" {
		t.Fatalf("budget after a role change: %s", r.raw)
	}
	r = e.do("POST", "/v1/members", tm.tokens["admin"], map[string]any{"user": "max", "role": "billing", "budget": nil})
	if r.status != http.StatusOK || r.get("budget") != nil {
		t.Fatalf("budget removed: %s", r.raw)
	}
	// A plain member cannot set budgets.
	e.expect(e.do("POST", "/v1/members", tm.tokens["member"], map[string]any{"user": "max", "role": "member",
		"budget": map[string]any{"credits": 100, "period": "day"}}), http.StatusForbidden, "permission_denied")
	// Each change recorded once (budget, role, budget removed); a retry that
	// changes nothing records nothing.
	e.expect(e.do("POST", "/v1/members", tm.tokens["admin"], map[string]any{"user": "max", "role": "billing", "budget": nil}), http.StatusOK, "")
	r = e.do("GET", "/v1/audit", tm.tokens["owner"], nil)
	n := 0
	for _, a := range r.list() {
		if m := a.(map[string]any); m["action"] == "member.updated" && m["target"] == "max" && m["actor"] == "ann" {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("member.updated entries for max: %d, want 3: %s", n, r.raw)
	}
}

// TestMemberClaimConfigured: billing.jwt.member_claim names the claim; the
// default name then means nothing.
func TestMemberClaimConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{jwt: &config.JWT{Secret: testJWTSecret, Issuer: testIssuer, Audience: testAudience,
		AccountClaim: "sub", MemberClaim: "org"}})
	owner := e.token("acme", nil)
	e.expect(e.do("POST", "/v1/members", owner, map[string]string{"user": "ann", "role": "admin"}), http.StatusCreated, "")
	e.expect(e.do("GET", "/v1/members", e.token("ann", func(c jwt.MapClaims) { c["org"] = "acme" }), nil), http.StatusOK, "")
	if _, err := New(Options{Catalog: e.catalog, Store: e.store, Config: config.Billing{JWT: config.JWT{Secret: testJWTSecret,
		AccountClaim: "org", MemberClaim: "org"}}}); err == nil || !strings.Contains(err.Error(), "billing.jwt.member_claim") {
		t.Fatalf("member_claim = account_claim: %v", err)
	}
	// "account" is not the claim here: ann acts for her own account.
	r := e.do("GET", "/v1/members", e.memberToken("ann", "acme"), nil)
	e.expect(r, http.StatusOK, "")
	if r.str("data.0.user") != "ann" || len(r.list()) != 1 {
		t.Fatalf("ann's own account: %s", r.raw)
	}
}

// TestRemoveMemberRevokesFirst: a removal revokes the member's keys before
// the member (and its budget) goes; a removal that is refused touches no
// key; and a DELETE of a user who is no longer a member but still has live
// keys (a removal that failed after the member went) revokes them, 204.
func TestRemoveMemberRevokesFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	ctx := context.Background()
	live := func(id string) bool {
		t.Helper()
		keys, err := e.store.Keys(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.ID == id {
				return !k.Revoked
			}
		}
		t.Fatalf("no key %s", id)
		return false
	}
	// Refused: the last owner; an admin removing an owner. The keys stay.
	r := e.do("POST", "/v1/keys", tm.tokens["owner"], map[string]any{"name": "o"})
	e.expect(r, http.StatusCreated, "")
	ownerKey := r.str("id")
	e.expect(e.do("DELETE", "/v1/members/acme", tm.tokens["owner"], nil), http.StatusConflict, "last_owner")
	e.expect(e.do("DELETE", "/v1/members/acme", tm.tokens["admin"], nil), http.StatusForbidden, "owner_required")
	if !live(ownerKey) {
		t.Fatal("a refused removal revoked the owner's key")
	}
	// max left the team, but its key survived (the removal failed after the
	// member went): a retried DELETE revokes it.
	r = e.do("POST", "/v1/keys", tm.tokens["member"], map[string]any{"name": "m"})
	e.expect(r, http.StatusCreated, "")
	maxKey := r.str("id")
	if _, err := e.store.ChangeMember(ctx, metering.MemberChange{Account: "acme", User: "max", ByOwner: true}); err != nil {
		t.Fatal(err)
	}
	e.expect(e.do("DELETE", "/v1/members/max", tm.tokens["admin"], nil), http.StatusNoContent, "")
	if live(maxKey) {
		t.Fatal("a former member's key is still live after its DELETE")
	}
	// Nothing left to revoke: 404.
	e.expect(e.do("DELETE", "/v1/members/max", tm.tokens["admin"], nil), http.StatusNotFound, "member_not_found")
}

// TestCreditsByRole: every member reads the balance from GET
// /api/billing/credits, but only a role with billing sees the purchases
// (with their prices) and the auto-recharge settings; both answers follow
// the OpenAPI document.
func TestCreditsByRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	oas := newOASClient(t, e)
	for _, c := range []struct {
		role string
		full bool
	}{{"member", false}, {"billing", true}, {"admin", true}, {"owner", true}} {
		r := oas.do("GET", "/api/billing/credits", tm.tokens[c.role], nil)
		e.expect(r, http.StatusOK, "")
		m := r.json
		_, ar := m["autoRecharge"]
		_, txs := m["transactions"]
		if _, ok := m["balance"]; !ok || ar != c.full || txs != c.full {
			t.Errorf("%s: %s", c.role, r.raw)
		}
	}
}

// TestMemberClaimSeparateNamespaces: with an account claim other than sub,
// user ids and account ids are two namespaces: a user whose sub equals an
// account's id is not that account's (seeded) owner.
func TestMemberClaimSeparateNamespaces(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{jwt: &config.JWT{Secret: testJWTSecret, Issuer: testIssuer, Audience: testAudience,
		AccountClaim: "org", MemberClaim: "account"}})
	owner := e.token("someone", func(c jwt.MapClaims) { c["org"] = "acme" })
	e.expect(e.do("POST", "/v1/members", owner, map[string]string{"user": "ann", "role": "admin"}), http.StatusCreated, "")
	e.expect(e.do("GET", "/v1/members", e.memberToken("ann", "acme"), nil), http.StatusOK, "")
	// sub "acme" naming account acme: not its owner.
	e.expect(e.do("GET", "/v1/members", e.memberToken("acme", "acme"), nil), http.StatusForbidden, "not_a_member")
	e.expect(e.do("POST", "/v1/keys", e.memberToken("acme", "acme"), map[string]any{"name": "x"}), http.StatusForbidden, "not_a_member")
	// Nor of an account that does not exist yet (nothing is created).
	e.expect(e.do("GET", "/v1/api-credits", e.memberToken("ghost", "ghost"), nil), http.StatusForbidden, "not_a_member")
	if _, err := e.store.Account(context.Background(), "ghost"); !errors.Is(err, metering.ErrNoAccount) {
		t.Fatalf("a user's token created the account its sub names: %v", err)
	}
}

// TestRemoveMemberWhileItCreatesKeys: a member removed while it creates keys
// from many goroutines is left with no live key (run with -race).
func TestRemoveMemberWhileItCreatesKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 4 {
				r := e.do("POST", "/v1/keys", tm.tokens["member"], map[string]any{"name": "m"})
				if r.status != http.StatusCreated && r.status != http.StatusForbidden {
					t.Errorf("creating a key while being removed: %d %s", r.status, r.raw)
				}
			}
		}()
	}
	close(start)
	e.expect(e.do("DELETE", "/v1/members/max", tm.tokens["admin"], nil), http.StatusNoContent, "")
	wg.Wait()
	keys, err := e.store.Keys(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.CreatedBy == "max" && !k.Revoked {
			t.Fatalf("a removed member's key is live: %s", k.ID)
		}
	}
}

// TestPatchMember: PATCH /v1/members/{user} changes a member's role or
// budget, each alone or both, with the rules POST keeps (only owners touch
// owners) and its audit entries, and never adds a member: a change made
// from a stale list does not bring back a removed member.
func TestPatchMember(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tm := newTeam(t, e)
	for _, c := range []struct {
		name, as, user string
		body           any
		status         int
		code           string
		role, budget   string // the answer's role and budget.credits ("": null)
	}{
		{"owner changes a role", "owner", "max", map[string]any{"role": "billing"}, 200, "", "billing", ""},
		{"admin sets a budget alone", "admin", "max", map[string]any{"budget": map[string]any{"credits": "12.5", "period": "week"}}, 200, "", "billing", "12.500"},
		{"role and budget at once", "admin", "max", map[string]any{"role": "member", "budget": map[string]any{"credits": 20, "period": "day"}}, 200, "", "member", "20.000"},
		{"a role alone keeps the budget", "admin", "max", map[string]any{"role": "member"}, 200, "", "member", "20.000"},
		{"null removes the budget", "admin", "max", map[string]any{"budget": nil}, 200, "", "member", ""},
		{"admin may not budget an owner", "admin", "acme", map[string]any{"budget": map[string]any{"credits": 1, "period": "day"}}, 403, "owner_required", "", ""},
		{"admin may not grant owner", "admin", "max", map[string]any{"role": "owner"}, 403, "owner_required", "", ""},
		{"an owner budgets an owner", "owner", "acme", map[string]any{"budget": map[string]any{"credits": 1, "period": "month"}}, 200, "", "owner", "1.000"},
		{"the last owner stays", "owner", "acme", map[string]any{"role": "admin"}, 409, "last_owner", "", ""},
		{"a stranger's role is not set", "owner", "eve", map[string]any{"role": "member"}, 404, "member_not_found", "", ""},
		{"a stranger's budget is not set", "owner", "eve", map[string]any{"budget": map[string]any{"credits": 1, "period": "day"}}, 404, "member_not_found", "", ""},
		{"nothing to change", "owner", "max", map[string]any{}, 400, "invalid_json", "", ""},
		{"unknown role", "owner", "max", map[string]any{"role": "root"}, 400, "invalid_role", "", ""},
		{"bad budget", "owner", "max", map[string]any{"budget": map[string]any{"credits": 1, "period": "year"}}, 400, "invalid_budget", "", ""},
		{"unknown field", "owner", "max", map[string]any{"user": "eve"}, 400, "", "", ""},
		{"a member may not", "member", "max", map[string]any{"role": "admin"}, 403, "permission_denied", "", ""},
	} {
		r := e.do("PATCH", "/v1/members/"+c.user, tm.tokens[c.as], c.body)
		if r.status != c.status || (c.code != "" && r.str("error.code") != c.code) {
			t.Errorf("%s: %d %s", c.name, r.status, r.raw)
			continue
		}
		if c.status == 200 && (r.str("user") != c.user || r.str("role") != c.role || r.num("budget.credits") != c.budget) {
			t.Errorf("%s: %s", c.name, r.raw)
		}
	}
	if ms := e.do("GET", "/v1/members", tm.tokens["owner"], nil).raw; strings.Contains(ms, `"eve"`) {
		t.Fatalf("a PATCH added a member: %s", ms)
	}
	// Removed, then changed from a list read before: refused, not re-added.
	e.expect(e.do("DELETE", "/v1/members/max", tm.tokens["owner"], nil), http.StatusNoContent, "")
	e.expect(e.do("PATCH", "/v1/members/max", tm.tokens["admin"], map[string]any{"role": "billing"}), http.StatusNotFound, "member_not_found")
	e.expect(e.do("PATCH", "/v1/members/max", tm.tokens["admin"], map[string]any{"budget": map[string]any{"credits": 5, "period": "day"}}), http.StatusNotFound, "member_not_found")
	if ms := e.do("GET", "/v1/members", tm.tokens["owner"], nil).raw; strings.Contains(ms, `"max"`) {
		t.Fatalf("a removed member came back: %s", ms)
	}
	// One entry per change that changed something: the role (owner), the
	// budget (ann), role and budget (one entry, ann), the budget removed
	// (ann); the owner's own budget (acme).
	var got []string
	for _, a := range e.do("GET", "/v1/audit", tm.tokens["owner"], nil).list() {
		m := a.(map[string]any)
		if m["action"] == "member.updated" {
			got = append(got, m["actor"].(string)+">"+m["target"].(string))
		}
	}
	if want := "[acme>acme ann>max ann>max ann>max acme>max]"; fmt.Sprint(got) != want {
		t.Fatalf("member.updated entries %v, want %s", got, want)
	}
}
