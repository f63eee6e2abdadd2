package metering_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

const (
	packCredits = 20_000 // mc a test pack buys
	packPrice   = 100    // cents
)

var testSale = metering.RechargeSale{Pack: "mini", PriceMinor: packPrice, Currency: "usd", Credits: packCredits}

// autoRecharge turns auto-recharge on for account: threshold mc, spending
// limit in cents, the test pack.
func (e *env) autoRecharge(t testing.TB, account string, threshold, limit int64) {
	t.Helper()
	err := e.st.SetAutoRecharge(context.Background(), account, metering.AutoRechargeSettings{
		Enabled: true, Threshold: threshold, Pack: testSale.Pack, PriceMinor: testSale.PriceMinor,
		Currency: testSale.Currency, SpendingLimit: limit,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) streamLen(t testing.TB) int64 {
	t.Helper()
	n, err := e.rdb.XLen(context.Background(), metering.RechargeStream).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) recharge(t testing.TB, account string) metering.AutoRecharge {
	t.Helper()
	a, err := e.st.AutoRecharge(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// readOne reads the single queued request.
func (e *env) readOne(t testing.TB, consumer string) metering.RechargeRequest {
	t.Helper()
	ctx := context.Background()
	if err := e.st.EnsureRechargeGroup(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	reqs, err := e.st.ReadRecharges(ctx, "billing", consumer, 10, 0)
	if err != nil || len(reqs) != 1 {
		t.Fatalf("ReadRecharges: %+v, %v; want one request", reqs, err)
	}
	return reqs[0]
}

func TestEnqueueRechargeOnlyUnderTheThresholdAndOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "r", 15_000)
	q := metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{CacheTTL: -1})

	if out, err := q.Enqueue(ctx, "r"); err != nil || out != metering.EnqueueOff {
		t.Fatalf("unconfigured: %v %v", out, err)
	}
	e.autoRecharge(t, "r", 10_000, 1000)
	if out, err := q.Enqueue(ctx, "r"); err != nil || out != metering.EnqueueAbove {
		t.Fatalf("balance above the threshold: %v %v", out, err)
	}
	e.call(t, "r", "c1", 6_000, 1, 0, 1)
	if out, err := q.Enqueue(ctx, "r"); err != nil || out != metering.EnqueueQueued {
		t.Fatalf("under the threshold: %v %v", out, err)
	}
	if out, err := q.Enqueue(ctx, "r"); err != nil || out != metering.EnqueueBusy {
		t.Fatalf("again: %v %v", out, err)
	}
	if n := e.streamLen(t); n != 1 {
		t.Fatalf("stream holds %d requests, want 1", n)
	}
	if a := e.recharge(t, "r"); a.State != "queued" || a.RequestID == "" {
		t.Fatalf("state: %+v", a)
	}
}

// TestConcurrentSettlesQueueOneRecharge: 100 settles crossing the threshold
// together, on two proxy replicas, queue exactly one request.
func TestConcurrentSettlesQueueOneRecharge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "c", 100_000)
	e.autoRecharge(t, "c", 60_000, 10_000)
	replicas := []*metering.RechargeQueue{
		metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{}),
		metering.NewRechargeQueue(e.replica(t, metering.Options{}), metering.RechargeQueueOptions{}),
	}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("h%d", i)
			if _, err := e.st.Reserve(ctx, metering.HoldRequest{Account: "c", HoldID: id, Fixed: 500}); err != nil {
				t.Error(err)
				return
			}
			ch, err := e.st.Settle(ctx, metering.Settlement{Account: "c", HoldID: id, Cost: 500, Record: metering.Record{RequestID: id}})
			if err != nil {
				t.Error(err)
				return
			}
			replicas[i%2].OnSettle("c", ch)
		}()
	}
	wg.Wait()
	for _, q := range replicas {
		q.Wait()
	}
	if a := e.acct(t, "c"); a.Balance != 50_000 {
		t.Fatalf("balance %d", a.Balance)
	}
	if n := e.streamLen(t); n != 1 {
		t.Fatalf("stream holds %d requests, want exactly 1", n)
	}
	if s0, s1 := replicas[0].Stats(), replicas[1].Stats(); s0.Queued+s1.Queued != 1 || s0.Failed+s1.Failed != 0 {
		t.Fatalf("stats %+v %+v", s0, s1)
	}
}

