package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// idGen makes request ids: a random per-process prefix and a counter, unique
// across replicas without coordination and cheap to produce.
type idGen struct {
	prefix string
	n      atomic.Uint64
}

func newIDGen() *idGen {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &idGen{prefix: "req_" + hex.EncodeToString(b[:])}
}

func (g *idGen) next() string {
	var buf [48]byte
	b := append(buf[:0], g.prefix...)
	b = append(b, '_')
	b = strconv.AppendUint(b, g.n.Add(1), 36)
	return string(b)
}
