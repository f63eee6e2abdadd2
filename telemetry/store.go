package telemetry

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// StoreHook is a go-redis hook that counts failed commands in
// tollgate_store_errors_total: the store unreachable or timing out, or the
// server refusing a command (OOM, READONLY, LOADING…). Not counted: a missing
// key (redis.Nil), replies that are answers rather than failures (NOSCRIPT,
// which go-redis answers with EVAL; BUSYGROUP; a script's own refusal) and
// a caller that gave up (context cancelled).
func (r *Registry) StoreHook() redis.Hook { return storeHook{r} }

type storeHook struct{ r *Registry }

// DialHook counts nothing: a failed dial fails the command that needed it,
// which ProcessHook counts once.
func (storeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h storeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if storeFailure(err) {
			h.r.storeErrors.Inc()
		}
		return err
	}
}

func (h storeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if storeFailure(err) {
			h.r.storeErrors.Inc()
		}
		return err
	}
}

func storeFailure(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		return true // unreachable, timed out, pool exhausted, closed
	}
	// A reply error is the store's failure only when it says the server
	// cannot serve (others — NOSCRIPT, BUSYGROUP, a script's own refusal —
	// are answers the caller handles).
	msg := err.Error()
	for _, p := range storeDown {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// storeDown are the reply prefixes of a server that cannot serve.
var storeDown = []string{"OOM", "READONLY", "LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS", "MISCONF", "BUSY "}
