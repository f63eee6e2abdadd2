package metering

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Outgoing events (webhooks). A script that causes an event appends it to
// the account's outbox {a:<id>}:events in the same atomic step
// (scripts/events.lua); the store then marks the account in tg:events:dirty
// (off the call's path, like the ledger marks). The billing process moves
// each outbox entry to the webhook queue {wh}:events — a stream consumed by a
// consumer group, so that an event taken by a process that dies is taken
// again — and from there schedules one delivery per endpoint, each a hash
// {wh}:d:<delivery id> with its due time in {wh}:due. Every webhook key
// shares the hash tag {wh}: one slot.
//
// An event's id is stable: evt_<hash of the account>_<its outbox entry id>. A
// crash between moving an entry and deleting it from the outbox moves it
// twice; its deliveries are created once (by id), so it is sent once.

var (
	//go:embed scripts/events.lua
	eventsSrc string
	//go:embed scripts/delivery_claim.lua
	deliveryClaimSrc    string
	deliveryClaimScript = redis.NewScript(deliveryClaimSrc)

	//go:embed scripts/delivery_schedule.lua
	deliveryScheduleSrc    string
	deliveryScheduleScript = redis.NewScript(deliveryScheduleSrc)
)

const (
	eventsDirtyKey   = "tg:events:dirty"
	webhookQueueKey  = "{wh}:events"
	deliveryDueKey   = "{wh}:due"
	deliveryIndexKey = "{wh}:index" // delivery ids by creation ms (the operator's list)
	// DeliveryTTL is how long a delivery's record is kept after its creation.
	DeliveryTTL = 7 * 24 * time.Hour
	// maxDeliveryIndex bounds the operator's list.
	maxDeliveryIndex = 10_000
)

func eventsKey(id string) string   { return "{a:" + id + "}:events" }
func deliveryKey(id string) string { return "{wh}:d:" + id }

// markEvents notes that account's outbox has an event to move. A mark lost
// on the way (Redis away) is found by the dispatcher's sweep.
func (s *Store) markEvents(account string) { s.mark(&s.evMarks, eventsDirtyKey, account) }

// TakeEventMarks removes and returns up to n accounts whose outbox may hold
// events. (Taken before the outbox is read: an event written after marks
// the account again.)
func (s *Store) TakeEventMarks(ctx context.Context, n int) ([]string, error) {
	out, err := s.rdb.SPopN(ctx, eventsDirtyKey, int64(n)).Result()
	if err != nil && !isNil(err) {
		return nil, unavailable("taking event marks", err)
	}
	return out, nil
}

// ScanOutboxes calls fn with every account whose outbox exists (the
// dispatcher's backstop for lost marks).
func (s *Store) ScanOutboxes(ctx context.Context, fn func(accounts []string) error) error {
	return s.scanAccounts(ctx, "{a:*}:events", ":events", fn)
}

// EventID is the stable id of an account's outbox entry.
func EventID(account, entryID string) string {
	h := sha256.Sum256([]byte(account))
	return "evt_" + hex.EncodeToString(h[:6]) + "_" + strings.ReplaceAll(entryID, "-", "_")
}

// Event is one outgoing event.
type Event struct {
	ID      string
	Type    string
	Account string
	Created time.Time
	// Data are the event's fields; a name ending in _mc is an amount in mc.
	Data map[string]string
	// QueueID is its entry in the webhook queue (for AckEvent).
	QueueID string
}

// MoveEvents moves account's outbox entries to the webhook queue, oldest
// first, and returns how many it moved.
func (s *Store) MoveEvents(ctx context.Context, account string) (int, error) {
	msgs, err := s.rdb.XRangeN(ctx, eventsKey(account), "-", "+", 500).Result()
	if err != nil {
		return 0, unavailable("reading outbox", err)
	}
	for _, m := range msgs {
		vals := map[string]any{"id": EventID(account, m.ID), "account": account, "created": entryMillis(m.ID)}
		for k, v := range m.Values {
			vals["f:"+k] = v
		}
		if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: webhookQueueKey, Values: vals}).Err(); err != nil {
			return 0, unavailable("queueing event", err)
		}
		if err := s.rdb.XDel(ctx, eventsKey(account), m.ID).Err(); err != nil {
			return 0, unavailable("queueing event", err)
		}
	}
	if len(msgs) == 500 {
		s.markEvents(account) // more to move
	}
	return len(msgs), nil
}

