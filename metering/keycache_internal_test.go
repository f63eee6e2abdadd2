package metering

import (
	"encoding/hex"
	"testing"
	"time"
)

// TestKeyCacheKeepsNoAnswerReadBeforeAChange: a lookup sent before a change
// was published (forget or clear while it was on its way) is not cached: it
// may say what the change undid, and no later message would evict it.
func TestKeyCacheKeepsNoAnswerReadBeforeAChange(t *testing.T) {
	h := hashKey([]byte("tg-secret"))
	for _, c := range []struct {
		name   string
		evict  func(c *keyCache)
		cached bool
	}{
		{"nothing published", func(*keyCache) {}, true},
		{"the key published", func(c *keyCache) { c.forget(hex.EncodeToString(h[:])) }, false},
		{"another key published", func(c *keyCache) {
			o := hashKey([]byte("tg-other"))
			c.forget(hex.EncodeToString(o[:]))
		}, false},
		{"resubscribed", func(c *keyCache) { c.clear() }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var kc keyCache
			kc.init(time.Minute)
			gen := kc.gen.Load() // the lookup is sent
			c.evict(&kc)         // a change is published meanwhile
			kc.put(h, Identity{Account: "acme", KeyID: "k"}, nil, gen)
			if _, _, ok := kc.get(h); ok != c.cached {
				t.Fatalf("cached %v, want %v", ok, c.cached)
			}
			// The next lookup, sent after the change, is cached.
			kc.put(h, Identity{Account: "acme", KeyID: "k"}, nil, kc.gen.Load())
			if _, _, ok := kc.get(h); !ok {
				t.Fatal("a lookup sent after the change is not cached")
			}
		})
	}
}
