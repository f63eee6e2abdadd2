package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"unicode/utf8"

	"github.com/tollgate/tollgate/metering"
)

const maxKeyName = 100

// keyJSON is an API key as listed. The secret is never stored, so never listed.
type keyJSON struct {
	ID          string   `json:"id"`
	Object      string   `json:"object"`
	Name        string   `json:"name"`
	Hint        string   `json:"hint"`
	CreditLimit *Credits `json:"credit_limit"` // null: no limit
	Used        Credits  `json:"used"`
	CreatedAt   string   `json:"created_at"`
	CreatedBy   *string  `json:"created_by"` // the member who created it; null: the account itself or an operator
	Revoked     bool     `json:"revoked"`
	keyRules             // keyrules.go
}

// newKeyJSON is a key just created: the only time its secret is shown.
type newKeyJSON struct {
	keyJSON
	Key string `json:"key"`
}

func keyView(k metering.KeyUsage) keyJSON {
	v := keyJSON{ID: k.ID, Object: "api_key", Name: k.Name, Hint: k.Hint, Used: Credits(k.Used),
		CreatedAt: timestamp(k.CreatedAt), Revoked: k.Revoked, keyRules: keyRulesView(k.KeySettings, k.PeriodUsed)}
	if k.CreatedBy != "" {
		by := k.CreatedBy
		v.CreatedBy = &by
	}
	if k.CreditLimit > 0 {
		l := Credits(k.CreditLimit)
		v.CreditLimit = &l
	}
	return v
}

type createKeyRequest struct {
	Name        string       `json:"name"`
	CreditLimit *json.Number `json:"credit_limit"` // credits; absent or null: no limit
	keyRulesRequest
}

// createKey validates the request and issues a key for account.
func (s *Server) createKey(ctx context.Context, w http.ResponseWriter, r *http.Request, account string, capped bool) error {
	var req createKeyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		req.Name = "default"
	}
	if !utf8.ValidString(req.Name) || utf8.RuneCountInString(req.Name) > maxKeyName {
		return badRequest("invalid_name", "name", "name must be valid text of at most %d characters", maxKeyName)
	}
	var limit int64
	if req.CreditLimit != nil {
		mc, err := parseCredits("credit_limit", *req.CreditLimit)
		if err != nil {
			return err
		}
		if mc <= 0 {
			return badRequest("invalid_amount", "credit_limit", "credit_limit must be a positive number of credits (omit it for no limit)")
		}
		limit = mc
	}
	// Its audit entry is written by the script that creates it.
	nk := metering.NewKey{Account: account, Name: req.Name, CreditLimit: limit, Actor: actor(ctx)}
	if c, ok := callerFrom(ctx); ok {
		nk.CreatedBy = c.user
	}
	if err := s.applyKeyRules(req.keyRulesRequest, &nk.Settings); err != nil {
		return err
	}
	var refusal *apiError
	if capped {
		var err error
		if nk.MaxActive, refusal, err = s.keyCap(ctx, account); err != nil {
			return err
		}
	}
	// Counted and created in one script: concurrent requests never get past the cap.
	k, secret, err := s.store.IssueKey(ctx, nk)
	if errors.Is(err, metering.ErrTooManyKeys) && refusal != nil {
		return refusal
	}
	if errors.Is(err, metering.ErrNoMember) { // removed since it was authorized
		return errNotMember
	}
	if err != nil {
		return fmt.Errorf("creating key: %w", err)
	}
	writeJSON(w, http.StatusCreated, newKeyJSON{keyJSON: keyView(metering.KeyUsage{Key: k}), Key: secret})
	return nil
}

// keyCap is how many active API keys an account may have when it creates
// them itself, and the answer once it has them: the lower of the per-account
// cap (Options.MaxKeysPerAccount: 409 too_many_keys) and its plan's api_keys
// limit (409 plan_limit_reached). Operators (the admin API, the CLI) are not
// capped.
func (s *Server) keyCap(ctx context.Context, account string) (int, *apiError, error) {
	planMax, plan, err := s.planKeyLimit(ctx, account)
	if err != nil {
		return 0, nil, err
	}
	if planMax > 0 && planMax < int64(s.opts.MaxKeysPerAccount) {
		return int(planMax), conflict("plan_limit_reached",
			"the %s plan allows %d active API keys (limit api_keys); revoke one or change plan", plan, planMax), nil
	}
	return s.opts.MaxKeysPerAccount, conflict("too_many_keys",
		"an account may have at most %d active API keys; revoke one first", s.opts.MaxKeysPerAccount), nil
}

func (s *Server) activeKeys(ctx context.Context, account string) (int, error) {
	keys, err := s.store.Keys(ctx, account)
	if err != nil {
		return 0, fmt.Errorf("counting keys: %w", err)
	}
	n := 0
	for _, k := range keys {
		if !k.Revoked {
			n++
		}
	}
	return n, nil
}

func (s *Server) listKeys(ctx context.Context, w http.ResponseWriter, account string) error {
	keys, err := s.store.Keys(ctx, account)
	if err != nil {
		return fmt.Errorf("listing keys: %w", err)
	}
	c, member := callerFrom(ctx)
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		if !member || c.owns(k.Key) {
			out = append(out, keyView(k))
		}
	}
	writeJSON(w, http.StatusOK, listJSON[keyJSON]{Object: "list", Data: out})
	return nil
}

func (s *Server) revokeKey(ctx context.Context, w http.ResponseWriter, account, keyID string) error {
	if !metering.ValidAccountID(keyID) {
		return notFound("key_not_found", "no such API key")
	}
	if c, ok := callerFrom(ctx); ok && !c.may(permAllKeys) {
		// A plain member's: only the keys it created; another's is "no such key".
		keys, err := s.store.Keys(ctx, account)
		if err != nil {
			return fmt.Errorf("revoking key: %w", err)
		}
		if !slices.ContainsFunc(keys, func(k metering.KeyUsage) bool { return k.ID == keyID && c.owns(k.Key) }) {
			return notFound("key_not_found", "no such API key")
		}
	}
	if err := s.store.RevokeKey(ctx, account, keyID); err != nil {
		return fmt.Errorf("revoking key: %w", err)
	}
	if err := s.audit(ctx, account, auditKeyRevoked, keyID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listJSON is a page of a list.
type listJSON[T any] struct {
	Object  string `json:"object"`
	Data    []T    `json:"data"`
	HasMore bool   `json:"has_more"`
}

// POST /v1/keys
func (s *Server) createOwnKey(w http.ResponseWriter, r *http.Request, account string) error {
	return s.createKey(r.Context(), w, r, account, true)
}

// GET /v1/keys
func (s *Server) listOwnKeys(w http.ResponseWriter, r *http.Request, account string) error {
	return s.listKeys(r.Context(), w, account)
}

// DELETE /v1/keys/{id}: only the caller's own keys; another account's key is
// "no such key".
func (s *Server) revokeOwnKey(w http.ResponseWriter, r *http.Request, account string) error {
	return s.revokeKey(r.Context(), w, account, r.PathValue("id"))
}
