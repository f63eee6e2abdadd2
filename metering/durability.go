package metering

import (
	"context"
	"strings"
)

// Durability is what Redis keeps of the ledger: the eviction policy
// (anything but "noeviction" may drop balances and holds under memory
// pressure) and whether it persists (append-only file, RDB snapshots).
type Durability struct {
	MaxmemoryPolicy string
	AOF             bool // appendonly yes
	RDB             bool // a save schedule is set
}

// Problems describes what is unsafe about d for money ("" entries never).
func (d Durability) Problems() []string {
	var out []string
	if d.MaxmemoryPolicy != "" && d.MaxmemoryPolicy != "noeviction" {
		out = append(out, "maxmemory-policy is "+d.MaxmemoryPolicy+": Redis may evict balances, holds and ledger entries under memory pressure; set it to noeviction")
	}
	if !d.AOF && !d.RDB {
		out = append(out, "Redis persists nothing (appendonly no, no save schedule): a Redis restart loses every balance and the ledger; enable appendonly yes")
	}
	return out
}

// Durability reads the Redis settings that decide whether the ledger
// survives (CONFIG GET; a server that refuses CONFIG — a managed Redis —
// returns the error and the caller says it could not check).
func (s *Store) Durability(ctx context.Context) (Durability, error) {
	var d Durability
	for _, key := range []string{"maxmemory-policy", "appendonly", "save"} {
		m, err := s.rdb.ConfigGet(ctx, key).Result()
		if err != nil {
			return d, unavailable("reading redis config", err)
		}
		v := m[key]
		switch key {
		case "maxmemory-policy":
			d.MaxmemoryPolicy = v
		case "appendonly":
			d.AOF = v == "yes"
		case "save":
			d.RDB = strings.TrimSpace(v) != ""
		}
	}
	return d, nil
}
