package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/metering"
)

// Teams: an account's members and its audit log. Who may call these routes
// is authz.go's business; metering keeps a team governable (an owner always
// remains; only owners touch the owner role).

// Audit actions.
const (
	auditMemberAdded   = metering.AuditMemberAdded
	auditMemberUpdated = metering.AuditMemberUpdated
	auditMemberRemoved = metering.AuditMemberRemoved
	auditKeyRevoked    = "key.revoked"
	auditKeyUpdated    = "key.updated"
)

type memberJSON struct {
	User string `json:"user"`
	Role string `json:"role"`
	// Budget is the member's credit budget per period, shared by the keys it
	// created (null: none); PeriodUsed what they spent in the current period.
	Budget     *budgetJSON `json:"budget"`
	PeriodUsed Credits     `json:"period_used"`
}

// memberRequest is POST /v1/members: budget absent leaves it as it is, null
// removes it.
type memberRequest struct {
	User   string          `json:"user"`
	Role   string          `json:"role"`
	Budget json.RawMessage `json:"budget"`
}

// memberPatch is PATCH /v1/members/{user}: an absent field leaves it as it
// is; budget null removes it.
type memberPatch struct {
	Role   *string         `json:"role"`
	Budget json.RawMessage `json:"budget"`
}

func memberView(m metering.Member, b metering.MemberBudget) memberJSON {
	v := memberJSON{User: m.User, Role: m.Role, PeriodUsed: Credits(b.PeriodUsed)}
	if b.Budget > 0 {
		v.Budget = &budgetJSON{Credits: Credits(b.Budget), Period: b.Period}
	}
	return v
}

type auditJSON struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Actor     string `json:"actor"`
	Action    string `json:"action"`
	Target    string `json:"target"`
	CreatedAt string `json:"created_at"`
}

// GET /v1/members
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request, account string) error {
	ms, err := s.store.Members(r.Context(), account)
	if err != nil {
		return fmt.Errorf("listing members: %w", err)
	}
	budgets, err := s.store.MemberBudgets(r.Context(), account)
	if err != nil {
		return fmt.Errorf("listing members: %w", err)
	}
	out := make([]memberJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberView(m, budgets[m.User]))
	}
	writeJSON(w, http.StatusOK, listJSON[memberJSON]{Object: "list", Data: out})
	return nil
}

// POST /v1/members {"user","role","budget"}: adds a member or changes its role,
// and its budget when the request names one (null: none).
func (s *Server) setMember(w http.ResponseWriter, r *http.Request, account string) error {
	var req memberRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if !metering.ValidAccountID(req.User) {
		return badRequest("invalid_user", "user", "user must be the user's id (its JWT sub): 1 to 128 letters, digits or -_.@:|")
	}
	if !metering.ValidRole(req.Role) {
		return badRequest("invalid_role", "role", `role must be "owner", "admin", "billing" or "member"`)
	}
	budget, period, err := optionalBudget(req.Budget)
	if err != nil {
		return err
	}
	ctx := r.Context()
	c, _ := callerFrom(ctx)
	// The role change is recorded in the audit log by the same script that
	// makes it (a retried add is recorded once, as member.added).
	prev, err := s.store.ChangeMember(ctx, metering.MemberChange{Account: account, User: req.User, Role: req.Role,
		ByOwner: c.role == metering.RoleOwner, Actor: actor(ctx)})
	if err != nil {
		return err
	}
	if req.Budget != nil {
		// A budget changed with the role is the role change's entry; one
		// changed alone is recorded (member.updated) by the script that sets it.
		by := ""
		if prev == req.Role {
			by = actor(ctx)
		}
		if err := s.store.SetMemberBudgetBy(ctx, account, req.User, budget, period, by, c.role == metering.RoleOwner); err != nil {
			return err
		}
	}
	status := http.StatusOK
	if prev == "" {
		status = http.StatusCreated
	}
	budgets, err := s.store.MemberBudgets(ctx, account)
	if err != nil {
		return err
	}
	writeJSON(w, status, memberView(metering.Member{User: req.User, Role: req.Role}, budgets[req.User]))
	return nil
}

