package metering

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Teams: an account's members and the audit log of its changes.
//
//	{a:ID}:members  hash   user → role; absent until the first change, when the
//	                       account's own id is seeded as its owner
//	{a:ID}:audit    stream actor, action, target, created_at (ms); capped at MaxAudit
//	{a:ID}:mb       hash   user → "mc:period": a member's credit budget, shared by
//	                       the keys it created (state in the account hash; keygov.lua)
//
// Roles are plain strings here; what each may do is billing's concern.

// Roles of an account's members.
const (
	RoleOwner   = "owner"
	RoleAdmin   = "admin"
	RoleBilling = "billing"
	RoleMember  = "member"
)

// ValidRole reports whether r is one of the roles.
func ValidRole(r string) bool {
	switch r {
	case RoleOwner, RoleAdmin, RoleBilling, RoleMember:
		return true
	}
	return false
}

// MaxMembers caps an account's members; MaxAudit the audit entries Redis
// keeps per account (approximately: the stream is trimmed with ~; the books
// keep them all).
const (
	MaxMembers = 1000
	MaxAudit   = 10000
)

// Member errors; test with errors.Is.
var (
	ErrNoMember   = errors.New("metering: no such member")
	ErrLastOwner  = errors.New("metering: an account needs at least one owner")
	ErrOwnerOnly  = errors.New("metering: only an owner may grant, change or remove the owner role")
	ErrTooMany    = errors.New("metering: too many members")
	errMemberArgs = errors.New("metering: invalid member or role")
)

var (
	//go:embed scripts/members.lua
	membersSrc    string
	membersScript = redis.NewScript(membersSrc)
	//go:embed scripts/member_budget.lua
	memberBudgetSrc    string
	memberBudgetScript = redis.NewScript(memberBudgetSrc)
)

func membersKey(id string) string      { return "{a:" + id + "}:members" }
func auditKey(id string) string        { return "{a:" + id + "}:audit" }
func memberBudgetKey(id string) string { return "{a:" + id + "}:mb" }

// Member is a user's role in an account.
type Member struct {
	User string
	Role string
}

// MemberChange asks to set (Role not "") or remove (Role "") a member.
type MemberChange struct {
	Account string
	User    string
	Role    string // "": remove
	// ByOwner: the one asking is an owner of the account; only owners may
	// grant, change or remove the owner role.
	ByOwner bool
	// Actor is the user who makes the change, for its audit entry.
	Actor string
	// Existing: change the role of a member only, never add one
	// (ErrNoMember when User is not a member). A role change from a list
	// read earlier must not bring back someone removed meanwhile.
	Existing bool
}

// Audit actions of member changes, recorded by ChangeMember in the same
// script as the change.
const (
	AuditMemberAdded   = "member.added"
	AuditMemberUpdated = "member.updated"
	AuditMemberRemoved = "member.removed"
)

// ChangeMember applies c atomically with its audit entry (member.added,
// member.updated or member.removed, by c.Actor): an account always keeps an
// owner (ErrLastOwner), only owners touch the owner role (ErrOwnerOnly), a
// removal or an Existing change names a member (ErrNoMember), and an account has at most
// MaxMembers (ErrTooMany). It returns the user's previous role ("": was not
// a member). Setting a member's role to the one it has changes and records
// nothing and succeeds (a retried add is recorded once, as member.added).
func (s *Store) ChangeMember(ctx context.Context, c MemberChange) (string, error) {
	return s.changeMember(ctx, c, false)
}

// CheckMemberRemoval reports, changing nothing, whether ChangeMember would
// remove c.User (c.Role is ignored): nil, or the error it would return.
// Billing checks a removal before it revokes the member's keys.
func (s *Store) CheckMemberRemoval(ctx context.Context, c MemberChange) error {
	c.Role = ""
	_, err := s.changeMember(ctx, c, true)
	return err
}

