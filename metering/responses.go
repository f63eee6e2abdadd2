package metering

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// MaxResponseIDLen bounds the provider response ids recorded: a longer one
// is refused rather than stored as a key.
const MaxResponseIDLen = 256

func respKey(account, responseID string) string { return "{a:" + account + "}:resp:" + responseID }

// respCtxKey holds the tokens a continuation of the response reads again
// (its prompt and its visible output), once the call that created it settled.
func respCtxKey(account, responseID string) string {
	return "{a:" + account + "}:respctx:" + responseID
}

// StoredResponse is what is recorded of a provider's stored response.
type StoredResponse struct {
	Provider string // the provider that stores it
	// Context is the tokens a call continuing it (previous_response_id)
	// is billed again as input: the response's own prompt and its visible
	// output; 0 until the call that created it settled with usage. An
	// estimate of such a call's input counts them.
	Context int64
}

// RecordResponse records that account created the provider's stored
// response responseID, served by provider, for RecordTTL, and (when
// tokens > 0) the tokens a continuation reads again. An empty provider
// records the context alone (the owner was recorded when the response was
// created: each is its own key, so writes in any order keep both).
// Recording again refreshes what it names.
func (s *Store) RecordResponse(ctx context.Context, account, responseID, provider string, tokens int64) error {
	if responseID == "" || len(responseID) > MaxResponseIDLen {
		return fmt.Errorf("recording response %.64q: bad id: %w", responseID, ErrNotFound)
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if provider != "" {
			p.Set(ctx, respKey(account, responseID), provider, s.opts.RecordTTL)
		}
		if tokens > 0 {
			p.Set(ctx, respCtxKey(account, responseID), tokens, s.opts.RecordTTL)
		}
		return nil
	})
	if err != nil {
		return unavailable("recording response", err)
	}
	return nil
}

// StoredResponse returns what is recorded of account's stored response
// responseID, or ErrNotFound when account did not create it (or its record
// expired).
func (s *Store) StoredResponse(ctx context.Context, account, responseID string) (StoredResponse, error) {
	if responseID == "" || len(responseID) > MaxResponseIDLen {
		return StoredResponse{}, fmt.Errorf("response %.64q: %w", responseID, ErrNotFound)
	}
	vs, err := s.rdb.MGet(ctx, respKey(account, responseID), respCtxKey(account, responseID)).Result()
	if err != nil {
		return StoredResponse{}, unavailable("reading response record", err)
	}
	p, ok := vs[0].(string)
	if !ok {
		return StoredResponse{}, fmt.Errorf("response %q: %w", responseID, ErrNotFound)
	}
	r := StoredResponse{Provider: p}
	if c, ok := vs[1].(string); ok {
		r.Context, _ = strconv.ParseInt(c, 10, 64)
	}
	return r, nil
}
