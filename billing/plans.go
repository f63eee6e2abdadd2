package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/pricing"
)

// metaPlan names the plan on Stripe subscriptions and their checkouts.
const metaPlan = "plan"

type subscribeRequest struct {
	PlanID     string       `json:"planId"`
	Seats      *json.Number `json:"seats"`
	SuccessURL string       `json:"successUrl"`
	CancelURL  string       `json:"cancelUrl"`
}

// POST /api/billing/checkout {"planId","seats"?,"successUrl"?,"cancelUrl"?} →
// {"url"}: a Checkout Session in subscription mode for the plan's Stripe
// price, quantity = seats. The plan arrives with the subscription webhooks.
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, account string) error {
	var req subscribeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	plan, ok := config.FindPlan(s.plans, req.PlanID)
	if !ok {
		return badRequest("unknown_plan", "planId", "unknown plan %q; plans: %s", req.PlanID, s.planIDs())
	}
	seats := plan.MinSeats
	if req.Seats != nil {
		n, err := req.Seats.Int64()
		if err != nil || !plan.Seats(n) {
			max := "no maximum"
			if plan.MaxSeats > 0 {
				max = fmt.Sprintf("at most %d", plan.MaxSeats)
			}
			return badRequest("invalid_seats", "seats", "seats must be a whole number, at least %d and %s, for the %s plan",
				plan.MinSeats, max, plan.Name)
		}
		seats = n
	}
	success, cancel := s.successURL, s.cancelURL
	if req.SuccessURL != "" {
		if !s.redirectAllowed(req.SuccessURL) {
			return errRedirect("successUrl")
		}
		success = req.SuccessURL
	}
	if req.CancelURL != "" {
		if !s.redirectAllowed(req.CancelURL) {
			return errRedirect("cancelUrl")
		}
		cancel = req.CancelURL
	}
	if s.stripe == nil {
		return errPaymentsOff
	}
	ctx := r.Context()
	cur, err := s.store.Subscription(ctx, account)
	if err != nil {
		return fmt.Errorf("reading subscription: %w", err)
	}
	if cur.Live() {
		return conflict("already_subscribed",
			"this account already has a %s subscription (%s): change plan or seats in the billing portal (POST /api/billing/portal)",
			s.planName(cur.Plan), cur.Status)
	}
	customer, err := s.customer(ctx, account)
	if err != nil {
		return err
	}
	meta := map[string]string{metaAccount: account, metaPlan: plan.ID}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		Customer:          stripe.String(customer),
		ClientReferenceID: stripe.String(account),
		SuccessURL:        stripe.String(success),
		CancelURL:         stripe.String(cancel),
		LineItems: []*stripe.CheckoutSessionLineItemParams{{
			Price: stripe.String(plan.StripePriceID), Quantity: stripe.Int64(seats),
		}},
		Metadata:         meta,
		SubscriptionData: &stripe.CheckoutSessionSubscriptionDataParams{Metadata: meta},
	}
	params.Context = ctx
	key := "subscribe-" + account + "-" + randomHex(16)
	if k := r.Header.Get("Idempotency-Key"); k != "" && len(k) <= 64 && plainID(k) {
		key = "subscribe-" + account + "-" + plan.ID + "-" + k
	}
	params.SetIdempotencyKey(key)
	sess, err := s.stripe.CheckoutSessions.New(params)
	if err != nil {
		return fmt.Errorf("creating subscription checkout: %w: %w", errStripe, err)
	}
	if sess.URL == "" {
		return fmt.Errorf("creating subscription checkout: %w: response without url", errStripe)
	}
	s.log.Info("subscription checkout created", zap.String("request_id", infoFrom(ctx).id), zap.String("account", account),
		zap.String("plan", plan.ID), zap.Int64("seats", seats), zap.String("session_id", sess.ID))
	writeJSON(w, http.StatusOK, struct {
		URL string `json:"url"`
	}{sess.URL})
	return nil
}