func (s *Store) changeMember(ctx context.Context, c MemberChange, check bool) (string, error) {
	if !ValidAccountID(c.Account) {
		return "", notAccount("changing members of", c.Account)
	}
	if !ValidAccountID(c.User) || (c.Role != "" && !ValidRole(c.Role)) {
		return "", fmt.Errorf("changing member %q: %w", c.User, errMemberArgs)
	}
	op, owner := "set", "0"
	if c.Role == "" {
		op = "del"
	} else if c.Existing {
		op = "update"
	}
	if check {
		op = "check"
	}
	if c.ByOwner {
		owner = ownerArg(true)
	}
	res, err := membersScript.Run(ctx, s.rdb, []string{acctKey(c.Account), membersKey(c.Account), memberBudgetKey(c.Account), auditKey(c.Account)},
		op, c.Account, c.User, c.Role, owner, MaxMembers, c.Actor, time.Now().UnixMilli(), MaxAudit).Slice()
	if err != nil {
		return "", unavailable("changing member", err)
	}
	code, _ := res[0].(int64)
	switch code {
	case 1:
		prev, _ := res[1].(string)
		return prev, nil
	case -1:
		return "", fmt.Errorf("changing members of %q: %w", c.Account, ErrNoAccount)
	case -2:
		return "", fmt.Errorf("changing %q: %w", c.User, ErrNoMember)
	case -3:
		return "", fmt.Errorf("changing %q: %w", c.User, ErrLastOwner)
	case -4:
		return "", fmt.Errorf("changing %q: %w", c.User, ErrOwnerOnly)
	case -5:
		return "", fmt.Errorf("adding %q: at most %d: %w", c.User, MaxMembers, ErrTooMany)
	}
	return "", fmt.Errorf("changing member: unexpected answer %v", res)
}

// Members lists an account's members by user id. An account whose members
// were never changed has one: itself, as owner.
func (s *Store) Members(ctx context.Context, account string) ([]Member, error) {
	m, err := s.rdb.HGetAll(ctx, membersKey(account)).Result()
	if err != nil {
		return nil, unavailable("listing members", err)
	}
	if len(m) == 0 {
		return []Member{{User: account, Role: RoleOwner}}, nil
	}
	out := make([]Member, 0, len(m))
	for u, r := range m {
		out = append(out, Member{User: u, Role: r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out, nil
}

// MemberRole is user's role in account: "" when not a member. An account
// whose members were never changed has its own id as its only member, the
// owner.
func (s *Store) MemberRole(ctx context.Context, account, user string) (string, error) {
	pipe := s.rdb.Pipeline()
	role := pipe.HGet(ctx, membersKey(account), user)
	team := pipe.Exists(ctx, membersKey(account))
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return "", unavailable("reading member role", err)
	}
	if r := role.Val(); r != "" {
		return r, nil
	}
	if team.Val() == 0 && user == account {
		return RoleOwner, nil
	}
	return "", nil
}

// AuditEntry is one change recorded in an account's audit log.
type AuditEntry struct {
	ID        string // the stream entry's id: unique per account, in time order
	Account   string
	Actor     string // the user who made the change
	Action    string // e.g. member.added, key.revoked
	Target    string // the member's user id or the key's id
	CreatedAt time.Time
}

// AppendAudit records e (its ID and CreatedAt are set here) and returns it.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	if !ValidAccountID(e.Account) {
		return e, notAccount("auditing", e.Account)
	}
	e.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: auditKey(e.Account), MaxLen: MaxAudit, Approx: true,
		Values: []any{"actor", e.Actor, "action", e.Action, "target", e.Target, "created_at", e.CreatedAt.UnixMilli()},
	}).Result()
	if err != nil {
		return e, unavailable("recording audit entry", err)
	}
	e.ID = id
	return e, nil
}

// Audit lists an account's newest audit entries, newest first, at most limit.
func (s *Store) Audit(ctx context.Context, account string, limit int64) ([]AuditEntry, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, auditKey(account), "+", "-", limit).Result()
	if err != nil {
		return nil, unavailable("reading the audit log", err)
	}
	out := make([]AuditEntry, 0, len(msgs))
	for _, m := range msgs {
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		ms, _ := strconv.ParseInt(str("created_at"), 10, 64)
		out = append(out, AuditEntry{ID: m.ID, Account: account, Actor: str("actor"), Action: str("action"),
			Target: str("target"), CreatedAt: time.UnixMilli(ms).UTC()})
	}
	return out, nil
}

// MemberBudget is a member's credit budget per period, shared by the keys it
// created, and what they spent in the current period (mc).
type MemberBudget struct {
	Budget     int64
	Period     string // PeriodDay, PeriodWeek or PeriodMonth
	PeriodUsed int64
}