// PATCH /v1/members/{user} {"role","budget"}: changes a member's role, its
// budget, or both; never adds a member (404 member_not_found: a change made
// from a list read before someone removed the member must not bring them
// back, which POST, an upsert, would). Only owners change an owner's role or
// budget (403 owner_required), as with POST.
func (s *Server) patchMember(w http.ResponseWriter, r *http.Request, account string) error {
	user := r.PathValue("user")
	if !metering.ValidAccountID(user) {
		return notFound("member_not_found", "no such member")
	}
	var req memberPatch
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Role == nil && req.Budget == nil {
		return badRequest("invalid_json", "", "name role, budget or both")
	}
	if req.Role != nil && !metering.ValidRole(*req.Role) {
		return badRequest("invalid_role", "role", `role must be "owner", "admin", "billing" or "member"`)
	}
	budget, period, err := optionalBudget(req.Budget)
	if err != nil {
		return err
	}
	ctx := r.Context()
	c, _ := callerFrom(ctx)
	byOwner := c.role == metering.RoleOwner
	role, changed := "", false
	if req.Role != nil {
		// Atomic with the rules (last owner, owner-only) and its audit entry.
		prev, err := s.store.ChangeMember(ctx, metering.MemberChange{Account: account, User: user, Role: *req.Role,
			ByOwner: byOwner, Actor: actor(ctx), Existing: true})
		if err != nil {
			return err
		}
		role, changed = *req.Role, prev != *req.Role
	} else {
		var err error
		if role, err = s.store.MemberRole(ctx, account, user); err != nil {
			return fmt.Errorf("reading the member's role: %w", err)
		}
		if role == "" {
			return notFound("member_not_found", "no such member")
		}
		// Only an owner sets an owner's budget: the budget script checks it
		// where it writes (a promotion to owner since this read included),
		// and refuses a member removed meanwhile.
	}
	if req.Budget != nil {
		// A budget changed with the role is the role change's entry; one
		// changed alone is recorded (member.updated) by the script that sets it.
		by := actor(ctx)
		if changed {
			by = ""
		}
		if err := s.store.SetMemberBudgetBy(ctx, account, user, budget, period, by, byOwner); err != nil {
			return err
		}
	}
	budgets, err := s.store.MemberBudgets(ctx, account)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, memberView(metering.Member{User: user, Role: role}, budgets[user]))
	return nil
}

// DELETE /v1/members/{user}
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, account string) error {
	user := r.PathValue("user")
	if !metering.ValidAccountID(user) {
		return notFound("member_not_found", "no such member")
	}
	ctx := r.Context()
	c, _ := callerFrom(ctx)
	mc := metering.MemberChange{Account: account, User: user, ByOwner: c.role == metering.RoleOwner, Actor: actor(ctx)}
	// The member's keys are revoked before the member (and its budget) goes:
	// should anything fail half-way, the keys are revoked or still under the
	// member's budget, never live without it. A removal that would be
	// refused is refused before any key is touched.
	member := true
	if err := s.store.CheckMemberRemoval(ctx, mc); errors.Is(err, metering.ErrNoMember) {
		member = false
	} else if err != nil {
		return err
	}
	revoked, err := s.revokeKeysOf(ctx, account, user)
	if err != nil {
		return err
	}
	if member {
		_, err = s.store.ChangeMember(ctx, mc)
		if err == nil {
			// A key the member created meanwhile (its request authorized
			// before the removal) is revoked too; none can appear after it.
			if _, err := s.revokeKeysOf(ctx, account, user); err != nil {
				return err
			}
		}
	}
	// A user who is no longer a member (a retry of a removal that failed
	// after it went) with live keys: they are revoked now, and that is the
	// removal's answer.
	if !member || errors.Is(err, metering.ErrNoMember) {
		if revoked == 0 {
			return notFound("member_not_found", "no such member")
		}
		err = nil
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeKeysOf revokes the active keys user created and returns how many:
// someone who leaves the team no longer spends its credits. Run again (a
// retried removal) it revokes what is still live.
func (s *Server) revokeKeysOf(ctx context.Context, account, user string) (int, error) {
	keys, err := s.store.Keys(ctx, account)
	if err != nil {
		return 0, fmt.Errorf("listing the removed member's keys: %w", err)
	}
	n := 0
	for _, k := range keys {
		if k.Revoked || k.CreatedBy != user {
			continue
		}
		if err := s.store.RevokeKey(ctx, account, k.ID); err != nil {
			return n, fmt.Errorf("revoking the removed member's key: %w", err)
		}
		n++
		if err := s.audit(ctx, account, auditKeyRevoked, k.ID); err != nil {
			return n, err
		}
	}
	return n, nil
}

// GET /v1/audit?limit=: the newest entries first.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, account string) error {
	limit, err := pageLimit(r, 100, 1000)
	if err != nil {
		return err
	}
	es, err := s.store.Audit(r.Context(), account, int64(limit)+1)
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	more := len(es) > limit
	es = es[:min(len(es), limit)]
	out := make([]auditJSON, 0, len(es))
	for _, e := range es {
		out = append(out, auditJSON{ID: e.ID, Object: "audit_entry", Actor: e.Actor, Action: e.Action, Target: e.Target,
			CreatedAt: e.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
	}
	writeJSON(w, http.StatusOK, listJSON[auditJSON]{Object: "list", Data: out, HasMore: more})
	return nil
}

// audit records a change made by the request's caller.
func (s *Server) audit(ctx context.Context, account, action, target string) error {
	if _, err := s.store.AppendAudit(ctx, metering.AuditEntry{Account: account, Actor: actor(ctx), Action: action, Target: target}); err != nil {
		return fmt.Errorf("recording %s of %s: %w", action, target, err)
	}
	return nil
}

// optionalBudget parses a request's budget member; absent (or null) is no
// budget.
func optionalBudget(raw json.RawMessage) (int64, string, error) {
	if raw == nil {
		return 0, "", nil
	}
	return parseBudget(raw)
}
