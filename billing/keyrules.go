package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/metering"
)

// Key rules (governance): what POST /v1/keys, the admin key endpoints and
// PATCH take besides name and credit_limit, and how GET /v1/keys shows them.
// The proxy enforces them (metering's reserve script); billing validates and
// stores them through one store method, SetKeySettings (or IssueKey).

// keyRules is the rules part of a key as listed: null where no rule is set.
type keyRules struct {
	Models      []string    `json:"models"`
	Budget      *budgetJSON `json:"budget"`
	ExpiresAt   *string     `json:"expires_at"`
	RPM         *int64      `json:"rpm"`
	TPM         *int64      `json:"tpm"`
	MaxParallel *int64      `json:"max_parallel"`
	// PeriodUsed is what the key spent in its budget period so far.
	PeriodUsed Credits `json:"period_used"`
}

type budgetJSON struct {
	Credits Credits `json:"credits"`
	Period  string  `json:"period"`
}

func keyRulesView(k metering.KeySettings, periodUsed int64) keyRules {
	v := keyRules{Models: k.Models, PeriodUsed: Credits(periodUsed)}
	if k.Budget > 0 {
		v.Budget = &budgetJSON{Credits: Credits(k.Budget), Period: k.BudgetPeriod}
	}
	if !k.ExpiresAt.IsZero() {
		t := timestamp(k.ExpiresAt)
		v.ExpiresAt = &t
	}
	opt := func(n int64) *int64 {
		if n <= 0 {
			return nil
		}
		return &n
	}
	v.RPM, v.TPM, v.MaxParallel = opt(k.RPM), opt(k.TPM), opt(k.MaxParallel)
	return v
}

// keyRulesRequest is the rules a request sets: an absent field leaves the
// rule as it is (PATCH) or unset (POST); null removes it.
type keyRulesRequest struct {
	Budget      json.RawMessage `json:"budget"`
	Models      json.RawMessage `json:"models"`
	ExpiresAt   json.RawMessage `json:"expires_at"`
	RPM         json.RawMessage `json:"rpm"`
	TPM         json.RawMessage `json:"tpm"`
	MaxParallel json.RawMessage `json:"max_parallel"`
}

const maxAllowedModels = 100

var jsonNull = []byte("null")

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), jsonNull) }

// apply changes ks by the request's fields.
func (s *Server) applyKeyRules(req keyRulesRequest, ks *metering.KeySettings) error {
	if req.Budget != nil {
		mc, period, err := parseBudget(req.Budget)
		if err != nil {
			return err
		}
		ks.Budget, ks.BudgetPeriod = mc, period
	}
	if req.Models != nil {
		ks.Models, ks.ModelIDs = nil, nil
		if !isNull(req.Models) {
			var names []string
			if err := json.Unmarshal(req.Models, &names); err != nil || len(names) == 0 || len(names) > maxAllowedModels {
				return badRequest("invalid_models", "models", "models must be a list of 1 to %d model names (null: any model)", maxAllowedModels)
			}
			seen := make(map[string]bool, len(names))
			for _, n := range names {
				m, err := s.catalog.Lookup(n)
				if err != nil {
					return badRequest("invalid_models", "models", "models: %q is not a model of this gateway (GET /v1/models lists them)", n)
				}
				if seen[n] {
					continue
				}
				seen[n] = true
				ks.Models, ks.ModelIDs = append(ks.Models, n), append(ks.ModelIDs, m.ID)
			}
		}
	}
	if req.ExpiresAt != nil {
		ks.ExpiresAt = time.Time{}
		if !isNull(req.ExpiresAt) {
			var v string
			t, err := time.Time{}, json.Unmarshal(req.ExpiresAt, &v)
			if err == nil {
				t, err = time.Parse(time.RFC3339, v)
			}
			if err != nil || t.Unix() <= 0 {
				return badRequest("invalid_expires_at", "expires_at", "expires_at must be an RFC 3339 time, such as 2030-01-02T15:04:05Z")
			}
			ks.ExpiresAt = t.UTC()
		}
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *int64
	}{{"rpm", req.RPM, &ks.RPM}, {"tpm", req.TPM, &ks.TPM}, {"max_parallel", req.MaxParallel, &ks.MaxParallel}} {
		if f.raw == nil {
			continue
		}
		*f.dst = 0
		if isNull(f.raw) {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(f.raw)), 10, 64)
		if err != nil || n <= 0 || n > metering.MaxRate {
			return badRequest("invalid_"+f.name, f.name, "%s must be a whole number from 1 to %d (null: no limit)", f.name, metering.MaxRate)
		}
		*f.dst = n
	}
	return nil
}

