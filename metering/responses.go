package metering

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// MaxResponseIDLen bounds the provider response ids recorded: a longer one
// is refused rather than stored as a key.
const MaxResponseIDLen = 256

func respKey(account, responseID string) string { return "{a:" + account + "}:resp:" + responseID }

// RecordResponse records that account created the provider's stored
// response responseID (a Responses API response id), served by provider,
// for RecordTTL. Recording it again refreshes it.
func (s *Store) RecordResponse(ctx context.Context, account, responseID, provider string) error {
	if responseID == "" || len(responseID) > MaxResponseIDLen {
		return fmt.Errorf("recording response %.64q: bad id: %w", responseID, ErrNotFound)
	}
	if err := s.rdb.Set(ctx, respKey(account, responseID), provider, s.opts.RecordTTL).Err(); err != nil {
		return unavailable("recording response", err)
	}
	return nil
}

// ResponseProvider returns the provider that served account's stored
// response responseID, or ErrNotFound when account did not create it (or
// its record expired).
func (s *Store) ResponseProvider(ctx context.Context, account, responseID string) (string, error) {
	if responseID == "" || len(responseID) > MaxResponseIDLen {
		return "", fmt.Errorf("response %.64q: %w", responseID, ErrNotFound)
	}
	p, err := s.rdb.Get(ctx, respKey(account, responseID)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", fmt.Errorf("response %q: %w", responseID, ErrNotFound)
	case err != nil:
		return "", unavailable("reading response record", err)
	}
	return p, nil
}
