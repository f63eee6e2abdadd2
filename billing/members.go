package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// Teams: an account's members and its audit log. Who may call these routes
// is authz.go's business; metering keeps a team governable (an owner always
// remains; only owners touch the owner role).

// Audit actions.
const (
	auditMemberAdded   = "member.added"
	auditMemberUpdated = "member.updated"
	auditMemberRemoved = "member.removed"
	auditKeyCreated    = "key.created"
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
	var budget int64
	var period string
	if req.Budget != nil {
		var err error
		if budget, period, err = parseBudget(req.Budget); err != nil {
			return err
		}
	}
	ctx := r.Context()
	c, _ := callerFrom(ctx)
	prev, err := s.store.ChangeMember(ctx, metering.MemberChange{Account: account, User: req.User, Role: req.Role,
		ByOwner: c.role == metering.RoleOwner})
	if err != nil {
		return err
	}
	if req.Budget != nil {
		if err := s.store.SetMemberBudget(ctx, account, req.User, budget, period); err != nil {
			return err
		}
	}
	action, status := auditMemberUpdated, http.StatusOK
	if prev == "" {
		action, status = auditMemberAdded, http.StatusCreated
	}
	if err := s.audit(ctx, account, action, req.User); err != nil {
		return err
	}
	budgets, err := s.store.MemberBudgets(ctx, account)
	if err != nil {
		return err
	}
	writeJSON(w, status, memberView(metering.Member{User: req.User, Role: req.Role}, budgets[req.User]))
	return nil
}

// DELETE /v1/members/{user}
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, account string) error {
	user := r.PathValue("user")
	if !metering.ValidAccountID(user) {
		return notFound("member_not_found", "no such member")
	}
	c, _ := callerFrom(r.Context())
	if _, err := s.store.ChangeMember(r.Context(), metering.MemberChange{Account: account, User: user,
		ByOwner: c.role == metering.RoleOwner}); err != nil {
		return err
	}
	if err := s.audit(r.Context(), account, auditMemberRemoved, user); err != nil {
		return err
	}
	if err := s.revokeKeysOf(r.Context(), account, user); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeKeysOf revokes the active keys a removed member created: someone
// who left the team no longer spends its credits. (A retried removal finds
// the member gone, 404, after this ran; should it have failed half-way, an
// admin revokes what is left: the keys stay listed with their creator.)
func (s *Server) revokeKeysOf(ctx context.Context, account, user string) error {
	keys, err := s.store.Keys(ctx, account)
	if err != nil {
		return fmt.Errorf("listing the removed member's keys: %w", err)
	}
	for _, k := range keys {
		if k.Revoked || k.CreatedBy != user {
			continue
		}
		if err := s.store.RevokeKey(ctx, account, k.ID); err != nil {
			return fmt.Errorf("revoking the removed member's key: %w", err)
		}
		if err := s.audit(ctx, account, auditKeyRevoked, k.ID); err != nil {
			return err
		}
	}
	return nil
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

// auditLogged is audit for a change whose answer must go out regardless (a
// new key's secret is shown once): a failure is logged, not returned.
func (s *Server) auditLogged(ctx context.Context, account, action, target string) {
	if err := s.audit(ctx, account, action, target); err != nil {
		s.log.Error("audit entry lost", zap.String("request_id", infoFrom(ctx).id), zap.String("account", account),
			zap.String("action", action), zap.String("target", target), zap.Error(err))
	}
}