// parseBudget parses a budget as requests give it: {"credits","period"}, or
// null (no budget: 0, "").
func parseBudget(raw json.RawMessage) (int64, string, error) {
	if isNull(raw) {
		return 0, "", nil
	}
	var b struct {
		Credits json.Number `json:"credits"`
		Period  string      `json:"period"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return 0, "", badRequest("invalid_budget", "budget", `budget must be {"credits": <credits>, "period": "day"|"week"|"month"}`)
	}
	mc, err := parseCredits("budget.credits", b.Credits)
	if err != nil {
		return 0, "", err
	}
	if mc <= 0 {
		return 0, "", badRequest("invalid_budget", "budget.credits", "budget.credits must be a positive number of credits")
	}
	switch b.Period {
	case metering.PeriodDay, metering.PeriodWeek, metering.PeriodMonth:
	default:
		return 0, "", badRequest("invalid_budget", "budget.period", `budget.period must be "day", "week" or "month"`)
	}
	return mc, b.Period, nil
}

// patchKeyRequest is PATCH /v1/keys/{id}: the name and the rules.
type patchKeyRequest struct {
	Name *string `json:"name"`
	keyRulesRequest
}

// patchKey changes a key's name and rules.
func (s *Server) patchKey(ctx context.Context, w http.ResponseWriter, r *http.Request, account, keyID string) error {
	var req patchKeyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Name != nil && (*req.Name == "" || !utf8.ValidString(*req.Name) || utf8.RuneCountInString(*req.Name) > maxKeyName) {
		return badRequest("invalid_name", "name", "name must be valid text of 1 to %d characters", maxKeyName)
	}
	if !metering.ValidAccountID(keyID) {
		return notFound("key_not_found", "no such API key")
	}
	keys, err := s.store.Keys(ctx, account)
	if err != nil {
		return err
	}
	c, member := callerFrom(ctx)
	var cur *metering.KeyUsage
	for i := range keys {
		if keys[i].ID == keyID && !keys[i].Revoked && (!member || c.owns(keys[i].Key)) {
			cur = &keys[i]
		}
	}
	if cur == nil {
		return notFound("key_not_found", "no such API key")
	}
	ks := cur.KeySettings
	if err := s.applyKeyRules(req.keyRulesRequest, &ks); err != nil {
		return err
	}
	k, err := s.store.SetKeySettings(ctx, account, keyID, req.Name, ks)
	if err != nil {
		return err
	}
	if err := s.audit(ctx, account, auditKeyUpdated, keyID); err != nil {
		return err
	}
	periodUsed := cur.PeriodUsed
	if k.Budget == 0 {
		periodUsed = 0
	}
	writeJSON(w, http.StatusOK, keyView(metering.KeyUsage{Key: k, Used: cur.Used, PeriodUsed: periodUsed}))
	return nil
}

// PATCH /v1/keys/{id}: only the caller's own keys.
func (s *Server) patchOwnKey(w http.ResponseWriter, r *http.Request, account string) error {
	return s.patchKey(r.Context(), w, r, account, r.PathValue("id"))
}

// PATCH /admin/v1/accounts/{id}/keys/{keyId}
func (s *Server) adminPatchKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !metering.ValidAccountID(id) {
		return notFound("account_not_found", "no such account")
	}
	return s.patchKey(r.Context(), w, r, id, r.PathValue("keyId"))
}
