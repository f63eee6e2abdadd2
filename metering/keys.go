package metering

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix starts every Tollgate API key.
const KeyPrefix = "tg-"

// Key is an API key's metadata. The secret itself is never stored: only its
// SHA-256 hash is, as the lookup key.
type Key struct {
	ID          string    `json:"id"`
	Account     string    `json:"account"`
	Name        string    `json:"name"`
	Hint        string    `json:"hint"`         // first characters of the secret, for recognition
	CreditLimit int64     `json:"credit_limit"` // mc the key may spend in all; 0 = no limit
	CreatedAt   time.Time `json:"created_at"`
	Revoked     bool      `json:"revoked,omitempty"`
	// CreatedBy is the user who created the key ("": the account itself or
	// an operator): a plain member sees and manages only its own keys.
	CreatedBy   string `json:"created_by,omitempty"`
	KeySettings        // the key's rules (keygov.go)
}

var (
	//go:embed scripts/create_key.lua
	createKeySrc    string
	createKeyScript = redis.NewScript(createKeySrc)
)

// ErrTooManyKeys: the account already has as many active API keys as
// NewKey.MaxActive allows. Test with errors.Is.
var ErrTooManyKeys = errors.New("metering: too many active API keys")

// NewKey asks for an API key.
type NewKey struct {
	Account     string
	Name        string
	CreditLimit int64 // mc the key may spend in all; 0 = no limit
	Settings    KeySettings
	CreatedBy   string // the user creating it ("": the account itself or an operator)
	// Actor, when set, is recorded in the audit log as the key's creator
	// (key.created), in the script that creates the key.
	Actor string
	// MaxActive caps the account's active (not revoked) keys, the new one
	// included: when the account already has MaxActive, the key is refused
	// with ErrTooManyKeys. Counting and adding are one script, so that
	// concurrent requests never get past the cap. 0 = no cap.
	MaxActive int
}

// CreateKey issues a new API key for account, without a cap on its active
// keys, and returns its metadata and the secret, which is shown once and
// never stored. It is IssueKey with MaxActive 0.
func (s *Store) CreateKey(ctx context.Context, account, name string, creditLimit int64) (Key, string, error) {
	return s.IssueKey(ctx, NewKey{Account: account, Name: name, CreditLimit: creditLimit})
}

// IssueKey issues a new API key and returns its metadata and the secret,
// which is shown once and never stored. It fails with ErrTooManyKeys when the
// cap is reached, ErrNoAccount, ErrNoMember when nk.CreatedBy is not a
// member of the account, or ErrUnavailable. Should Redis fail between
// the account's records and the global lookup, the key is listed (and
// counted) but never authenticates; revoking it clears it.
func (s *Store) IssueKey(ctx context.Context, nk NewKey) (Key, string, error) {
	account := nk.Account
	if nk.CreditLimit < 0 || nk.MaxActive < 0 {
		return Key{}, "", fmt.Errorf("creating key: negative credit limit or cap")
	}
	if err := nk.Settings.Validate(); err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	if !ValidAccountID(account) {
		return Key{}, "", fmt.Errorf("creating key for %q: %w", account, ErrNoAccount)
	}
	var raw [32]byte
	var idRaw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	if _, err := rand.Read(idRaw[:]); err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	secret := KeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	k := Key{
		ID: "key_" + hex.EncodeToString(idRaw[:]), Account: account, Name: nk.Name,
		Hint: secret[:len(KeyPrefix)+4] + "…", CreditLimit: nk.CreditLimit, CreatedAt: time.Now().UTC().Truncate(time.Second),
		KeySettings: nk.Settings, CreatedBy: nk.CreatedBy,
	}
	meta, _ := json.Marshal(k)
	hash := hashKey([]byte(secret))
	hashHex := hex.EncodeToString(hash[:])
	// The account's own records first (counted against the cap and added
	// atomically), the global lookup last: a key is never usable before its
	// account knows it.
	res, err := createKeyScript.Run(ctx, s.rdb, []string{acctKey(account), keysKey(account), keysKey(account) + ":hash", keysKey(account) + ":active", auditKey(account), membersKey(account)},
		k.ID, meta, hashHex, nk.CreditLimit, nk.MaxActive, nk.CreatedBy, nk.Actor, time.Now().UnixMilli(), MaxAudit, account).Int64Slice()
	if err != nil {
		return Key{}, "", unavailable("creating key", err)
	}
	switch res[0] {
	case 1:
	case 0:
		return Key{}, "", fmt.Errorf("creating key for %q: %d active, at most %d: %w", account, res[1], nk.MaxActive, ErrTooManyKeys)
	case -1:
		return Key{}, "", fmt.Errorf("creating key for %q: %w", account, ErrNoAccount)
	case -3:
		return Key{}, "", fmt.Errorf("creating key for %q by %q: %w", account, nk.CreatedBy, ErrNoMember)
	default:
		return Key{}, "", fmt.Errorf("creating key for %q: key id %s already taken", account, k.ID)
	}
	if nk.Settings.Governed() {
		// The rules before the lookup: the key's first call is already governed.
		if _, err := s.writeKeyRules(ctx, k, string(meta)); err != nil {
			return Key{}, "", err
		}
	}
	budgeted, err := s.memberBudgeted(ctx, account, nk.CreatedBy)
	if err != nil {
		return Key{}, "", err
	}
	limited := "0"
	if nk.CreditLimit > 0 || nk.Settings.Governed() || budgeted {
		limited = "1"
	}
	if err := s.rdb.HSet(ctx, keyLookupKey(hashHex), "account", account, "id", k.ID, "hash_of", "sha256",
		"limited", limited).Err(); err != nil {
		return Key{}, "", unavailable("creating key", err)
	}
	if limited == "0" && nk.CreatedBy != "" {
		// A member budget set meanwhile (markLimited explains why this suffices).
		if err := s.markLimited(ctx, k, hashHex); err != nil {
			return Key{}, "", err
		}
	}
	return k, secret, nil
}

