package metering

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// The epoch marker tells a Redis that lost its data from a new one.
//
//	tg:epoch  string  written once at setup (the first start of the billing
//	                  process, or restore); never expires
//
// A Store that has seen the marker (or was told by ExpectEpoch that durable
// books hold accounts) and then finds it missing treats Redis as lost: Ping,
// Authenticate and the scripts that would write into an empty Redis fail with
// ErrStoreLost (an ErrUnavailable: 503, never 401, and a Leaser keeps the
// charges it holds until Redis is restored). The marker is read on every key
// lookup that misses, on Ping (readyz), on a write that finds its account
// missing, and otherwise at most every epochEvery on a key lookup, in the
// background — so a loss is noticed within a second of the next call.
const epochKey = "tg:epoch"

const epochEvery = 500 * time.Millisecond

// ErrStoreLost: Redis lost its data (the epoch marker is gone). It matches
// ErrUnavailable too. `tollgate admin restore` rebuilds Redis from the books.
var ErrStoreLost = errors.New("metering: redis lost its data (epoch marker missing): restore it from the books (tollgate admin restore)")

type epochState struct {
	seen     atomic.Bool  // the marker was read, or the books hold accounts
	lost     atomic.Bool  // seen, then found missing
	checked  atomic.Int64 // unix nanos of the last check started
	checking atomic.Bool
}

func lostErr(op string) error { return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, ErrStoreLost) }

// ExpectEpoch tells the store that durable books hold accounts: a Redis
// without the marker has lost its data, even if this process never saw it.
func (s *Store) ExpectEpoch() { s.epoch.seen.Store(true) }

// Lost reports whether Redis was found to have lost its data (as of the last
// check).
func (s *Store) Lost() bool { return s.epoch.lost.Load() }

// Epoch returns the marker ("" when missing).
func (s *Store) Epoch(ctx context.Context) (string, error) {
	v, err := s.rdb.Get(ctx, epochKey).Result()
	if err != nil {
		if isNil(err) {
			return "", nil
		}
		return "", unavailable("reading epoch", err)
	}
	return v, nil
}

// EnsureEpoch writes the marker when it is missing and returns it; written
// reports whether it did. Call it only when Redis is known not to have lost
// data (a new install: the books hold no account), or after a restore.
func (s *Store) EnsureEpoch(ctx context.Context) (epoch string, written bool, err error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	v := time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
	ok, err := s.rdb.SetNX(ctx, epochKey, v, 0).Result()
	if err != nil {
		return "", false, unavailable("writing epoch", err)
	}
	if !ok {
		v, err = s.Epoch(ctx)
		if err != nil {
			return "", false, err
		}
	}
	s.epoch.seen.Store(true)
	s.epoch.lost.Store(false)
	return v, ok, nil
}

// CheckEpoch reads the marker now and updates what the store knows: nil when
// present (or never seen), ErrStoreLost when Redis lost its data, or
// ErrUnavailable when Redis does not answer.
func (s *Store) CheckEpoch(ctx context.Context) error {
	s.epoch.checked.Store(time.Now().UnixNano())
	n, err := s.rdb.Exists(ctx, epochKey).Result()
	if err != nil {
		return unavailable("reading epoch", err)
	}
	if n == 1 {
		if s.epoch.lost.Load() {
			s.keys.clear() // misses cached while lost are stale now
		}
		s.epoch.seen.Store(true)
		s.epoch.lost.Store(false)
		return nil
	}
	if s.epoch.seen.Load() {
		s.epoch.lost.Store(true)
		return lostErr("reading epoch")
	}
	return nil
}

// epochTick starts a background check when the last one is older than
// epochEvery (at most one at a time). Cheap enough for every key lookup.
func (s *Store) epochTick() {
	if time.Now().UnixNano()-s.epoch.checked.Load() < int64(epochEvery) || !s.epoch.checking.CompareAndSwap(false, true) {
		return
	}
	s.epoch.checked.Store(time.Now().UnixNano())
	go func() {
		defer s.epoch.checking.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.CheckEpoch(ctx)
	}()
}

// missingAccount is what a script's "no such account" means: when the epoch
// marker is gone too, Redis lost its data, and the write must wait for the
// restore (ErrStoreLost) instead of being dropped or creating money.
func (s *Store) missingAccount(ctx context.Context, op, account string) error {
	if s.epoch.seen.Load() {
		if err := s.CheckEpoch(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s for %q: %w", op, account, ErrNoAccount)
}
