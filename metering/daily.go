package metering

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DayTTL is how long a day's usage counters are kept after their last write
// (debit.lua's TG_DAY_TTL): long enough for a 30-day chart.
const DayTTL = 40 * 24 * time.Hour

// dayKey is the hash of one UTC day's charged calls per model.
func dayKey(id string, t time.Time) string {
	return "{a:" + id + "}:day:" + t.UTC().Format(time.DateOnly)
}

// DayUsage is what one model's charged calls used on one UTC day.
type DayUsage struct {
	Date     string // YYYY-MM-DD, UTC
	Model    string // the public model name the calls asked for
	Requests int64
	Input    int64 // input tokens, cached input and cache writes included
	Output   int64 // output tokens, reasoning included
	Credits  int64 // mc charged
}

// DailyUsage returns an account's usage per UTC day and model for the days
// from..to (inclusive, by their UTC dates), oldest day first and models in
// name order within a day. Days without a charged call are absent. Only
// charged calls are counted (settle and lease_flush count them as they
// charge): failed calls are not. Counters older than DayTTL are gone.
func (s *Store) DailyUsage(ctx context.Context, account string, from, to time.Time) ([]DayUsage, error) {
	first := time.Date(from.UTC().Year(), from.UTC().Month(), from.UTC().Day(), 0, 0, 0, 0, time.UTC)
	last := to.UTC()
	var days []string
	for d := first; !d.After(last) && len(days) <= 400; d = d.AddDate(0, 0, 1) {
		days = append(days, d.Format(time.DateOnly))
	}
	if len(days) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(days))
	for i, d := range days {
		cmds[i] = pipe.HGetAll(ctx, "{a:"+account+"}:day:"+d)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable("reading daily usage", err)
	}
	var out []DayUsage
	for i, cmd := range cmds {
		byModel := make(map[string]*DayUsage)
		for f, v := range cmd.Val() {
			counter, model, ok := strings.Cut(f, ":")
			n, err := strconv.ParseInt(v, 10, 64)
			if !ok || err != nil {
				continue
			}
			u := byModel[model]
			if u == nil {
				u = &DayUsage{Date: days[i], Model: model}
				byModel[model] = u
			}
			switch counter {
			case "r":
				u.Requests = n
			case "i":
				u.Input = n
			case "o":
				u.Output = n
			case "c":
				u.Credits = n
			}
		}
		start := len(out)
		for _, u := range byModel {
			out = append(out, *u)
		}
		day := out[start:]
		sort.Slice(day, func(a, b int) bool { return day[a].Model < day[b].Model })
	}
	return out, nil
}
