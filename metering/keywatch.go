package metering

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// KeysChangedChannel is the Redis channel on which a change to an API key's
// lookup is published, with the key's SHA-256 (hex) as the message: its
// revocation (RevokeKey) and its becoming limited or not (rules set or
// removed, a member budget set over it: key_limited.lua). Every Store with a
// key cache subscribes and forgets the key, so that the next call on any
// replica sees the change; Options.KeyCacheTTL only bounds how long a lost
// message leaves a replica with what it cached before.
const KeysChangedChannel = "tg:keys:changed"

// watchKeys evicts from the key cache each key published on
// KeysChangedChannel, and clears the whole cache each time the subscription
// is (re)established: what was published while it was down is lost, and an
// entry cached then may be stale. (go-redis resubscribes after a lost
// connection.) It runs from New until the Redis client is closed.
func (s *Store) watchKeys() {
	ctx := context.Background()
	ps := s.rdb.Subscribe(ctx, KeysChangedChannel)
	defer ps.Close()
	for m := range ps.ChannelWithSubscriptions() {
		switch m := m.(type) {
		case *redis.Message:
			s.keys.forget(m.Payload)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.keys.clear()
			}
		}
	}
}