// RevokeKey disables a key: its lookup entry is deleted first, and every
// Store's key cache told so (KeysChangedChannel) in the same MULTI, so that
// its next call is refused everywhere (within the key cache TTL should the
// message be lost).
func (s *Store) RevokeKey(ctx context.Context, account, keyID string) error {
	hash, err := s.rdb.HGet(ctx, keysKey(account)+":hash", keyID).Result()
	if err != nil {
		if isNil(err) {
			return fmt.Errorf("revoking %q: %w", keyID, ErrNoKey)
		}
		return unavailable("revoking key", err)
	}
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, keyLookupKey(hash))
		p.Publish(ctx, KeysChangedChannel, hash)
		return nil
	}); err != nil {
		return unavailable("revoking key", err)
	}
	meta, err := s.rdb.HGet(ctx, keysKey(account), keyID).Bytes()
	if err != nil && !isNil(err) {
		return unavailable("revoking key", err)
	}
	var k Key
	if json.Unmarshal(meta, &k) == nil {
		k.Revoked = true
		meta, _ = json.Marshal(k)
		if err := s.rdb.HSet(ctx, keysKey(account), keyID, meta).Err(); err != nil {
			return unavailable("revoking key", err)
		}
	}
	// Last: until here the key still counts against the cap (a revocation
	// cut short fails closed).
	if err := s.rdb.SRem(ctx, keysKey(account)+":active", keyID).Err(); err != nil {
		return unavailable("revoking key", err)
	}
	s.keys.forget(hash)
	return nil
}

