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
// key (redis.Nil), a script not cached yet (NOSCRIPT, which go-redis answers
// with EVAL) and a caller that gave up (context cancelled).
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
	return !strings.HasPrefix(err.Error(), "NOSCRIPT")
}
