package metering

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// pipeliner coalesces the script calls of concurrent requests into Redis
// pipelines. A call that finds fewer than max pipelines in flight is sent at
// once — alone when the store is idle, so a lightly loaded proxy waits no
// longer than before. Calls that arrive while max pipelines are in flight
// queue, and the next pipeline carries them all: one write and one read for
// the whole batch, in the proxy and in Redis. No goroutine is added: the
// caller whose pipeline finishes hands the queue to one of the waiters, which
// sends it.
//
// Each script stays its own atomic EVALSHA; a pipeline only shares the round
// trip, so batching changes no result. Scripts missing from Redis (after a
// restart) are rerun alone with EVAL.
type pipeliner struct {
	rdb redis.UniversalClient
	max int // pipelines in flight at once; 0 = no batching

	mu       sync.Mutex
	inflight int
	queue    []*scriptCall
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	wake   chan struct{} // buffered 1: the call is done, or batch is set
	batch  []*scriptCall // set when this waiter is to send the next batch
	one    [1]*scriptCall
}

var scriptCalls = sync.Pool{New: func() any { return &scriptCall{wake: make(chan struct{}, 1)} }}

const maxPipelineBatch = 128

// run is script.Run, batched with the calls of other goroutines.
func (p *pipeliner) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if p.max <= 0 {
		return script.Run(ctx, p.rdb, keys, args...)
	}
	c := scriptCalls.Get().(*scriptCall)
	c.script, c.keys, c.args = script, keys, args
	p.mu.Lock()
	if p.inflight < p.max {
		p.inflight++
		p.mu.Unlock()
		c.one[0] = c
		p.lead(ctx, c, c.one[:])
	} else {
		p.queue = append(p.queue, c)
		p.mu.Unlock()
		<-c.wake
		if c.batch != nil {
			p.lead(ctx, c, c.batch)
		}
	}
	cmd := c.cmd
	*c = scriptCall{wake: c.wake}
	scriptCalls.Put(c)
	return cmd
}

// lead sends batch (self's call among them), wakes the other callers, then
// passes the queue, if any, to one of its waiters.
func (p *pipeliner) lead(ctx context.Context, self *scriptCall, batch []*scriptCall) {
	p.exec(ctx, batch)
	p.mu.Lock()
	var next []*scriptCall
	if n := min(len(p.queue), maxPipelineBatch); n > 0 {
		next = make([]*scriptCall, n)
		copy(next, p.queue)
		p.queue = append(p.queue[:0], p.queue[n:]...)
	} else {
		p.inflight--
	}
	p.mu.Unlock()
	for _, c := range batch {
		if c != self {
			c.wake <- struct{}{}
		}
	}
	if next != nil {
		next[0].batch = next
		next[0].wake <- struct{}{}
	}
}

func (p *pipeliner) exec(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.cmd = c.script.Run(ctx, p.rdb, c.keys, c.args...)
		return
	}
	// The batch carries other callers' calls: one caller's cancellation
	// must not fail them (each call is still bounded by the client's timeouts).
	ctx = context.WithoutCancel(ctx)
	pipe := p.rdb.Pipeline()
	for _, c := range batch {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range batch {
		if err := c.cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			c.cmd = c.script.Run(ctx, p.rdb, c.keys, c.args...)
		}
	}
}
