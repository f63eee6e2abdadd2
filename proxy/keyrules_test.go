package proxy_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testledger"
	"github.com/tollgate/tollgate/metering"
)

// API key rules through real proxies: two replicas over one Redis see the
// same counts, since the rules are checked where each call is held.

// governedKey creates a funded account and a key with rules ks.
func (e *env) governedKey(account string, credits int64, ks metering.KeySettings) (key, id string) {
	e.t.Helper()
	e.account(account, credits)
	k, secret, err := e.store.IssueKey(context.Background(), metering.NewKey{Account: account, Name: "governed", Settings: ks})
	if err != nil {
		e.t.Fatal(err)
	}
	return secret, k.ID
}

func (e *env) keyUsage(account, id string) metering.KeyUsage {
	e.t.Helper()
	keys, err := e.store.Keys(context.Background(), account)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	e.t.Fatalf("no key %s", id)
	return metering.KeyUsage{}
}

// TestKeyRPMAcrossReplicas: a key allowing 3 requests per minute admits 3 of
// 20 calls sent at once on two replicas (burst = the limit); the rest are 429
// naming rpm, with Retry-After.
func TestKeyRPMAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{})
	second, secondLease := e.replica("second")
	key, _ := e.governedKey("acme", 100, metering.KeySettings{RPM: 3})
	rs := e.burst([]string{e.url, second}, key, limitBody(10, "tokens=10"), 20)
	if n := served(t, rs, "rpm"); n != 3 {
		t.Fatalf("%d of 20 calls served under rpm 3, want exactly 3", n)
	}
	e.settleAll(secondLease)
	testledger.Assert(t, e.store, "acme")
}

// TestKeyTPMAcrossReplicas: 20 calls at once, on two replicas, under tpm
// 1000: a call is admitted while what the minute's calls used or hold (their
// worst case: input estimate + max_tokens) fits, so the served calls' tokens
// never pass the limit by more than what the bucket drained meanwhile; the
// refused are 429 naming tpm.
func TestKeyTPMAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{})
	second, secondLease := e.replica("second")
	key, _ := e.governedKey("acme", 100, metering.KeySettings{TPM: 1000})
	start := time.Now()
	rs := e.burst([]string{e.url, second}, key, limitBody(200, "tokens=200"), 20)
	elapsed := time.Since(start)
	n := served(t, rs, "tpm")
	var used int64
	for _, r := range rs {
		if r.status == http.StatusOK {
			u, _ := r.json(t)["usage"].(map[string]any)
			in, _ := u["prompt_tokens"].(float64)
			out, _ := u["completion_tokens"].(float64)
			used += int64(in) + int64(out)
		}
	}
	// The bucket drains 1000 tokens a minute: what the burst's duration let in.
	drained := int64(1000*elapsed/time.Minute) + 1
	if n < 1 || used > 1000+drained {
		t.Fatalf("%d calls served using %d tokens under tpm 1000 (drained %d)", n, used, drained)
	}
	e.settleAll(secondLease)
	testledger.Assert(t, e.store, "acme")
}

// TestKeyBudgetExactAcrossReplicas: 40 calls at once, on two replicas, with
// a key whose daily budget pays for a few of them: what the key spends
// never passes its budget, equals what the served calls were charged, and
// the others are 402 key_budget_exhausted.
func TestKeyBudgetExactAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{})
	second, secondLease := e.replica("second")
	const budget = 300 // mc: a call of gpt-4o-mini with max_tokens 50 holds 100+ mc
	key, id := e.governedKey("acme", 100, metering.KeySettings{Budget: budget, BudgetPeriod: metering.PeriodDay})
	rs := e.burst([]string{e.url, second}, key, limitBody(50, "tokens=50"), 40)
	served, charged := tallyBudget(t, rs, "key_budget_exhausted")
	e.settleAll(secondLease)
	ku := e.keyUsage("acme", id)
	if served == 0 || charged > budget || ku.PeriodUsed != charged || ku.Used != charged {
		t.Fatalf("served %d calls charged %d mc; key period used %d, used %d; budget %d", served, charged, ku.PeriodUsed, ku.Used, budget)
	}
	if r := e.post("/v1/chat/completions", key, limitBody(50, "tokens=50")); r.status != http.StatusPaymentRequired || r.errorCode(t) != "key_budget_exhausted" {
		t.Fatalf("after the budget: %d %s", r.status, r.body)
	}
	// The account's other keys are not held to it.
	other := e.keyOf("acme")
	if r := e.post("/v1/chat/completions", other, limitBody(50, "tokens=50")); r.status != http.StatusOK {
		t.Fatalf("another key of the account: %d %s", r.status, r.body)
	}
	testledger.Assert(t, e.store, "acme")
}