func errRedirect(param string) *apiError {
	return badRequest("invalid_redirect_url", param,
		"%s must be an absolute http(s) URL on one of the allowed origins (billing.allowed_origins)", param)
}

func (s *Server) planIDs() string {
	ids := make([]string, len(s.plans))
	for i, p := range s.plans {
		ids[i] = p.ID
	}
	if len(ids) == 0 {
		return "none are configured"
	}
	return strings.Join(ids, ", ")
}

func (s *Server) planName(id string) string {
	if p, ok := config.FindPlan(s.plans, id); ok {
		return p.Name
	}
	return id
}

// POST /api/billing/portal {"returnUrl"?} → {"url"}: a Stripe billing portal
// session for the account's customer (cards, invoices, plan changes).
func (s *Server) portal(w http.ResponseWriter, r *http.Request, account string) error {
	var req struct {
		ReturnURL string `json:"returnUrl"`
	}
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	ret := s.returnURL
	if req.ReturnURL != "" {
		if !s.redirectAllowed(req.ReturnURL) {
			return errRedirect("returnUrl")
		}
		ret = req.ReturnURL
	}
	if s.stripe == nil {
		return errPaymentsOff
	}
	ctx := r.Context()
	customer, err := s.customer(ctx, account)
	if err != nil {
		return err
	}
	params := &stripe.BillingPortalSessionParams{Customer: stripe.String(customer), ReturnURL: stripe.String(ret)}
	params.Context = ctx
	sess, err := s.stripe.BillingPortalSessions.New(params)
	if err != nil {
		return fmt.Errorf("creating portal session: %w: %w", errStripe, err)
	}
	if sess.URL == "" {
		return fmt.Errorf("creating portal session: %w: response without url", errStripe)
	}
	writeJSON(w, http.StatusOK, struct {
		URL string `json:"url"`
	}{sess.URL})
	return nil
}

// POST /api/billing/cancel → {"status":"cancelled","cancelAt"}: the
// subscription ends at the end of its period; the plan stays until then.
func (s *Server) cancel(w http.ResponseWriter, r *http.Request, account string) error {
	ctx := r.Context()
	sub, err := s.store.Subscription(ctx, account)
	if err != nil {
		return fmt.Errorf("reading subscription: %w", err)
	}
	if !sub.Live() {
		return notFound("no_subscription", "this account has no active subscription to cancel")
	}
	if s.stripe == nil {
		return errPaymentsOff
	}
	params := &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}
	params.Context = ctx
	params.SetIdempotencyKey("cancel-" + sub.ID + "-" + randomHex(8))
	got, err := s.stripe.Subscriptions.Update(sub.ID, params)
	if err != nil {
		return fmt.Errorf("cancelling subscription: %w: %w", errStripe, err)
	}
	// The period end Stripe's events gave us; Stripe's answer when we have none.
	cancelAt := sub.PeriodEnd
	if !cancelAt.After(time.Now()) {
		switch {
		case got.CancelAt > 0:
			cancelAt = time.Unix(got.CancelAt, 0).UTC()
		case got.CurrentPeriodEnd > 0:
			cancelAt = time.Unix(got.CurrentPeriodEnd, 0).UTC()
		}
	}
	if _, err := s.store.ScheduleCancel(ctx, account, sub.ID, cancelAt); err != nil {
		return fmt.Errorf("recording cancellation: %w", err)
	}
	s.log.Info("subscription cancelled at period end", zap.String("request_id", infoFrom(ctx).id),
		zap.String("account", account), zap.String("subscription", sub.ID), zap.Time("cancel_at", cancelAt))
	writeJSON(w, http.StatusOK, struct {
		Status   string  `json:"status"`
		CancelAt *string `json:"cancelAt"`
	}{"cancelled", optTime(cancelAt)})
	return nil
}

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := timestamp(t)
	return &s
}

