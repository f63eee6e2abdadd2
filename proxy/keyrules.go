package proxy

import (
	"errors"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// keyRuleError is what the caller sees when one of its API key's rules
// refused the call (metering enforces them where the call is held, the same
// on every replica).
func keyRuleError(e *metering.KeyRuleError) apiError {
	switch e.Rule {
	case metering.RuleExpired:
		return apiError{401, "authentication_error", "expired_api_key", "",
			"This API key expired at " + time.Unix(e.Max, 0).UTC().Format(time.RFC3339) + "."}
	case metering.RuleModel:
		return apiError{403, "permission_error", "model_not_allowed", "model",
			"This API key may not call this model; its settings list the models it may call."}
	case metering.RuleBudget:
		return apiError{402, "insufficient_quota", "key_budget_exhausted", "",
			"This API key's budget for the period is exhausted: this call needs at least " + pricing.FormatCredits(e.Needed) +
				" credits, " + pricing.FormatCredits(max(e.Left, 0)) + " are left until the period renews."}
	case metering.RuleMemberBudget:
		return apiError{402, "insufficient_quota", "member_budget_exhausted", "",
			"The budget of the team member who owns this API key is exhausted for the period: this call needs at least " +
				pricing.FormatCredits(e.Needed) + " credits, " + pricing.FormatCredits(max(e.Left, 0)) + " are left until the period renews."}
	case metering.RuleMaxParallel:
		return apiError{429, "rate_limit_error", "rate_limit_exceeded", "max_parallel",
			"This API key allows " + strconv.FormatInt(e.Max, 10) + " calls in parallel; retry when one has finished."}
	case metering.RuleRPM, metering.RuleTPM:
		what := "requests"
		if e.Rule == metering.RuleTPM {
			what = "tokens"
		}
		return apiError{429, "rate_limit_error", "rate_limit_exceeded", e.Rule,
			"This API key allows " + strconv.FormatInt(e.Max, 10) + " " + what + " per minute; retry in " +
				strconv.Itoa(keyRuleWait(e)) + "s."}
	}
	return apiError{403, "permission_error", "key_rule", "", "This API key's settings refuse this call."}
}

// keyRuleRetry is the Retry-After (whole seconds, at least 1) of a rate or
// parallel limit refusal, 0 for anything else.
func keyRuleRetry(err error) int {
	var kr *metering.KeyRuleError
	if !errors.As(err, &kr) {
		return 0
	}
	switch kr.Rule {
	case metering.RuleRPM, metering.RuleTPM, metering.RuleMaxParallel:
		return keyRuleWait(kr)
	}
	return 0
}

func keyRuleWait(e *metering.KeyRuleError) int {
	return max(int((e.RetryAfter+time.Second-1)/time.Second), 1)
}
