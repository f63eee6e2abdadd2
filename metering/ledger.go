package metering

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Entry is one ledger entry: a credit (positive Amount) or a debit (negative).
type Entry struct {
	ID           string // stream id; ordered by time; usable as a pagination cursor
	Type         string // purchase, auto_recharge, refund, dispute, dispute_won, grant, adjustment, usage
	Amount       int64  // signed mc
	BalanceAfter int64
	Reference    string
	CreatedAt    time.Time
	Fields       map[string]string // everything else the entry recorded
}

// LedgerQuery selects ledger entries, newest first.
type LedgerQuery struct {
	Limit  int64  // default 20, at most 1000
	Before string // entry id: return only entries older than it ("" = newest)
	After  string // entry id: return only entries newer than it, oldest first (for full scans)
}

// Ledger lists an account's entries newest first (or, with After, oldest first).
func (s *Store) Ledger(ctx context.Context, account string, q LedgerQuery) ([]Entry, error) {
	if q.Limit <= 0 {
		q.Limit = 20
	}
	if q.Limit > 1000 {
		q.Limit = 1000
	}
	var (
		msgs []redis.XMessage
		err  error
	)
	if q.After != "" {
		msgs, err = s.rdb.XRangeN(ctx, ledgerKey(account), "("+q.After, "+", q.Limit).Result()
	} else {
		hi := "+"
		if q.Before != "" {
			hi = "(" + q.Before
		}
		msgs, err = s.rdb.XRevRangeN(ctx, ledgerKey(account), hi, "-", q.Limit).Result()
	}
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) {
			return nil, fmt.Errorf("reading ledger: bad cursor: %w", ErrNotFound)
		}
		return nil, unavailable("reading ledger", err)
	}
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, entryFrom(m))
	}
	return out, nil
}

// AllEntries returns the whole ledger oldest first (audits and tests).
func (s *Store) AllEntries(ctx context.Context, account string) ([]Entry, error) {
	var all []Entry
	after := "0-0"
	for {
		page, err := s.Ledger(ctx, account, LedgerQuery{After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 1000 {
			return all, nil
		}
		after = page[len(page)-1].ID
	}
}

func entryFrom(m redis.XMessage) Entry {
	e := Entry{ID: m.ID, Fields: make(map[string]string, len(m.Values))}
	for k, v := range m.Values {
		s, _ := v.(string)
		switch k {
		case "type":
			e.Type = s
		case "amount":
			e.Amount, _ = strconv.ParseInt(s, 10, 64)
		case "balance_after":
			e.BalanceAfter, _ = strconv.ParseInt(s, 10, 64)
		case "ref":
			e.Reference = s
		case "created_at":
			ms, _ := strconv.ParseInt(s, 10, 64)
			e.CreatedAt = time.UnixMilli(ms).UTC()
		default:
			e.Fields[k] = s
		}
	}
	if e.CreatedAt.IsZero() {
		if ms, err := strconv.ParseInt(m.ID[:indexByte(m.ID, '-')], 10, 64); err == nil {
			e.CreatedAt = time.UnixMilli(ms).UTC()
		}
	}
	return e
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return len(s)
}

// Generation is the stored cost record of one call.
type Generation struct {
	Record
	Charged      int64
	BalanceAfter int64
	OverHold     int64 // mc the charge exceeded the call's hold by
	Capped       bool  // the hold had expired; the charge was cut to what was available
}

// Generation returns the cost record of a call made by account.
func (s *Store) Generation(ctx context.Context, account, requestID string) (Generation, error) {
	m, err := s.rdb.HGetAll(ctx, genKey(account, requestID)).Result()
	if err != nil {
		return Generation{}, unavailable("reading cost record", err)
	}
	if _, ended := m["charged"]; !ended {
		// None, or only Admit's mark: the call has not ended (or never was).
		return Generation{}, fmt.Errorf("cost record %q: %w", requestID, ErrNotFound)
	}
	if eid := m["entry"]; eid != "" {
		// A settled call's record is its ledger entry; the hash holds the
		// settle's answer and the entry's id.
		msgs, err := s.rdb.XRange(ctx, ledgerKey(account), eid, eid).Result()
		if err != nil {
			return Generation{}, unavailable("reading cost record", err)
		}
		for _, msg := range msgs {
			for k, v := range msg.Values {
				if _, own := m[k]; !own {
					m[k], _ = v.(string)
				}
			}
		}
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	g := Generation{
		Record: Record{
			RequestID: m["request_id"], Model: m["model"], Provider: m["provider"], Endpoint: m["endpoint"],
			Input: n("input_tokens"), CachedInput: n("cached_input_tokens"), Output: n("output_tokens"),
			Reasoning: n("reasoning_tokens"), CacheWrite: n("cache_write_tokens"), CacheWrite1h: n("cache_write_1h_tokens"),
			WebSearch: n("web_search_requests"),
			Estimated: m["estimated"] == "1", Streamed: m["streamed"] == "1",
			Cancelled: m["cancelled"] == "1", Failed: m["failed"] == "1", Status: int(n("status")),
			Reason: m["reason"], Latency: time.Duration(n("latency_us")) * time.Microsecond,
			TTFT: time.Duration(n("ttft_us")) * time.Microsecond, CreatedAt: time.UnixMilli(n("created_at")).UTC(),
			ClientRequestID: m["client_request_id"], UpstreamRequestID: m["upstream_request_id"],
			Traceparent: m["traceparent"], Tracestate: m["tracestate"],
		},
		Charged: n("charged"), BalanceAfter: n("balance_after"), OverHold: n("over_hold"), Capped: m["capped"] == "1",
	}
	return g, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
