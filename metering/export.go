package metering

import (
	"context"
	"sort"
	"strconv"
	"time"
)

// CallUsage is one charged call as its usage entry records it: what the
// usage export lists.
type CallUsage struct {
	At        time.Time // when it was charged (its entry's id)
	CreatedAt time.Time // when the call was made (its record)
	RequestID string
	KeyID     string // "" when the call was made without an API key, or before entries named their key
	Model     string
	Input     int64 // input tokens, cached input and cache writes included (as DayUsage)
	Output    int64 // output tokens, reasoning included
	Credits   int64 // mc charged
}

// UsageOf reads a usage entry as a call; ok is false for other entries.
func UsageOf(e Entry) (u CallUsage, ok bool) {
	if e.Type != "usage" {
		return u, false
	}
	n := func(k string) int64 {
		v, _ := strconv.ParseInt(e.Fields[k], 10, 64)
		return max(v, 0)
	}
	u = CallUsage{CreatedAt: e.CreatedAt, RequestID: e.Fields["request_id"], KeyID: e.Fields["key_id"],
		Model: e.Fields["model"], Output: n("output_tokens"), Credits: -e.Amount,
		Input: n("input_tokens") + n("cached_input_tokens") + n("cache_write_tokens") + n("cache_write_1h_tokens")}
	if id, err := ParseEntryID(e.ID); err == nil {
		u.At = time.UnixMilli(id.Ms).UTC()
	}
	if u.RequestID == "" {
		u.RequestID = e.Reference
	}
	return u, true
}

// UsageCalls calls fn with each of an account's calls charged from from
// (inclusive) to to (exclusive), oldest first, from its Redis ledger: the
// whole usage when there are no durable books (nothing trims the ledger);
// with them, the books answer (package books).
func (s *Store) UsageCalls(ctx context.Context, account string, from, to time.Time, fn func(CallUsage) error) error {
	if !ValidAccountID(account) {
		return notAccount("exporting usage of", account)
	}
	lo, hi := strconv.FormatInt(max(from.UnixMilli(), 0), 10), strconv.FormatInt(to.UnixMilli()-1, 10)
	if to.UnixMilli()-1 < max(from.UnixMilli(), 0) {
		return nil
	}
	for {
		msgs, err := s.rdb.XRangeN(ctx, ledgerKey(account), lo, hi, 1000).Result()
		if err != nil {
			return unavailable("exporting usage", err)
		}
		for _, m := range msgs {
			if u, ok := UsageOf(entryFrom(m)); ok {
				if err := fn(u); err != nil {
					return err
				}
			}
		}
		if len(msgs) < 1000 {
			return nil
		}
		lo = "(" + msgs[len(msgs)-1].ID
	}
}

// UsageDays is an account's charged calls from from (inclusive) to to
// (exclusive) per UTC day (of their charge) and model, oldest day first and
// models in name order, summed from UsageCalls.
func (s *Store) UsageDays(ctx context.Context, account string, from, to time.Time, fn func(DayUsage) error) error {
	byDay := make(map[[2]string]*DayUsage)
	err := s.UsageCalls(ctx, account, from, to, func(u CallUsage) error {
		k := [2]string{u.At.Format(time.DateOnly), u.Model}
		d := byDay[k]
		if d == nil {
			d = &DayUsage{Date: k[0], Model: k[1]}
			byDay[k] = d
		}
		d.Requests++
		d.Input += u.Input
		d.Output += u.Output
		d.Credits += u.Credits
		return nil
	})
	if err != nil {
		return err
	}
	days := make([]*DayUsage, 0, len(byDay))
	for _, d := range byDay {
		days = append(days, d)
	}
	sort.Slice(days, func(i, j int) bool {
		if days[i].Date != days[j].Date {
			return days[i].Date < days[j].Date
		}
		return days[i].Model < days[j].Model
	})
	for _, d := range days {
		if err := fn(*d); err != nil {
			return err
		}
	}
	return nil
}