// SetMemberBudget sets user's budget (mc per period; 0 removes it). The
// proxy holds each call of the member's keys within what is left of it,
// atomically with the hold, on every replica (reserve.lua): concurrent calls
// never pass it, one call's excess over its hold at most. Its keys are then
// held call by call (limited), never from a lease; a replica that served one
// from its lease does so for at most the key cache TTL. ErrNoMember when
// user is not a member.
func (s *Store) SetMemberBudget(ctx context.Context, account, user string, budget int64, period string) error {
	return s.SetMemberBudgetBy(ctx, account, user, budget, period, "", true)
}

// SetMemberBudgetBy is SetMemberBudget recording, when actor is not "" and
// the budget changes, a member.updated entry by actor in the audit log, in
// the script that sets it (a retry that changes nothing records nothing).
func (s *Store) SetMemberBudgetBy(ctx context.Context, account, user string, budget int64, period, actor string, byOwner bool) error {
	v := ""
	if budget > 0 {
		switch period {
		case PeriodDay, PeriodWeek, PeriodMonth:
		default:
			return fmt.Errorf("setting member budget: period %q: %w", period, errMemberArgs)
		}
		v = strconv.FormatInt(budget, 10) + ":" + period
	}
	if budget < 0 || !ValidAccountID(user) {
		return fmt.Errorf("setting member budget: %w", errMemberArgs)
	}
	n, err := memberBudgetScript.Run(ctx, s.rdb, []string{acctKey(account), membersKey(account), memberBudgetKey(account), auditKey(account)},
		account, user, v, actor, time.Now().UnixMilli(), MaxAudit, ownerArg(byOwner)).Int()
	if err != nil {
		return unavailable("setting member budget", err)
	}
	switch n {
	case -1:
		return fmt.Errorf("setting member budget: %w", ErrNoAccount)
	case -2:
		return fmt.Errorf("setting the budget of %q: %w", user, ErrNoMember)
	case -4:
		return fmt.Errorf("setting the budget of %q: %w", user, ErrOwnerOnly)
	}
	// After the budget is written: mark the member's keys (see markLimited).
	keys, err := s.Keys(ctx, account)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Revoked || k.CreatedBy != user {
			continue
		}
		hash, err := s.rdb.HGet(ctx, keysKey(account)+":hash", k.ID).Result()
		if err != nil {
			return unavailable("setting member budget", err)
		}
		if err := s.markLimited(ctx, k.Key, hash); err != nil {
			return err
		}
	}
	return nil
}

// memberBudgeted reports whether user has a budget in account.
func (s *Store) memberBudgeted(ctx context.Context, account, user string) (bool, error) {
	if user == "" {
		return false, nil
	}
	ok, err := s.rdb.HExists(ctx, memberBudgetKey(account), user).Result()
	if err != nil {
		return false, unavailable("reading member budget", err)
	}
	return ok, nil
}

// MemberBudgets lists the account's member budgets by user, with what each
// member's keys spent in the current period.
func (s *Store) MemberBudgets(ctx context.Context, account string) (map[string]MemberBudget, error) {
	m, err := s.rdb.HGetAll(ctx, memberBudgetKey(account)).Result()
	if err != nil {
		return nil, unavailable("reading member budgets", err)
	}
	out := make(map[string]MemberBudget, len(m))
	if len(m) == 0 {
		return out, nil
	}
	users := make([]string, 0, len(m))
	fields := make([]string, 0, 2*len(m))
	for u := range m {
		users = append(users, u)
		fields = append(fields, "m:"+u+":bstart", "m:"+u+":bused")
	}
	st, err := s.rdb.HMGet(ctx, acctKey(account), fields...).Result()
	if err != nil {
		return nil, unavailable("reading member budgets", err)
	}
	now := time.Now()
	for i, u := range users {
		mc, period, _ := strings.Cut(m[u], ":")
		b := MemberBudget{Period: period}
		b.Budget, _ = strconv.ParseInt(mc, 10, 64)
		if atoi(st[2*i]) == KeyPeriodStart(period, now).Unix() {
			b.PeriodUsed = atoi(st[2*i+1])
		}
		out[u] = b
	}
	return out, nil
}

// ownerArg is a script's "set by an owner" argument.
func ownerArg(byOwner bool) string {
	if byOwner {
		return "1"
	}
	return "0"
}
