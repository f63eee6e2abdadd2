package metering

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The journal's Redis side: what a shipper (package books) needs to copy
// every ledger entry to durable books exactly once — which accounts have new
// entries, the entries after a cursor, and trimming what was copied.
//
//	tg:ledger:dirty  set  accounts whose ledger got entries since a shipper
//	                      last took them (best effort: written after the
//	                      script, off the call's path; a full sweep of the
//	                      ledgers is the backstop)

const dirtyKey = "tg:ledger:dirty"

// dirtyMarks collects accounts to add to a Redis set (tg:ledger:dirty for
// ledgers that grew, tg:events:dirty for outboxes) a few milliseconds later
// in one command: the mark is never on a call's path, and never inside a
// script (another slot).
type dirtyMarks struct {
	mu        sync.Mutex
	m         map[string]struct{}
	scheduled bool
}

const dirtyDelay = 20 * time.Millisecond

// markDirty notes that account's ledger has an entry a shipper has not seen.
// A mark lost on the way (Redis away) is found by the shipper's sweep.
func (s *Store) markDirty(account string) { s.mark(&s.dirty, dirtyKey, account) }

// mark adds account to d, and schedules the write of d's accounts to the
// Redis set key dirtyDelay later (one write for every mark meanwhile).
func (s *Store) mark(d *dirtyMarks, key, account string) {
	d.mu.Lock()
	if d.m == nil {
		d.m = make(map[string]struct{})
	}
	d.m[account] = struct{}{}
	if !d.scheduled {
		d.scheduled = true
		time.AfterFunc(dirtyDelay, func() { s.flushMarks(d, key) })
	}
	d.mu.Unlock()
}

// flushMarks writes d's accounts to the set key. A mark lost here (Redis
// away) is found by its consumer's sweep.
func (s *Store) flushMarks(d *dirtyMarks, key string) {
	d.mu.Lock()
	accts := make([]any, 0, len(d.m))
	for a := range d.m {
		accts = append(accts, a)
	}
	clear(d.m)
	d.scheduled = false
	d.mu.Unlock()
	if len(accts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.rdb.SAdd(ctx, key, accts...).Err()
}

// MarkDirty marks accounts as having unshipped entries (a shipper gives back
// the marks it took and could not ship).
func (s *Store) MarkDirty(ctx context.Context, accounts ...string) error {
	if len(accounts) == 0 {
		return nil
	}
	args := make([]any, len(accounts))
	for i, a := range accounts {
		args[i] = a
	}
	if err := s.rdb.SAdd(ctx, dirtyKey, args...).Err(); err != nil {
		return unavailable("marking ledgers", err)
	}
	return nil
}

// TakeDirty removes and returns up to n accounts marked as having unshipped
// entries. Taking the mark before reading the ledger is what makes a mark
// never lost: an entry written after it was taken marks the account again.
func (s *Store) TakeDirty(ctx context.Context, n int) ([]string, error) {
	out, err := s.rdb.SPopN(ctx, dirtyKey, int64(n)).Result()
	if err != nil && !isNil(err) {
		return nil, unavailable("taking ledger marks", err)
	}
	return out, nil
}

// ScanLedgers calls fn with every account that has a ledger in Redis (every
// master of a Cluster), in batches. It is the shipper's backstop for lost
// marks, and restore's and reconcile's view of what Redis holds.
func (s *Store) ScanLedgers(ctx context.Context, fn func(accounts []string) error) error {
	return s.scanAccounts(ctx, "{a:*}:ledger", ":ledger", fn)
}

// ScanAccounts calls fn with every account that has an account hash in Redis.
func (s *Store) ScanAccounts(ctx context.Context, fn func(accounts []string) error) error {
	return s.scanAccounts(ctx, "{a:*}:acct", ":acct", fn)
}

func (s *Store) scanAccounts(ctx context.Context, match, suffix string, fn func([]string) error) error {
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
			if err != nil {
				return unavailable("scanning accounts", err)
			}
			accts := make([]string, 0, len(keys))
			for _, k := range keys {
				if a, ok := strings.CutSuffix(strings.TrimPrefix(k, "{a:"), "}"+suffix); ok {
					accts = append(accts, a)
				}
			}
			if len(accts) > 0 {
				if err := fn(accts); err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex // masters are scanned concurrently; fn is called one at a time
		inner := fn
		fn = func(a []string) error { mu.Lock(); defer mu.Unlock(); return inner(a) }
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	}
	return scan(ctx, s.rdb)
}

// LedgerCursor is where a shipper stands in one account's ledger: the id of
// the last entry it copied ("" or "0-0": none).
type LedgerCursor struct {
	Account string
	After   string
}

// LedgersAfter reads, for each cursor, up to n entries after it, oldest
// first, in one pipeline (a Cluster client splits it by node).
func (s *Store) LedgersAfter(ctx context.Context, cursors []LedgerCursor, n int64) ([][]Entry, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(cursors))
	for i, c := range cursors {
		lo := "-"
		if c.After != "" && c.After != "0-0" {
			lo = "(" + c.After
		}
		cmds[i] = pipe.XRangeN(ctx, ledgerKey(c.Account), lo, "+", n)
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return nil, unavailable("reading ledgers", err)
	}
	out := make([][]Entry, len(cursors))
	for i, cmd := range cmds {
		msgs, err := cmd.Result()
		if err != nil && !isNil(err) {
			return nil, unavailable("reading ledgers", err)
		}
		es := make([]Entry, len(msgs))
		for j, m := range msgs {
			es[j] = entryFrom(m)
		}
		out[i] = es
	}
	return out, nil
}

