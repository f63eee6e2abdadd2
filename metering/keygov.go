package metering

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key governance: rules an account sets on each of its API keys, enforced
// where the key's calls are held (scripts/reserve.lua, with the rules in
// scripts/keygov.lua), so that every replica sees the same counts:
//
//	{a:ID}:kg:<key>   hash  settings (exp, models, par, rpm, tpm, budget, bper) and state
//	                        (rl/rt and tl/tt: the rpm and tpm buckets; bstart/bused: the budget
//	                        period's start and spend)
//	{a:ID}:acct       field k:<key>:n, the key's holds in flight (max_parallel)
//
// A key with rules (or a credit limit, or a member budget over it) is
// "limited": its calls are held in Redis one by one, never from a replica's
// credit lease. A key without any keeps the lease path: no round trip per
// call. A key that becomes limited is published on KeysChangedChannel, so
// that every replica's key cache forgets it; calls a replica served from its
// lease before it heard still count in the key's (and its member's) budget
// period (lease_flush.lua), and may pass it by what they cost.

var (
	//go:embed scripts/key_settings.lua
	keySettingsSrc    string
	keySettingsScript = redis.NewScript(keySettingsSrc)
	//go:embed scripts/key_limited.lua
	keyLimitedSrc    string
	keyLimitedScript = redis.NewScript(keyLimitedSrc)
)

func keyRulesKey(account, keyID string) string { return "{a:" + account + "}:kg:" + keyID }

// Budget periods: a key's budget starts afresh at the start of each (UTC;
// weeks start on Monday).
const (
	PeriodDay   = "day"
	PeriodWeek  = "week"
	PeriodMonth = "month"
)

// Key rules, as a KeyRuleError names the one that refused a call.
const (
	RuleExpired     = "expired"
	RuleModel       = "model"
	RuleMaxParallel = "max_parallel"
	RuleRPM         = "rpm"
	RuleTPM         = "tpm"
	RuleBudget      = "budget"
	// RuleMemberBudget: the budget of the member who created the key,
	// shared by all its keys (members.go), is exhausted.
	RuleMemberBudget = "member_budget"
)

// MaxRate bounds rpm and tpm (the scripts keep levels scaled by 60000 in
// exact integers).
const MaxRate = 1_000_000_000

// KeySettings are an API key's rules. Zero values mean no rule.
type KeySettings struct {
	// Models are the models the key may call, as the account gave them
	// (catalog ids or aliases); ModelIDs the catalog ids they name, which is
	// what calls are checked against. Empty: any model.
	Models   []string `json:"models,omitempty"`
	ModelIDs []string `json:"model_ids,omitempty"`
	// Budget is what the key may spend per BudgetPeriod (mc).
	Budget       int64  `json:"budget_mc,omitempty"`
	BudgetPeriod string `json:"budget_period,omitempty"`
	// ExpiresAt: the key is refused from then on.
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	RPM         int64     `json:"rpm,omitempty"` // calls per minute (burst: all of them at once)
	TPM         int64     `json:"tpm,omitempty"` // tokens per minute (a call's input estimate and granted output)
	MaxParallel int64     `json:"max_parallel,omitempty"`
}

// Governed reports whether any rule is set.
func (k KeySettings) Governed() bool {
	return len(k.ModelIDs) > 0 || k.Budget > 0 || !k.ExpiresAt.IsZero() || k.RPM > 0 || k.TPM > 0 || k.MaxParallel > 0
}

// Validate reports what is wrong with the settings.
func (k KeySettings) Validate() error {
	var errs []error
	if len(k.Models) != len(k.ModelIDs) {
		errs = append(errs, errors.New("models: each must name a catalog model"))
	}
	for _, id := range k.ModelIDs {
		if id == "" || strings.ContainsAny(id, ",") {
			errs = append(errs, fmt.Errorf("models: %q cannot be allowed", id))
		}
	}
	if k.Budget < 0 || (k.Budget > 0) != (k.BudgetPeriod != "") {
		errs = append(errs, errors.New("budget: needs a positive amount and a period"))
	}
	switch k.BudgetPeriod {
	case "", PeriodDay, PeriodWeek, PeriodMonth:
	default:
		errs = append(errs, fmt.Errorf("budget.period: %q is not day, week or month", k.BudgetPeriod))
	}
	for _, r := range []struct {
		name string
		v    int64
	}{{"rpm", k.RPM}, {"tpm", k.TPM}, {"max_parallel", k.MaxParallel}} {
		if r.v < 0 || r.v > MaxRate {
			errs = append(errs, fmt.Errorf("%s: must be between 1 and %d", r.name, MaxRate))
		}
	}
	return errors.Join(errs...)
}

// KeyPeriodStart is the start of the budget period of kind that holds at t.
func KeyPeriodStart(kind string, t time.Time) time.Time {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch kind {
	case PeriodDay:
		return day
	case PeriodWeek:
		return day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7))
	}
	return MonthStart(t)
}

// KeyRuleError is a call refused by one of its key's rules.
type KeyRuleError struct {
	Rule       string        // one of the Rule constants
	RetryAfter time.Duration // rate and parallel limits: when a call may fit again
	Max        int64         // the limit's value (rpm, tpm, max_parallel); expired: the expiry (unix s)
	// Budget: the least this call needs and what is left of the period's budget (mc).
	Needed, Left int64
}

func (e *KeyRuleError) Error() string {
	return "metering: refused by the API key's rule: " + e.Rule
}