func TestRechargeCreditsOnceAndRespectsTheSpendingLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "l", 5_000)
	e.autoRecharge(t, "l", 10_000, 2*packPrice) // room for two packs
	q := metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{CacheTTL: -1})
	for round := 1; round <= 3; round++ {
		if round > 1 { // spend until under the threshold again
			e.call(t, "l", fmt.Sprintf("drain%d", round), packCredits, 1, 0, 1)
		}
		out, err := q.Enqueue(ctx, "l")
		if err != nil {
			t.Fatal(err)
		}
		if round == 3 {
			if out != metering.EnqueueLimit {
				t.Fatalf("round 3: enqueue %v, want the spending limit", out)
			}
			break
		}
		if out != metering.EnqueueQueued {
			t.Fatalf("round %d: enqueue %v", round, out)
		}
		req := e.readOne(t, "w1")
		b, err := e.st.BeginRecharge(ctx, req.Account, req.ID, testSale)
		if err != nil || !b.Proceed || b.Resumed || b.Sale != testSale {
			t.Fatalf("round %d: begin %+v, %v", round, b, err)
		}
		// A crashed worker's successor resumes the same request.
		if again, err := e.st.BeginRecharge(ctx, req.Account, req.ID, testSale); err != nil || !again.Proceed || !again.Resumed {
			t.Fatalf("round %d: begin again %+v, %v", round, again, err)
		}
		pay := metering.RechargePayment{Account: "l", ID: req.ID, PaymentID: fmt.Sprintf("pi_%d", round),
			AmountMinor: packPrice, Currency: "usd", Fields: map[string]string{"description": "Auto-recharge"}}
		f, err := e.st.CompleteRecharge(ctx, pay)
		if err != nil || !f.Applied || f.Credits != packCredits {
			t.Fatalf("round %d: complete %+v, %v", round, f, err)
		}
		// The webhook's replay of the same payment credits nothing more.
		if f2, err := e.st.CompleteRecharge(ctx, pay); err != nil || f2.Applied || f2.BalanceAfter != f.BalanceAfter {
			t.Fatalf("round %d: replay %+v, %v", round, f2, err)
		}
		if err := e.st.AckRecharge(ctx, "billing", req.StreamID); err != nil {
			t.Fatal(err)
		}
		if a := e.recharge(t, "l"); a.State != "" || a.Spent != int64(round)*packPrice || a.LastRechargeAt.IsZero() {
			t.Fatalf("round %d: state %+v", round, a)
		}
	}
	// Even a request that got past the enqueue's pre-check is refused
	// atomically when it begins.
	e.rdb.HSet(ctx, "{a:l}:ar", "state", "queued", "rid", "ar_forced")
	b, err := e.st.BeginRecharge(ctx, "l", "ar_forced", testSale)
	if err != nil || b.Proceed || b.Reason != "spending_limit" || b.Spent != 2*packPrice || b.Limit != 2*packPrice {
		t.Fatalf("third begin: %+v, %v", b, err)
	}
	if a := e.recharge(t, "l"); a.State != "" || a.LastSkip != "spending_limit" {
		t.Fatalf("after the refusal: %+v", a)
	}
	entries := e.entries(t, "l")
	n := 0
	for _, en := range entries {
		if en.Type == "auto_recharge" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d auto_recharge entries, want 2", n)
	}
	if e.streamLen(t) != 0 {
		t.Fatal("acknowledged requests stay in the stream")
	}
	assertLedger(t, e.st, "l")
}