// LedgerLast returns the id of an account's newest ledger entry ("" when its
// ledger is empty or missing).
func (s *Store) LedgerLast(ctx context.Context, account string) (string, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, ledgerKey(account), "+", "-", 1).Result()
	if err != nil {
		return "", unavailable("reading ledger", err)
	}
	if len(msgs) == 0 {
		return "", nil
	}
	return msgs[0].ID, nil
}

// TrimLedger removes an account's ledger entries older than below (an entry
// id, exclusive): a shipper passes the smaller of what it copied and what is
// past retention. The newest entry is never removed (it anchors the stream's
// ids). It returns how many entries went.
func (s *Store) TrimLedger(ctx context.Context, account, below string) (int64, error) {
	n, err := s.rdb.XTrimMinID(ctx, ledgerKey(account), below).Result()
	if err != nil {
		return 0, unavailable("trimming ledger", err)
	}
	return n, nil
}

// EntryID is a ledger entry id as (milliseconds, sequence).
type EntryID struct{ Ms, Seq int64 }

// ParseEntryID parses "ms-seq".
func ParseEntryID(id string) (EntryID, error) {
	ms, seq, ok := strings.Cut(id, "-")
	a, err1 := strconv.ParseInt(ms, 10, 64)
	b, err2 := strconv.ParseInt(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 {
		return EntryID{}, fmt.Errorf("ledger entry id %q: %w", id, ErrNotFound)
	}
	return EntryID{a, b}, nil
}

func (e EntryID) String() string {
	return strconv.FormatInt(e.Ms, 10) + "-" + strconv.FormatInt(e.Seq, 10)
}

// Less orders entry ids.
func (e EntryID) Less(o EntryID) bool { return e.Ms < o.Ms || e.Ms == o.Ms && e.Seq < o.Seq }

// BalanceAfter reads, atomically (one MULTI on the account's slot), an
// account's balance and its ledger entries after the entry id after ("":
// all): what reconcile compares with the books. ErrNoAccount when the
// account is not in Redis.
func (s *Store) BalanceAfter(ctx context.Context, account, after string) (int64, []Entry, error) {
	lo := "-"
	if after != "" && after != "0-0" {
		lo = "(" + after
	}
	var bal *redis.StringCmd
	var msgs *redis.XMessageSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		bal = p.HGet(ctx, acctKey(account), "balance")
		msgs = p.XRange(ctx, ledgerKey(account), lo, "+")
		return nil
	})
	if err != nil && !isNil(err) {
		return 0, nil, unavailable("reading balance and ledger", err)
	}
	b, err := bal.Int64()
	if err != nil {
		if isNil(err) {
			return 0, nil, fmt.Errorf("reading %q: %w", account, ErrNoAccount)
		}
		return 0, nil, unavailable("reading balance", err)
	}
	out := make([]Entry, 0, len(msgs.Val()))
	for _, m := range msgs.Val() {
		out = append(out, entryFrom(m))
	}
	return b, out, nil
}