func entryMillis(id string) string {
	ms, _, _ := strings.Cut(id, "-")
	return ms
}

// EnsureEventGroup creates the webhook queue's consumer group (idempotent).
func (s *Store) EnsureEventGroup(ctx context.Context, group string) error {
	err := s.rdb.XGroupCreateMkStream(ctx, webhookQueueKey, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return unavailable("creating the webhook consumer group", err)
	}
	return nil
}

// ReadEvents reads up to count new events for consumer (blocking up to block).
func (s *Store) ReadEvents(ctx context.Context, group, consumer string, count int64, block time.Duration) ([]Event, error) {
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: consumer,
		Streams: []string{webhookQueueKey, ">"}, Count: count, Block: block}).Result()
	if isNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("reading events", err)
	}
	var out []Event
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, eventFrom(m))
		}
	}
	return out, nil
}

// PendingEvents returns the events consumer read and never acknowledged
// (before a restart), oldest first.
func (s *Store) PendingEvents(ctx context.Context, group, consumer string, count int64) ([]Event, error) {
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: consumer,
		Streams: []string{webhookQueueKey, "0"}, Count: count, Block: -1}).Result()
	if err != nil && !isNil(err) {
		return nil, unavailable("reading pending events", err)
	}
	var out []Event
	for _, st := range res {
		for _, m := range st.Messages {
			if len(m.Values) == 0 { // deleted meanwhile: nothing to do but acknowledge it
				s.rdb.XAck(ctx, webhookQueueKey, group, m.ID)
				continue
			}
			out = append(out, eventFrom(m))
		}
	}
	return out, nil
}

// ClaimEvents takes over events another consumer (or this one, before a
// restart) read but never acknowledged, idle for at least minIdle.
func (s *Store) ClaimEvents(ctx context.Context, group, consumer string, minIdle time.Duration, count int64) ([]Event, error) {
	msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: webhookQueueKey, Group: group, Consumer: consumer,
		MinIdle: minIdle, Start: "0", Count: count}).Result()
	if err != nil && !isNil(err) {
		return nil, unavailable("claiming events", err)
	}
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, eventFrom(m))
	}
	return out, nil
}

// AckEvent acknowledges (and deletes) a queued event whose deliveries are
// scheduled.
func (s *Store) AckEvent(ctx context.Context, group, queueID string) error {
	pipe := s.rdb.TxPipeline()
	pipe.XAck(ctx, webhookQueueKey, group, queueID)
	pipe.XDel(ctx, webhookQueueKey, queueID)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("acknowledging event", err)
	}
	return nil
}

func eventFrom(m redis.XMessage) Event {
	e := Event{QueueID: m.ID, Data: map[string]string{}}
	for k, v := range m.Values {
		sv, _ := v.(string)
		switch {
		case k == "id":
			e.ID = sv
		case k == "account":
			e.Account = sv
		case k == "created":
			ms, _ := strconv.ParseInt(sv, 10, 64)
			e.Created = time.UnixMilli(ms).UTC()
		case k == "f:type":
			e.Type = sv
		case strings.HasPrefix(k, "f:"):
			e.Data[k[2:]] = sv
		}
	}
	return e
}

// EmitEvent appends an event to account's outbox from Go (for causes that
// are not a script).
func (s *Store) EmitEvent(ctx context.Context, account, typ string, data map[string]string) error {
	vals := []any{"type", typ}
	for _, k := range sortedKeys(data) {
		vals = append(vals, k, data[k])
	}
	if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: eventsKey(account), Values: vals}).Err(); err != nil {
		return unavailable("emitting event", err)
	}
	s.markEvents(account)
	return nil
}