func (e *env) keyOf(account string) string {
	e.t.Helper()
	_, key, err := e.store.CreateKey(context.Background(), account, "other", 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

// TestKeyModelsAndExpiry: a key's allowlist admits its models (by alias
// too) and refuses others with 403 model_not_allowed; an expired key is 401
// expired_api_key; a change applies to the next call.
func TestKeyModelsAndExpiry(t *testing.T) {
	e := newEnv(t, envOpts{})
	ks := metering.KeySettings{Models: []string{"mini"}, ModelIDs: []string{"gpt-4o-mini"}}
	key, id := e.governedKey("acme", 100, ks)
	if r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusOK {
		t.Fatalf("allowed model: %d %s", r.status, r.body)
	}
	r := e.post("/v1/chat/completions", key, `{"model":"gpt-4.1","max_tokens":10,"messages":`+msg("hi")+`}`)
	if r.status != http.StatusForbidden || r.errorCode(t) != "model_not_allowed" || limitParam(t, r) != "model" {
		t.Fatalf("model not allowed: %d %s", r.status, r.body)
	}
	// Anthropic's envelope on its own route.
	r = e.post("/v1/messages", key, `{"model":"claude-sonnet","max_tokens":10,"messages":`+msg("hi")+`}`)
	if r.status != http.StatusForbidden || r.json(t)["type"] != "error" {
		t.Fatalf("model not allowed on /v1/messages: %d %s", r.status, r.body)
	}

	ks.ExpiresAt = time.Now().Add(-time.Second)
	if _, err := e.store.SetKeySettings(context.Background(), "acme", id, nil, ks); err != nil {
		t.Fatal(err)
	}
	r = e.post("/v1/chat/completions", key, limitBody(10, "tokens=10"))
	if r.status != http.StatusUnauthorized || r.errorCode(t) != "expired_api_key" {
		t.Fatalf("expired key: %d %s", r.status, r.body)
	}
	testledger.Assert(t, e.store, "acme")
}

// TestKeyMaxParallelAcrossReplicas: calls that run at once on two replicas
// are refused past max_parallel (429, param max_parallel); a call's end
// frees its slot.
func TestKeyMaxParallelAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{})
	second, secondLease := e.replica("second")
	key, _ := e.governedKey("acme", 100, metering.KeySettings{MaxParallel: 2})
	// Each call takes a while at the provider, so that the burst overlaps;
	// however it overlaps, no more than 2 run at once, so at least 2 are
	// served and every refusal names max_parallel.
	rs := e.burst([]string{e.url, second}, key, limitBody(10, "tokens=10,delay=300ms"), 12)
	if n := served(t, rs, "max_parallel"); n < 2 {
		t.Fatalf("%d served, want at least 2", n)
	}
	e.settleAll(secondLease)
	if a := e.balance("acme"); a.Reserved != 0 {
		t.Fatalf("reserved %d after every call", a.Reserved)
	}
	for i := range 3 { // sequential calls never run in parallel
		if r := e.post("/v1/chat/completions", key, limitBody(10, "tokens=10")); r.status != http.StatusOK {
			t.Fatalf("call %d after the burst: %d %s", i, r.status, r.body)
		}
	}
	testledger.Assert(t, e.store, "acme")
}

// TestUngovernedKeyKeepsTheLease: a key without rules is not limited (its
// calls are held from the replica's lease); rules make it limited at once
// in the store that set them.
func TestUngovernedKeyKeepsTheLease(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	id, err := e.store.Authenticate(context.Background(), []byte(key))
	if err != nil || id.Limited {
		t.Fatalf("a plain key: %+v %v", id, err)
	}
	if _, err := e.store.SetKeySettings(context.Background(), "acme", id.KeyID, nil, metering.KeySettings{RPM: 1}); err != nil {
		t.Fatal(err)
	}
	if id, err = e.store.Authenticate(context.Background(), []byte(key)); err != nil || !id.Limited {
		t.Fatalf("a key with rules: %+v %v", id, err)
	}
}

// TestMemberBudgetExactAcrossReplicas: a team member's budget is shared by
// the keys it created: 40 calls at once, on two replicas, through two of its
// keys, never spend past it, and the refused are 402 member_budget_exhausted;
// another member's key is not held to it.
func TestMemberBudgetExactAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOpts{})
	second, secondLease := e.replica("second")
	ctx := context.Background()
	const budget = 300 // mc: a call of gpt-4o-mini with max_tokens 50 holds 100+ mc
	e.account("acme", 100)
	for _, u := range []string{"max", "ann"} {
		if _, err := e.store.ChangeMember(ctx, metering.MemberChange{Account: "acme", User: u, Role: metering.RoleMember, ByOwner: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.store.SetMemberBudget(ctx, "acme", "max", budget, metering.PeriodDay); err != nil {
		t.Fatal(err)
	}
	issue := func(by string) string {
		_, secret, err := e.store.IssueKey(ctx, metering.NewKey{Account: "acme", Name: by, CreatedBy: by})
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	k1, k2 := issue("max"), issue("max")
	var rs1, rs2 []result
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); rs1 = e.burst([]string{e.url, second}, k1, limitBody(50, "tokens=50"), 20) }()
	go func() { defer wg.Done(); rs2 = e.burst([]string{second, e.url}, k2, limitBody(50, "tokens=50"), 20) }()
	wg.Wait()
	rs := append(rs1, rs2...)
	served, charged := tallyBudget(t, rs, "member_budget_exhausted")
	e.settleAll(secondLease)
	b, err := e.store.MemberBudgets(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if served == 0 || charged > budget || b["max"].PeriodUsed != charged {
		t.Fatalf("served %d calls charged %d mc; member period used %d; budget %d", served, charged, b["max"].PeriodUsed, budget)
	}
	if r := e.post("/v1/chat/completions", issue("max"), limitBody(50, "tokens=50")); r.status != http.StatusPaymentRequired ||
		r.errorCode(t) != "member_budget_exhausted" {
		t.Fatalf("a new key of the member after the budget: %d %s", r.status, r.body)
	}
	if r := e.post("/v1/chat/completions", issue("ann"), limitBody(50, "tokens=50")); r.status != http.StatusOK {
		t.Fatalf("another member's key: %d %s", r.status, r.body)
	}
	testledger.Assert(t, e.store, "acme")
}

// tallyBudget counts the calls of a burst served and what they were
// charged; every other answer must be a 402 with code (the budget refused it).
func tallyBudget(t *testing.T, rs []result, code string) (served, charged int64) {
	t.Helper()
	for _, r := range rs {
		switch {
		case r.status == http.StatusOK:
			served++
			charged += credits(t, r.header.Get("X-Credits-Charged"))
		case r.status == http.StatusPaymentRequired && r.errorCode(t) == code:
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	return served, charged
}
