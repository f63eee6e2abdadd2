package proxy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/lease"
	"github.com/tollgate/tollgate/metering"
)

// BenchmarkHandlerRedis is BenchmarkHandlerNonStream with the real
// metering.Store on a throwaway redis-server: the whole metered call,
// including the two script round trips (reserve, settle). It is skipped
// when redis-server is not installed.
func BenchmarkHandlerRedis(b *testing.B) {
	rs := testredis.Start(b)
	rdb := rs.Client(b)
	store := metering.New(rdb, metering.Options{})
	ctx := context.Background()
	if err := store.LoadScripts(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := store.CreateAccount(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	if _, err := store.Credit(ctx, metering.Credit{Account: "bench", Amount: 1 << 50, Reference: "seed"}); err != nil {
		b.Fatal(err)
	}
	_, key, err := store.CreateKey(ctx, "bench", "bench", 0)
	if err != nil {
		b.Fatal(err)
	}
	e := newBenchEnv(b)
	redisPID := redisProcessID(b, rdb)
	run := func(b *testing.B, parallel bool) {
		body := func(loop func() bool) {
			req := newRequest("/v1/chat/completions", benchChatBody)
			req.Header.Set("Authorization", "Bearer "+key)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for loop() {
				roundTrip(b, e.client, req, resp)
			}
		}
		b.ReportAllocs()
		start, cpu0, rcpu0 := time.Now(), processCPU(), pidCPU(redisPID)
		if parallel {
			b.SetParallelism(32) // 64 callers on 2 cores
			b.RunParallel(func(pb *testing.PB) { body(pb.Next) })
		} else {
			body(b.Loop)
		}
		n := float64(b.N)
		b.ReportMetric(n/time.Since(start).Seconds(), "calls/s")
		// CPU per call is steadier than time per call on a shared machine:
		// this process (client, proxy, mock) and redis-server apart.
		b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/n, "cpu-µs/call")
		b.ReportMetric(float64((pidCPU(redisPID)-rcpu0).Microseconds())/n, "redis-cpu-µs/call")
	}
	// Per-call holds (two scripts per call), and the credit leases the
	// gateway runs by default.
	var logged atomic.Int32
	onError := func(a string, err error) {
		if logged.Add(1) < 3 {
			b.Log(a, err)
		}
	}
	perCall := lease.New(store, lease.Options{PerCall: true, OnError: onError})
	leased := lease.New(store, lease.Options{OnError: onError})
	b.Cleanup(func() {
		_ = perCall.Close(context.Background())
		_ = leased.Close(context.Background())
	})
	for _, m := range []struct {
		name  string
		meter Meter
	}{{"per-call", perCall}, {"lease", leased}} {
		e.srv.meter = m.meter
		b.Run(m.name+"/serial", func(b *testing.B) { run(b, false) })
		b.Run(m.name+"/parallel", func(b *testing.B) { run(b, true) })
	}
}

// processCPU is this process's user+system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU is another process's user+system CPU time (0 when unknown).
func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || pid == 0 {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func redisProcessID(tb testing.TB, rdb *redis.Client) int {
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	return 0
}