// SetKeySettings replaces a key's rules, and its name when name is not nil.
// Its calls see them at once; a replica that served the key from its lease
// (a key that had no rules) is told to hold it call by call
// (KeysChangedChannel; within the key cache TTL should the message be lost),
// and what calls it served from its lease meanwhile still count in the key's
// budget (lease_flush.lua).
// It fails with ErrNoKey for an unknown or revoked key.
func (s *Store) SetKeySettings(ctx context.Context, account, keyID string, name *string, ks KeySettings) (Key, error) {
	if err := ks.Validate(); err != nil {
		return Key{}, fmt.Errorf("setting key rules: %w", err)
	}
	for range 10 {
		old, err := s.rdb.HGet(ctx, keysKey(account), keyID).Result()
		if isNil(err) {
			return Key{}, fmt.Errorf("setting rules of %q: %w", keyID, ErrNoKey)
		}
		if err != nil {
			return Key{}, unavailable("setting key rules", err)
		}
		var k Key
		if err := json.Unmarshal([]byte(old), &k); err != nil || k.Revoked {
			return Key{}, fmt.Errorf("setting rules of %q: %w", keyID, ErrNoKey)
		}
		k.KeySettings = ks
		if name != nil {
			k.Name = *name
		}
		switch ok, err := s.writeKeyRules(ctx, k, old); {
		case err != nil:
			return Key{}, err
		case ok:
			return k, nil
		}
	}
	return Key{}, fmt.Errorf("setting rules of %q: changed concurrently too often: %w", keyID, ErrUnavailable)
}

// keyRuleFields are the names of a governed key's settings in its rules
// hash (keygov.lua), in the order of keyRuleValues.
var keyRuleFields = [...]string{"exp", "models", "par", "rpm", "tpm", "budget", "bper"}

// keyRuleValues are ks as its rules hash holds them ("": no such rule).
func keyRuleValues(ks KeySettings) [len(keyRuleFields)]string {
	str := func(v int64) string {
		if v <= 0 {
			return ""
		}
		return strconv.FormatInt(v, 10)
	}
	models := ""
	if len(ks.ModelIDs) > 0 {
		models = "," + strings.Join(ks.ModelIDs, ",") + ","
	}
	exp := ""
	if !ks.ExpiresAt.IsZero() {
		exp = strconv.FormatInt(max(ks.ExpiresAt.Unix(), 1), 10) // 0 would read as "never"
	}
	return [...]string{exp, models, str(ks.MaxParallel), str(ks.RPM), str(ks.TPM), str(ks.Budget), ks.BudgetPeriod}
}

// writeKeyRules stores k's metadata (when it is still old) and rules, then
// marks its lookup limited or not.
func (s *Store) writeKeyRules(ctx context.Context, k Key, old string) (bool, error) {
	meta, _ := json.Marshal(k)
	args := []any{k.ID, old, meta}
	for _, v := range keyRuleValues(k.KeySettings) {
		args = append(args, v)
	}
	n, err := keySettingsScript.Run(ctx, s.rdb, []string{keysKey(k.Account), keyRulesKey(k.Account, k.ID)}, args...).Int()
	if err != nil {
		return false, unavailable("setting key rules", err)
	}
	switch n {
	case -1:
		return false, fmt.Errorf("setting rules of %q: %w", k.ID, ErrNoKey)
	case 0:
		return false, nil
	}
	hash, err := s.rdb.HGet(ctx, keysKey(k.Account)+":hash", k.ID).Result()
	if err != nil {
		return false, unavailable("setting key rules", err)
	}
	if err := s.markLimited(ctx, k, hash); err != nil {
		return false, err
	}
	return true, nil
}

// keyPeriodUsed fills in what each key with a budget spent in its current period.
func (s *Store) keyPeriodUsed(ctx context.Context, account string, keys []KeyUsage) error {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(keys))
	for i, k := range keys {
		if k.Budget > 0 {
			cmds[i] = pipe.HMGet(ctx, keyRulesKey(account, k.ID), "bstart", "bused")
		}
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return unavailable("listing keys", err)
	}
	now := time.Now()
	for i := range keys {
		if cmds[i] == nil {
			continue
		}
		v := cmds[i].Val()
		if len(v) == 2 && atoi(v[0]) == KeyPeriodStart(keys[i].BudgetPeriod, now).Unix() {
			keys[i].PeriodUsed = atoi(v[1])
		}
	}
	return nil
}

// markLimited marks an existing key's lookup limited when the key has rules,
// a credit limit, or a member budget over it (members.go), and unlimited
// otherwise. The member budget is read again after the lookup is written:
// should a budget be set meanwhile, either this second read sees it, or
// SetMemberBudget's sweep of the member's keys (after it wrote the budget)
// sees the lookup; a key under a budget is never left on the lease path.
func (s *Store) markLimited(ctx context.Context, k Key, hash string) error {
	budgeted, err := s.memberBudgeted(ctx, k.Account, k.CreatedBy)
	if err != nil {
		return err
	}
	limited := "0"
	if k.Governed() || k.CreditLimit > 0 || budgeted {
		limited = "1"
	}
	// Only an existing lookup is updated: a revoked key's is gone.
	if err := keyLimitedScript.Run(ctx, s.rdb, []string{keyLookupKey(hash)}, limited, KeysChangedChannel, hash).Err(); err != nil {
		return unavailable("marking key limited", err)
	}
	if limited == "0" {
		if budgeted, err = s.memberBudgeted(ctx, k.Account, k.CreatedBy); err != nil {
			return err
		}
		if budgeted {
			if err := keyLimitedScript.Run(ctx, s.rdb, []string{keyLookupKey(hash)}, "1", KeysChangedChannel, hash).Err(); err != nil {
				return unavailable("marking key limited", err)
			}
		}
	}
	s.keys.forget(hash)
	return nil
}
