package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"
)

// idGen makes request ids: a random per-process prefix and a counter, unique
// across replicas without coordination and cheap to produce.
//
// Ids are carved out of shared 1 KiB slabs (about 40 ids each) instead of
// being allocated one by one: a slab's bytes are only ever appended to, never
// rewritten, so each id string stays immutable, and the slab lives as long as
// any id in it. That takes the per-call allocation off the hot path at the
// cost of at most one slab kept alive per long-lived id.
type idGen struct {
	prefix string
	n      atomic.Uint64
	slabs  sync.Pool // *idSlab with room left
}

type idSlab struct{ b []byte }

const (
	idSlabSize = 1 << 10
	maxIDLen   = len("req_") + 12 + 1 + 13 // prefix, '_', a base-36 uint64
)

func newIDGen() *idGen {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &idGen{prefix: "req_" + hex.EncodeToString(b[:])}
}

func (g *idGen) next() string {
	n := g.n.Add(1)
	sl, _ := g.slabs.Get().(*idSlab)
	if sl == nil || cap(sl.b)-len(sl.b) < maxIDLen {
		sl = &idSlab{b: make([]byte, 0, idSlabSize)}
	}
	start := len(sl.b)
	sl.b = append(sl.b, g.prefix...)
	sl.b = append(sl.b, '_')
	sl.b = strconv.AppendUint(sl.b, n, 36)
	id := unsafe.String(&sl.b[start], len(sl.b)-start)
	g.slabs.Put(sl)
	return id
}

// intern copies b (an id from a request or a response, a credits figure)
// into a slab, as next does: a string that outlives the handler without an
// allocation per call. Longer ones than a quarter slab are copied on their own.
func (g *idGen) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > idSlabSize/4 {
		return string(b)
	}
	sl, _ := g.slabs.Get().(*idSlab)
	if sl == nil || cap(sl.b)-len(sl.b) < max(len(b), maxIDLen) {
		sl = &idSlab{b: make([]byte, 0, idSlabSize)}
	}
	start := len(sl.b)
	sl.b = append(sl.b, b...)
	s := unsafe.String(&sl.b[start], len(b))
	g.slabs.Put(sl)
	return s
}
