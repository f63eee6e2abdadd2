package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/metering"
)

// Error types, as in OpenAI's error schema.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeNotFound       = "not_found_error"
	typeConflict       = "conflict_error"
	typePayment        = "payment_required"
	typeServer         = "server_error"
	typeUnavailable    = "service_unavailable"
	typeRateLimit      = "rate_limit_error"
)

// apiError is an error whose message is meant for the client. Every other
// error is answered with a generic message and logged.
type apiError struct {
	status  int
	typ     string
	code    string
	param   string
	message string
	// url, when set, is written beside the error as "url": where the caller
	// finishes what the request could not (a Checkout page after a 402).
	url string
	// retryAfter, when set, is sent as Retry-After (seconds).
	retryAfter int
}

func (e *apiError) Error() string {
	return fmt.Sprintf("billing: %d %s: %s", e.status, e.code, e.message)
}

func badRequest(code, param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: code, param: param, message: fmt.Sprintf(format, args...)}
}

func notFound(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusNotFound, typ: typeNotFound, code: code, message: fmt.Sprintf(format, args...)}
}

func conflict(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusConflict, typ: typeConflict, code: code, message: fmt.Sprintf(format, args...)}
}

// paymentRequired is a 402 whose body carries the URL of a Checkout page
// where the buyer can finish paying.
func paymentRequired(code, checkoutURL, format string, args ...any) *apiError {
	return &apiError{status: http.StatusPaymentRequired, typ: typePayment, code: code, url: checkoutURL,
		message: fmt.Sprintf(format, args...)}
}

// Errors with fixed answers.
var (
	// errInvalidToken answers every JWT failure alike: nothing says why.
	errInvalidToken = &apiError{status: http.StatusUnauthorized, typ: typeAuthentication, code: "invalid_token",
		message: "invalid or expired token"}
	errMissingToken = &apiError{status: http.StatusUnauthorized, typ: typeAuthentication, code: "invalid_token",
		message: "missing bearer token: send Authorization: Bearer <JWT issued by your app>"}
	errAPIKeyRefused = &apiError{status: http.StatusUnauthorized, typ: typeAuthentication, code: "api_key_not_accepted",
		message: "API keys (tg-…) are not accepted by the billing API: send Authorization: Bearer <JWT issued by your app>"}
	errAdminAuth = &apiError{status: http.StatusUnauthorized, typ: typeAuthentication, code: "invalid_admin_token",
		message: "missing or invalid admin token"}
	errJWTOff = &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "auth_not_configured",
		message: "user authentication is not configured on this server (billing.jwt.secret or billing.jwt.public_key_file)"}
	errPaymentsOff = &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "payments_not_configured",
		message: "payments are not configured on this server (STRIPE_SECRET_KEY is not set)"}
	errWebhooksOff = &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "webhooks_not_configured",
		message: "Stripe webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET is not set)"}
	errBadSignature = &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_signature",
		message: "webhook signature verification failed"}
	errNoRoute = &apiError{status: http.StatusNotFound, typ: typeNotFound, code: "not_found",
		message: "no such endpoint"}
)

// errStripe wraps every failure of a Stripe call (API or network): 502.
var errStripe = errors.New("billing: payment provider error")

// writeError maps err to a status and an OpenAI-shaped body. It is the only
// place where errors become responses. Internal details never reach the body:
// they are logged with the request id.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := s.classify(err)
	info := infoFrom(r.Context())
	if e.status >= 500 {
		s.log.Error("request failed", zap.String("request_id", info.id), zap.String("account", info.account),
			zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Int("status", e.status), zap.Error(err))
	} else if ce := s.log.Check(zap.DebugLevel, "request refused"); ce != nil {
		ce.Write(zap.String("request_id", info.id), zap.String("code", e.code), zap.Error(err))
	}
	type body struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Param   *string `json:"param"`
	}
	b := body{Message: e.message, Type: e.typ, Code: e.code}
	if e.param != "" {
		b.Param = &e.param
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate"`)
	}
	writeJSON(w, e.status, struct {
		Error body   `json:"error"`
		URL   string `json:"url,omitempty"`
	}{b, e.url})
}

func (s *Server) classify(err error) *apiError {
	var e *apiError
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, metering.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "store_unavailable",
			message: "the credit store is unavailable; try again shortly"}
	case errors.Is(err, metering.ErrPending):
		// Webhooks only: Stripe retries until the purchase it refers to is credited.
		return &apiError{status: http.StatusServiceUnavailable, typ: typeUnavailable, code: "retry_later",
			message: "the payment this event refers to is not credited yet; retry later"}
	case errors.Is(err, metering.ErrNoAccount):
		return notFound("account_not_found", "no such account")
	case errors.Is(err, metering.ErrAccountExists):
		return &apiError{status: http.StatusConflict, typ: typeConflict, code: "account_exists", message: "the account already exists"}
	case errors.Is(err, metering.ErrNoKey):
		return notFound("key_not_found", "no such API key")
	case errors.Is(err, metering.ErrNoMember):
		return notFound("member_not_found", "no such member")
	case errors.Is(err, metering.ErrLastOwner):
		return conflict("last_owner", "an account needs at least one owner: make another member owner first")
	case errors.Is(err, metering.ErrOwnerOnly):
		return &apiError{status: http.StatusForbidden, typ: typePermission, code: "owner_required",
			message: "only an owner may grant, change or remove the owner role"}
	case errors.Is(err, metering.ErrTooMany):
		return conflict("too_many_members", "an account may have at most %d members", metering.MaxMembers)
	case errors.Is(err, metering.ErrNotFound):
		return notFound("not_found", "not found")
	case errors.Is(err, errStripe):
		return &apiError{status: http.StatusBadGateway, typ: typeServer, code: "payment_provider_error",
			message: "the payment provider could not complete the request; try again"}
	}
	return &apiError{status: http.StatusInternalServerError, typ: typeServer, code: "internal_error", message: "internal error"}
}