// Delivery is one event's delivery to one endpoint.
type Delivery struct {
	ID        string // <event id>.<endpoint id>
	EventID   string
	Type      string
	Account   string
	Endpoint  string // the endpoint's id (from its URL)
	URL       string
	Body      string // the exact JSON sent on every attempt
	State     string // pending, delivered, failed
	Attempts  int
	LastCode  int    // the last attempt's HTTP status (0: no answer)
	LastError string // the last failure
	NextAt    time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// ScheduleDelivery creates d (pending, due now) unless a delivery with its
// id exists; created says which. One script (delivery_schedule.lua): a
// delivery is never left without its body, due entry or TTL.
func (s *Store) ScheduleDelivery(ctx context.Context, d Delivery, now time.Time) (created bool, err error) {
	ms := now.UnixMilli()
	n, err := deliveryScheduleScript.Run(ctx, s.rdb, []string{deliveryKey(d.ID), deliveryDueKey, deliveryIndexKey},
		d.ID, ms, DeliveryTTL.Milliseconds(), maxDeliveryIndex,
		"event", d.EventID, "type", d.Type, "account", d.Account, "endpoint", d.Endpoint, "url", d.URL,
		"body", d.Body, "state", DeliveryPending, "attempts", 0, "created", ms, "updated", ms, "next", ms).Int()
	if err != nil {
		return false, unavailable("scheduling delivery", err)
	}
	return n == 1, nil
}

// ClaimDeliveries takes up to n due deliveries for lease (see
// delivery_claim.lua) and returns them.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, n int) ([]Delivery, error) {
	ids, err := deliveryClaimScript.Run(ctx, s.rdb, []string{deliveryDueKey}, now.UnixMilli(), lease.Milliseconds(), n).StringSlice()
	if err != nil {
		return nil, unavailable("claiming deliveries", err)
	}
	out := make([]Delivery, 0, len(ids))
	for _, id := range ids {
		d, err := s.delivery(ctx, id)
		if errors.Is(err, ErrNotFound) {
			s.rdb.ZRem(ctx, deliveryDueKey, id) // expired record
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (s *Store) delivery(ctx context.Context, id string) (Delivery, error) {
	m, err := s.rdb.HGetAll(ctx, deliveryKey(id)).Result()
	if err != nil {
		return Delivery{}, unavailable("reading delivery", err)
	}
	if m["body"] == "" {
		return Delivery{}, fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	ms := func(k string) time.Time {
		if v := n(k); v > 0 {
			return time.UnixMilli(v).UTC()
		}
		return time.Time{}
	}
	return Delivery{ID: id, EventID: m["event"], Type: m["type"], Account: m["account"], Endpoint: m["endpoint"],
		URL: m["url"], Body: m["body"], State: m["state"], Attempts: int(n("attempts")), LastCode: int(n("code")),
		LastError: m["error"], NextAt: ms("next"), CreatedAt: ms("created"), UpdatedAt: ms("updated")}, nil
}

// RecordAttempt records one attempt of a delivery: state delivered or
// failed ends it; pending schedules the next attempt at next.
func (s *Store) RecordAttempt(ctx context.Context, id, state string, code int, errText string, next, now time.Time) error {
	pipe := s.rdb.TxPipeline()
	pipe.HIncrBy(ctx, deliveryKey(id), "attempts", 1)
	pipe.HSet(ctx, deliveryKey(id), "state", state, "code", code, "error", errText, "updated", now.UnixMilli(),
		"next", next.UnixMilli())
	if state == DeliveryPending {
		pipe.ZAdd(ctx, deliveryDueKey, redis.Z{Score: float64(next.UnixMilli()), Member: id})
	} else {
		pipe.ZRem(ctx, deliveryDueKey, id)
		pipe.HSet(ctx, deliveryKey(id), "next", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("recording delivery attempt", err)
	}
	return nil
}

// Deliveries lists the newest deliveries (at most limit), newest first.
func (s *Store) Deliveries(ctx context.Context, limit int) ([]Delivery, error) {
	ids, err := s.rdb.ZRevRange(ctx, deliveryIndexKey, 0, int64(limit)-1).Result()
	if err != nil {
		return nil, unavailable("listing deliveries", err)
	}
	out := make([]Delivery, 0, len(ids))
	for _, id := range ids {
		d, err := s.delivery(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// SetLowBalance sets account's low-balance threshold (mc; 0 removes it):
// balance.low is emitted when a debit takes the balance from at or above it
// to under it.
func (s *Store) SetLowBalance(ctx context.Context, account string, mc int64) error {
	if !ValidAccountID(account) {
		return notAccount("setting the low-balance alert of", account)
	}
	var err error
	if mc <= 0 {
		err = s.rdb.HDel(ctx, acctKey(account), "low_balance").Err()
	} else {
		err = s.rdb.HSet(ctx, acctKey(account), "low_balance", mc).Err()
	}
	if err != nil {
		return unavailable("setting the low-balance alert", err)
	}
	return nil
}

// LowBalance reads account's low-balance threshold (mc; 0: none).
func (s *Store) LowBalance(ctx context.Context, account string) (int64, error) {
	v, err := s.rdb.HGet(ctx, acctKey(account), "low_balance").Int64()
	if isNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable("reading the low-balance alert", err)
	}
	return v, nil
}