// subscriptionJSON is the account's live subscription as the usage endpoint
// shows it, beside the plan's id.
type subscriptionJSON struct {
	PlanName string  `json:"planName"`
	Status   string  `json:"status"` // active, trialing or past_due
	Seats    int64   `json:"seats"`
	CancelAt *string `json:"cancelAt"` // set once cancelled at the period's end
}

type countJSON struct {
	Used  int64  `json:"used"`
	Limit *int64 `json:"limit"` // null: unlimited
}

type creditsUsedJSON struct {
	Used  Credits  `json:"used"`
	Limit *Credits `json:"limit"`
}

type usageJSON struct {
	Plan         *string           `json:"plan"`         // the plan's id; null without a live subscription
	Subscription *subscriptionJSON `json:"subscription"` // null without a live subscription
	Period       struct {
		Start string `json:"start"`
		End   string `json:"end"`
	} `json:"period"`
	Usage struct {
		Requests          countJSON       `json:"requests"`
		InputTokens       countJSON       `json:"inputTokens"`
		OutputTokens      countJSON       `json:"outputTokens"`
		Credits           creditsUsedJSON `json:"credits"`
		APIKeys           countJSON       `json:"apiKeys"`
		RequestsPerMinute countJSON       `json:"requestsPerMinute"`
	} `json:"usage"`
}

func limitOf(n int64) *int64 {
	if n <= 0 {
		return nil
	}
	return &n
}

// GET /api/billing/usage → the plan, the billing period and, for each limit
// that matters to a gateway, what was used and the limit (null: unlimited).
// The counters are the ones the proxy enforces.
func (s *Server) usage(w http.ResponseWriter, r *http.Request, account string) error {
	ctx := r.Context()
	sub, u, err := s.store.PlanUsage(ctx, account)
	if err != nil {
		return fmt.Errorf("reading usage: %w", err)
	}
	keys, err := s.activeKeys(ctx, account)
	if err != nil {
		return err
	}
	var out usageJSON
	var lim config.PlanLimits
	if sub.Live() {
		p, ok := config.FindPlan(s.plans, sub.Plan)
		if ok {
			lim = p.Effective(sub.Seats)
		} else {
			p = config.Plan{ID: sub.Plan, Name: sub.Plan}
		}
		var cancelAt *string
		if sub.CancelAtPeriodEnd {
			cancelAt = optTime(sub.CancelAt)
		}
		out.Plan = &p.ID
		out.Subscription = &subscriptionJSON{PlanName: p.Name, Status: sub.Status, Seats: sub.Seats, CancelAt: cancelAt}
	}
	out.Period.Start, out.Period.End = timestamp(u.Period.Start), timestamp(u.Period.End)
	use := &out.Usage
	use.Requests = countJSON{u.Requests, limitOf(lim.Requests)}
	use.InputTokens = countJSON{u.InputTokens, limitOf(lim.InputTokens)}
	use.OutputTokens = countJSON{u.OutputTokens, limitOf(lim.OutputTokens)}
	use.Credits.Used = Credits(u.Credits)
	if lim.Credits > 0 {
		c := Credits(lim.Credits * pricing.MilliPerCredit)
		use.Credits.Limit = &c
	}
	use.APIKeys = countJSON{int64(keys), limitOf(lim.APIKeys)}
	use.RequestsPerMinute = countJSON{u.RequestsThisMinute, limitOf(lim.RequestsPerMinute)}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// planKeyLimit is the active API keys the account's plan allows (0: no plan limit).
func (s *Server) planKeyLimit(ctx context.Context, account string) (int64, string, error) {
	sub, err := s.store.Subscription(ctx, account)
	if err != nil {
		return 0, "", fmt.Errorf("reading subscription: %w", err)
	}
	if !sub.Live() {
		return 0, "", nil
	}
	p, ok := config.FindPlan(s.plans, sub.Plan)
	if !ok {
		return 0, "", nil
	}
	return p.Effective(sub.Seats).APIKeys, p.Name, nil
}