func TestRechargeFailuresDisableAutoRecharge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "f", 0)
	e.autoRecharge(t, "f", 10_000, 10*packPrice)
	q := metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{CacheTTL: -1})
	for i := 1; i <= 3; i++ {
		if out, err := q.Enqueue(ctx, "f"); err != nil || out != metering.EnqueueQueued {
			t.Fatalf("attempt %d: enqueue %v %v", i, out, err)
		}
		req := e.readOne(t, "w")
		if b, err := e.st.BeginRecharge(ctx, "f", req.ID, testSale); err != nil || !b.Proceed {
			t.Fatalf("begin %+v %v", b, err)
		}
		if a := e.recharge(t, "f"); a.Spent != packPrice {
			t.Fatalf("in flight, spent %d", a.Spent)
		}
		ended, failures, disabled, err := e.st.FailRecharge(ctx, metering.RechargeFailure{Account: "f", ID: req.ID,
			Reason: "card_declined: insufficient funds", Counts: true, MaxFailures: 3})
		if err != nil || !ended || failures != i || disabled != (i == 3) {
			t.Fatalf("attempt %d: fail %v %d %v %v", i, ended, failures, disabled, err)
		}
		// Failing again is a no-op.
		if ended, _, _, _ := e.st.FailRecharge(ctx, metering.RechargeFailure{Account: "f", ID: req.ID, Counts: true, MaxFailures: 3}); ended {
			t.Fatal("a second failure of the same request counted")
		}
		_ = e.st.AckRecharge(ctx, "billing", req.StreamID)
	}
	a := e.recharge(t, "f")
	if a.Enabled || a.DisabledReason != "card_declined: insufficient funds" || a.Failures != 3 || a.Spent != 0 {
		t.Fatalf("after three declines: %+v", a)
	}
	if out, _ := q.Enqueue(ctx, "f"); out != metering.EnqueueOff {
		t.Fatalf("disabled, enqueue %v", out)
	}
	// Turning it on again clears the failures.
	e.autoRecharge(t, "f", 10_000, 10*packPrice)
	if a := e.recharge(t, "f"); !a.Enabled || a.Failures != 0 || a.DisabledReason != "" {
		t.Fatalf("re-enabled: %+v", a)
	}
}

func TestRechargeBackoffAndStaleRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "b", 0)
	e.autoRecharge(t, "b", 10_000, 10*packPrice)
	q := metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{CacheTTL: -1, StaleAfter: 50 * time.Millisecond})
	if out, _ := q.Enqueue(ctx, "b"); out != metering.EnqueueQueued {
		t.Fatal(out)
	}
	first := e.readOne(t, "w")
	// Nobody began it: after StaleAfter a new request replaces it, and the
	// old one is refused when it is finally read.
	time.Sleep(80 * time.Millisecond)
	if out, _ := q.Enqueue(ctx, "b"); out != metering.EnqueueQueued {
		t.Fatalf("stale request not replaced: %v", out)
	}
	if b, err := e.st.BeginRecharge(ctx, "b", first.ID, testSale); err != nil || b.Proceed || b.Reason != "stale" {
		t.Fatalf("the replaced request began: %+v %v", b, err)
	}
	second := e.readOne(t, "w")
	if b, _ := e.st.BeginRecharge(ctx, "b", second.ID, testSale); !b.Proceed {
		t.Fatalf("current request refused: %+v", b)
	}
	if _, _, _, err := e.st.FailRecharge(ctx, metering.RechargeFailure{Account: "b", ID: second.ID, Reason: "declined",
		Counts: true, MaxFailures: 3, Backoff: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if out, _ := q.Enqueue(ctx, "b"); out != metering.EnqueueBackoff {
		t.Fatalf("after a failure: %v, want backoff", out)
	}
}

func TestRechargeRequestsOfACrashedWorkerAreClaimed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	ctx := context.Background()
	e.account(t, "k", 0)
	e.autoRecharge(t, "k", 10_000, 10*packPrice)
	if out, _ := metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{}).Enqueue(ctx, "k"); out != metering.EnqueueQueued {
		t.Fatal(out)
	}
	req := e.readOne(t, "crashed") // read, never acknowledged
	if again, err := e.st.ReadRecharges(ctx, "billing", "other", 10, 0); err != nil || len(again) != 0 {
		t.Fatalf("a pending request was read twice: %+v %v", again, err)
	}
	if early, err := e.st.ClaimRecharges(ctx, "billing", "other", time.Hour, 10); err != nil || len(early) != 0 {
		t.Fatalf("claimed before it was idle: %+v %v", early, err)
	}
	time.Sleep(20 * time.Millisecond)
	claimed, err := e.st.ClaimRecharges(ctx, "billing", "other", 10*time.Millisecond, 10)
	if err != nil || len(claimed) != 1 || claimed[0] != req {
		t.Fatalf("claimed %+v %v, want %+v", claimed, err, req)
	}
	if err := e.st.AckRecharge(ctx, "billing", req.StreamID); err != nil {
		t.Fatal(err)
	}
	if left, _ := e.st.ClaimRecharges(ctx, "billing", "other", 0, 10); len(left) != 0 {
		t.Fatalf("acknowledged request still pending: %+v", left)
	}
}

