package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// Promotions is what the promotional-credit routes need of the store
// (*metering.Store satisfies it).
type Promotions interface {
	CreatePromoCode(ctx context.Context, p metering.PromoCode) error
	Redeem(ctx context.Context, account, code string) (metering.Redeemed, error)
	PromoCode(ctx context.Context, code string) (metering.PromoCode, error)
	PromoGrants(ctx context.Context, account string) ([]metering.PromoGrantLeft, error)
	SweepPromos(ctx context.Context, now time.Time, limit int64) (int, error)
	PromoAccounts(ctx context.Context, fn func(account string) error) error
	IndexPromos(ctx context.Context, account string) error
	ExpirePromos(ctx context.Context, account string, now time.Time) (metering.ExpiredPromos, error)
}

var _ Promotions = (*metering.Store)(nil)

// maxCodeCredits bounds one code's grant: 1e9 credits.
const maxCodeCredits = 1_000_000_000_000

// POST /admin/v1/promo-codes {"code","credits","max_redemptions","expires_at","grant_expires_in"}
// → 201 the code. credits in credits; expires_at RFC 3339 (optional: never);
// grant_expires_in a Go duration such as "720h" (optional: grants never
// expire); max_redemptions (optional, 0: no bound). 409 when the code exists.
func (s *Server) adminCreatePromo(w http.ResponseWriter, r *http.Request) error {
	promo, ok := s.store.(Promotions)
	if !ok {
		return errNoRoute
	}
	var req struct {
		Code           string      `json:"code"`
		Credits        json.Number `json:"credits"`
		MaxRedemptions *int64      `json:"max_redemptions"`
		ExpiresAt      string      `json:"expires_at"`
		GrantExpiresIn string      `json:"grant_expires_in"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if !metering.ValidPromoCode(req.Code) {
		return badRequest("invalid_code", "code", "code must be 1–64 letters, digits, - or _")
	}
	if req.Credits == "" {
		return badRequest("missing_amount", "credits", "credits is required")
	}
	mc, err := parseCredits("credits", req.Credits)
	if err != nil {
		return err
	}
	if mc <= 0 || mc > maxCodeCredits {
		return badRequest("invalid_amount", "credits", "credits must be more than 0 and at most 1,000,000,000")
	}
	p := metering.PromoCode{Code: req.Code, Credits: mc}
	if req.MaxRedemptions != nil {
		if *req.MaxRedemptions < 0 {
			return badRequest("invalid_max_redemptions", "max_redemptions", "max_redemptions must not be negative")
		}
		p.MaxRedemptions = *req.MaxRedemptions
	}
	if req.ExpiresAt != "" {
		if p.ExpiresAt, err = time.Parse(time.RFC3339, req.ExpiresAt); err != nil {
			return badRequest("invalid_expires_at", "expires_at", "expires_at must be an RFC 3339 time")
		}
	}
	if req.GrantExpiresIn != "" {
		if p.GrantExpiresIn, err = time.ParseDuration(req.GrantExpiresIn); err != nil || p.GrantExpiresIn < time.Second {
			return badRequest("invalid_grant_expires_in", "grant_expires_in",
				"grant_expires_in must be a duration of at least 1s, such as \"720h\"")
		}
	}
	if err := promo.CreatePromoCode(r.Context(), p); err != nil {
		if errors.Is(err, metering.ErrPromoExists) {
			return conflict("code_exists", "a promotional code %q already exists", req.Code)
		}
		return fmt.Errorf("creating promotional code: %w", err)
	}
	writeJSON(w, http.StatusCreated, promoCodeView(p))
	return nil
}

// GET /admin/v1/promo-codes/{code} → the code and how many accounts redeemed it.
func (s *Server) adminPromo(w http.ResponseWriter, r *http.Request) error {
	promo, ok := s.store.(Promotions)
	if !ok {
		return errNoRoute
	}
	p, err := promo.PromoCode(r.Context(), r.PathValue("code"))
	if errors.Is(err, metering.ErrNotFound) {
		return notFound("code_not_found", "no such promotional code")
	}
	if err != nil {
		return fmt.Errorf("reading promotional code: %w", err)
	}
	writeJSON(w, http.StatusOK, promoCodeView(p))
	return nil
}

type promoCodeJSON struct {
	Code           string  `json:"code"`
	Credits        Credits `json:"credits"`
	MaxRedemptions int64   `json:"max_redemptions"`
	ExpiresAt      *string `json:"expires_at"`
	GrantExpiresIn *string `json:"grant_expires_in"`
	Redeemed       int64   `json:"redeemed"`
}

func promoCodeView(p metering.PromoCode) promoCodeJSON {
	v := promoCodeJSON{Code: p.Code, Credits: Credits(p.Credits), MaxRedemptions: p.MaxRedemptions, Redeemed: p.Redeemed}
	if !p.ExpiresAt.IsZero() {
		v.ExpiresAt = optString(timestamp(p.ExpiresAt))
	}
	if p.GrantExpiresIn > 0 {
		v.GrantExpiresIn = optString(p.GrantExpiresIn.String())
	}
	return v
}

// POST /v1/billing/redeem {"code"} → 200 {"credits","balance","expires_at"}:
// once per account. Unknown or expired code → 400; redeemed before by this
// account, or no redemption left → 409.
func (s *Server) redeem(w http.ResponseWriter, r *http.Request, account string) error {
	promo, ok := s.store.(Promotions)
	if !ok {
		return errNoRoute
	}
	var req struct {
		Code string `json:"code"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Code == "" {
		return badRequest("missing_code", "code", "code is required")
	}
	res, err := promo.Redeem(r.Context(), account, req.Code)
	switch {
	case errors.Is(err, metering.ErrNotFound):
		return badRequest("invalid_code", "code", "no such promotional code")
	case errors.Is(err, metering.ErrPromoExpired):
		return badRequest("code_expired", "code", "this promotional code has expired")
	case errors.Is(err, metering.ErrPromoRedeemed):
		return conflict("code_already_redeemed", "this account has already redeemed this code")
	case errors.Is(err, metering.ErrPromoExhausted):
		return conflict("code_exhausted", "this promotional code has no redemptions left")
	case err != nil:
		return fmt.Errorf("redeeming: %w", err)
	}
	var exp *string
	if !res.ExpiresAt.IsZero() {
		exp = optString(timestamp(res.ExpiresAt))
	}
	writeJSON(w, http.StatusOK, struct {
		Credits   Credits `json:"credits"`
		Balance   Credits `json:"balance"`
		ExpiresAt *string `json:"expires_at"`
	}{Credits(res.Credits), Credits(res.BalanceAfter), exp})
	return nil
}

// promoSplit is the paid/promotional split of a balance and the earliest
// expiry of a promotional grant (nil: none expires). A grant already past its
// expiry is expired first (lazily; the sweeper does it otherwise), so that
// what is shown is what may be spent.
func (s *Server) promoSplit(ctx context.Context, a metering.Account) (metering.Account, *string, error) {
	promo, ok := s.store.(Promotions)
	if !ok || a.Promotional == 0 {
		return a, nil, nil
	}
	gs, err := promo.PromoGrants(ctx, a.ID)
	if err != nil {
		return a, nil, fmt.Errorf("reading promotional grants: %w", err)
	}
	var earliest time.Time
	for _, g := range gs {
		if !g.ExpiresAt.IsZero() && (earliest.IsZero() || g.ExpiresAt.Before(earliest)) {
			earliest = g.ExpiresAt
		}
	}
	if !earliest.IsZero() && !earliest.After(time.Now()) {
		ex, err := promo.ExpirePromos(ctx, a.ID, time.Now())
		if err != nil {
			return a, nil, fmt.Errorf("expiring promotional credits: %w", err)
		}
		if ex.Taken == 0 {
			// Kept for calls in flight (promo_expire.lua): shown as it is.
			return a, optString(timestamp(earliest)), nil
		}
		if a, err = s.store.Account(ctx, a.ID); err != nil {
			return a, nil, fmt.Errorf("reading balance: %w", err)
		}
		return s.promoSplit(ctx, a)
	}
	if earliest.IsZero() {
		return a, nil, nil
	}
	return a, optString(timestamp(earliest)), nil
}

// RunPromoSweeper expires promotional grants as they fall due (every
// interval; default 5s), until ctx ends, and every hour puts back in the
// sweeper's index any account with grants (the backstop). The billing
// process runs it.
func (s *Server) RunPromoSweeper(ctx context.Context, interval time.Duration) {
	promo, ok := s.store.(Promotions)
	if !ok {
		return
	}
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastIndex := time.Time{}
	for {
		if time.Since(lastIndex) > time.Hour {
			if err := promo.PromoAccounts(ctx, func(a string) error { return promo.IndexPromos(ctx, a) }); err != nil && ctx.Err() == nil {
				s.log.Warn("indexing promotional grants", zap.Error(err))
			} else {
				lastIndex = time.Now()
			}
		}
		if _, err := promo.SweepPromos(ctx, time.Now(), 0); err != nil && ctx.Err() == nil {
			s.log.Warn("expiring promotional credits", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