// Keys lists an account's keys (revoked ones included, marked), oldest first,
// with what each has spent.
func (s *Store) Keys(ctx context.Context, account string) ([]KeyUsage, error) {
	m, err := s.rdb.HGetAll(ctx, keysKey(account)).Result()
	if err != nil {
		return nil, unavailable("listing keys", err)
	}
	out := make([]KeyUsage, 0, len(m))
	fields := make([]string, 0, len(m))
	for _, v := range m {
		var k Key
		if json.Unmarshal([]byte(v), &k) == nil {
			out = append(out, KeyUsage{Key: k})
			fields = append(fields, "k:"+k.ID+":used")
		}
	}
	if len(fields) > 0 {
		used, err := s.rdb.HMGet(ctx, acctKey(account), fields...).Result()
		if err != nil {
			return nil, unavailable("listing keys", err)
		}
		for i := range out {
			out[i].Used = atoi(used[i])
		}
		if err := s.keyPeriodUsed(ctx, account, out); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// KeyUsage is a key with what it has spent, in mc.
type KeyUsage struct {
	Key
	Used int64 `json:"used"`
	// PeriodUsed is what the key spent in its budget period so far (mc;
	// 0 without a budget).
	PeriodUsed int64 `json:"period_used"`
}

// ActiveKeys counts an account's keys that are not revoked.
func (s *Store) ActiveKeys(ctx context.Context, account string) (int, error) {
	keys, err := s.Keys(ctx, account)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		if !k.Revoked {
			n++
		}
	}
	return n, nil
}

// Identity is who an API key authenticates.
type Identity struct {
	Account string
	KeyID   string
	// Limited: the key has a credit limit or rules of its own (keygov.go), so
	// its calls are held in Redis one by one (where every replica sees the
	// same counts), never served from a replica's credit lease.
	Limited bool
}

// Authenticate resolves an API key secret to its account. Unknown and revoked
// keys fail with ErrBadKey. Results (hits and misses) are cached in process for
// Options.KeyCacheTTL, or until a change to the key is published (keywatch.go).
func (s *Store) Authenticate(ctx context.Context, secret []byte) (Identity, error) {
	if s.epoch.lost.Load() {
		// Redis lost its data: every key is unknown there, and 503 (not
		// 401) says so until the restore. (epoch.go)
		s.epochTick()
		return Identity{}, lostErr("authenticating")
	}
	s.epochTick()
	hash := hashKey(secret)
	if id, err, ok := s.keys.get(hash); ok {
		return id, err
	}
	// Read before the lookup: a change published while it is on its way
	// keeps what it read out of the cache (keyCache.put).
	gen := s.keys.gen.Load()
	var hexHash [64]byte
	hex.Encode(hexHash[:], hash[:])
	vals, err := s.rdb.HMGet(ctx, keyLookupKey(string(hexHash[:])), "account", "id", "limited").Result()
	if err != nil {
		return Identity{}, unavailable("authenticating", err)
	}
	acct, _ := vals[0].(string)
	kid, _ := vals[1].(string)
	if acct == "" {
		// Unknown key: is it unknown because Redis lost its data?
		if s.epoch.seen.Load() {
			if err := s.CheckEpoch(ctx); errors.Is(err, ErrStoreLost) {
				return Identity{}, err
			}
		}
		s.keys.put(hash, Identity{}, ErrBadKey, gen)
		return Identity{}, ErrBadKey
	}
	// A key stored before "limited" existed counts as limited: the exact
	// path, never a limit skipped.
	lim, _ := vals[2].(string)
	id := Identity{Account: acct, KeyID: kid, Limited: lim != "0"}
	s.keys.put(hash, id, nil, gen)
	return id, nil
}

func hashKey(secret []byte) [32]byte { return sha256.Sum256(secret) }

// keyCache remembers key lookups for a short TTL, or until a change to the
// key is published (keywatch.go). Bounded: it is cleared whole when it grows
// past maxEntries.
type keyCache struct {
	ttl time.Duration
	// gen counts evictions (forget, clear): a lookup read from Redis is
	// cached only when none happened since it was sent (put), so that an
	// answer read before a change never outlives the change's message.
	gen atomic.Uint64
	mu  sync.RWMutex
	m   map[[32]byte]cachedKey
}

type cachedKey struct {
	id      Identity
	err     error
	expires int64 // unix nanos
}

const maxCachedKeys = 100_000

func (c *keyCache) init(ttl time.Duration) {
	c.ttl = ttl
	c.m = make(map[[32]byte]cachedKey)
}

func (c *keyCache) get(h [32]byte) (Identity, error, bool) {
	if c.ttl < 0 {
		return Identity{}, nil, false
	}
	c.mu.RLock()
	e, ok := c.m[h]
	c.mu.RUnlock()
	if !ok || time.Now().UnixNano() > e.expires {
		return Identity{}, nil, false
	}
	return e.id, e.err, true
}

// put caches a lookup that was sent when the eviction count was gen, unless
// an eviction happened since.
func (c *keyCache) put(h [32]byte, id Identity, err error, gen uint64) {
	if c.ttl < 0 {
		return
	}
	c.mu.Lock()
	if c.gen.Load() != gen {
		c.mu.Unlock()
		return
	}
	if len(c.m) >= maxCachedKeys {
		c.m = make(map[[32]byte]cachedKey)
	}
	c.m[h] = cachedKey{id: id, err: err, expires: time.Now().Add(c.ttl).UnixNano()}
	c.mu.Unlock()
}

func (c *keyCache) clear() {
	c.mu.Lock()
	c.gen.Add(1)
	clear(c.m)
	c.mu.Unlock()
}

func (c *keyCache) forget(hashHex string) {
	var h [32]byte
	if n, err := hex.Decode(h[:], []byte(hashHex)); err != nil || n != 32 {
		return
	}
	c.mu.Lock()
	c.gen.Add(1)
	delete(c.m, h)
	c.mu.Unlock()
}

func isNil(err error) bool { return errors.Is(err, redis.Nil) }