func BenchmarkRechargeOnSettle(b *testing.B) {
	e := newEnv(b, metering.Options{})
	e.account(b, "x", 1_000_000)
	q := metering.NewRechargeQueue(e.st, metering.RechargeQueueOptions{})
	if _, err := q.Enqueue(context.Background(), "x"); err != nil { // caches "off"
		b.Fatal(err)
	}
	ch := metering.Charge{BalanceAfter: 5}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.OnSettle("x", ch)
	}
}

// blockAfterFirst is a go-redis hook that, after the first script call has
// run, holds it until release is closed: an enqueue that read the balance and
// has not yet finished.
type blockAfterFirst struct {
	once    sync.Once
	ran     chan struct{}
	release chan struct{}
}

func (h *blockAfterFirst) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *blockAfterFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *blockAfterFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if n := cmd.Name(); err == nil && (n == "evalsha" || n == "eval") {
			h.once.Do(func() { close(h.ran); <-h.release })
		}
		return err
	}
}

// TestSettleDuringAnEnqueueIsNotLost: the settle that takes the balance
// under the threshold lands while an earlier settle's enqueue (which found
// the balance above it) is still running. The queue runs the enqueue once
// more, so the recharge is asked for without waiting for another call.
func TestSettleDuringAnEnqueueIsNotLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, metering.Options{})
	e.account(t, "late", 15_000)
	e.autoRecharge(t, "late", 10_000, 1000)
	hook := &blockAfterFirst{ran: make(chan struct{}), release: make(chan struct{})}
	rdb := e.Srv.Client(t)
	rdb.AddHook(hook)
	q := metering.NewRechargeQueue(metering.New(rdb, metering.Options{KeyCacheTTL: -1}), metering.RechargeQueueOptions{CacheTTL: -1})

	q.OnSettle("late", metering.Charge{BalanceAfter: 15_000})
	<-hook.ran // the first enqueue found the balance above the threshold
	ch := e.call(t, "late", "cross", 6_000, 1, 0, 1)
	q.OnSettle("late", ch) // arrives while the first enqueue is still running
	close(hook.release)
	q.Wait()
	if s := q.Stats(); s.Queued != 1 || s.Failed != 0 {
		t.Fatalf("stats %+v: the settle that crossed the threshold asked for no recharge", s)
	}
	if n := e.streamLen(t); n != 1 {
		t.Fatalf("stream holds %d requests, want 1", n)
	}
}
