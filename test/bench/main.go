// Command bench is Tollgate's load harness (`make bench`). It builds the
// gateway, starts a throwaway redis-server, the mock provider and a bare
// fasthttp forwarder (each its own process, all on 127.0.0.1), starts
// `tollgate proxy` against them, creates a funded account and key with
// `tollgate admin`, and drives a fixed, bounded load at three targets:
//
//	direct      the mock provider itself
//	bare        a bare fasthttp forwarder in front of the mock (the floor)
//	bare+redis  the same forwarder plus two Redis round trips (PING) per call:
//	            the floor of any design that reserves before forwarding and
//	            settles before answering (for reference; no target uses it)
//	tollgate    the metering proxy in front of the mock, with Redis, with its
//	            Prometheus metrics on (scraped each second during the run)
//	tollgate-nometrics
//	            the same proxy (a second process on the same Redis and
//	            account) with --metrics-addr off: what metrics cost per call
//
// Scenarios (each target in turn, in -rounds short turns so that whatever
// else runs on the machine weighs on every target alike):
//
//	closed   non-streaming chat calls, closed loop at -conns connections:
//	         req/s, p50/p99, and each server process's CPU time per call
//	open     non-streaming calls, open loop at -rate req/s: p50/p99
//	ttfb     streamed calls at -ttfb-rate streams/s: time to first body byte
//	streams  -streams slow streams held open at once: RSS per stream
//	         (bare forwarder and proxy; capped by RLIMIT_NOFILE)
//
// It prints one table with issue 6's targets, and writes the figures as
// JSON and an SVG plot of the latency percentiles (default under bench/).
// Everything listens on 127.0.0.1 and is stopped at the end.
//
//	go run ./test/bench                 # what make bench runs (~80 s)
//	go run ./test/bench -quick          # smoke test (~15 s)
//	go run ./test/bench -scenarios closed,open -rounds 3
//	go run ./test/bench plot bench/results.json bench/latency.svg
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// settings are the harness's flags.
type settings struct {
	out       string
	tollgate  string
	build     bool
	config    string
	conns     int
	warmup    time.Duration
	dur       time.Duration
	rate      int
	openDur   time.Duration
	ttfbRate  int
	ttfbDur   time.Duration
	streams   int
	scenarios string
	rounds    int
	redisBin  string
	goBench   bool
	strict    bool
}

// Request bodies: a small chat call without max_tokens (the proxy grants
// the most the account can afford and rewrites the body), the same call
// streamed, and a slow stream (one token a second) for the memory test.
const (
	chatBody       = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark, please."}],"temperature":0.2}`
	streamBody     = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark, please."}],"stream":true}`
	slowStreamBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"[mock:rate=1,tokens=60] hold this stream open"}],"stream":true,"max_tokens":64}`
	chatPath       = "/v1/chat/completions"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "mock":
			return runMock(ctx, args[1:], stdout)
		case "forwarder":
			return runForwarder(ctx, args[1:], stdout)
		case "plot": // plot RESULTS.json OUT.svg: redraw a past run's plot
			if len(args) != 3 {
				return errors.New("usage: bench plot results.json latency.svg")
			}
			b, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			var res Results
			if err := json.Unmarshal(b, &res); err != nil {
				return err
			}
			return os.WriteFile(args[2], res.svg(), 0o644)
		}
	}
	var s settings
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.out, "out", "bench", "directory for results.json and latency.svg (relative to the module root)")
	fs.StringVar(&s.tollgate, "tollgate", "bin/tollgate", "tollgate binary (relative to the module root)")
	fs.BoolVar(&s.build, "build", true, "build the tollgate binary first (go build -o <tollgate> ./cmd/tollgate)")
	fs.StringVar(&s.config, "config", "configs/tollgate.yaml", "tollgate configuration")
	fs.IntVar(&s.conns, "conns", 64, "connections of the closed-loop runs")
	fs.DurationVar(&s.warmup, "warmup", time.Second, "warm-up before each measured window")
	fs.DurationVar(&s.dur, "duration", 4*time.Second, "measured window of each closed-loop run")
	fs.IntVar(&s.rate, "rate", 1000, "requests per second of the open-loop runs")
	fs.DurationVar(&s.openDur, "open-duration", 5*time.Second, "measured window of each open-loop run")
	fs.IntVar(&s.ttfbRate, "ttfb-rate", 200, "streams per second of the time-to-first-byte runs")
	fs.DurationVar(&s.ttfbDur, "ttfb-duration", 3*time.Second, "measured window of each time-to-first-byte run")
	fs.IntVar(&s.streams, "streams", 10000, "slow streams held open at once for the memory test (capped by RLIMIT_NOFILE)")
	fs.StringVar(&s.scenarios, "scenarios", "closed,open,ttfb,streams", "scenarios to run (comma-separated)")
	fs.IntVar(&s.rounds, "rounds", 2, "rounds per scenario: each target's time is split into this many turns")
	fs.StringVar(&s.redisBin, "redis-server", "redis-server", "redis-server binary")
	fs.BoolVar(&s.goBench, "go-bench", true, "also run BenchmarkHandlerNonStream for allocs/op")
	fs.BoolVar(&s.strict, "strict", false, "exit 1 when a target of issue 6 is missed")
	quick := fs.Bool("quick", false, "short runs (smoke test of the harness)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if s.rounds < 1 {
		s.rounds = 1
	}
	if *quick {
		s.warmup, s.dur, s.openDur, s.ttfbDur, s.streams, s.rounds = 300*time.Millisecond, time.Second, time.Second, time.Second, 500, 1
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	// Bound the whole run: every phase has its own limits too.
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	return bench(ctx, root, s, stdout)
}

func (s settings) scenario(name string) bool {
	for _, n := range strings.Split(s.scenarios, ",") {
		if strings.TrimSpace(n) == name {
			return true
		}
	}
	return false
}

// env is everything the harness started.
type env struct {
	root                 string
	tmp                  string // redis-server's directory
	redis, mock, fwd, tg *proc
	fwdRedis             *proc
	tgBare               *proc // the proxy with metrics off
	key                  string
	direct, bare, proxy  target
	bareRedis            target
	proxyNoMetrics       target
	metricsAddr          string
}

func (e *env) stop() {
	e.tg.stop(5 * time.Second) // before Redis: it settles what is in flight
	e.tgBare.stop(5 * time.Second)
	e.fwd.stop(2 * time.Second)
	e.fwdRedis.stop(2 * time.Second)
	e.mock.stop(5 * time.Second)
	e.redis.stop(2 * time.Second)
	if e.tmp != "" {
		_ = os.RemoveAll(e.tmp)
	}
}

func bench(ctx context.Context, root string, s settings, stdout io.Writer) error {
	nofile := raiseNoFile()
	// Each held stream costs the proxy two descriptors (client and upstream).
	// Keep 1,000 spare for the Redis pool, upstream keep-alives and the rest.
	if maxStreams := (int(nofile) - 1000) / 2; s.streams > maxStreams {
		fmt.Fprintf(stdout, "note: RLIMIT_NOFILE is %d: holding %d streams instead of %d (the proxy needs two descriptors per stream)\n",
			nofile, maxStreams, s.streams)
		s.streams = maxStreams
	}
	tgBin := s.tollgate
	if !filepath.IsAbs(tgBin) {
		tgBin = filepath.Join(root, tgBin)
	}
	if s.build {
		fmt.Fprintln(stdout, "building", s.tollgate)
		if _, err := runCmd(ctx, root, nil, "go", "build", "-o", tgBin, "./cmd/tollgate"); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	e := &env{root: root}
	defer e.stop()
	if err := e.start(ctx, s, self, tgBin); err != nil {
		return err
	}
	machine := describeMachine(ctx)
	fmt.Fprintf(stdout, "machine: %s\n", machine.String())
	if machine.Load1 > 0.5 {
		fmt.Fprintf(stdout, "note: load average %.2f before the run: other processes share the CPUs, expect noisy figures\n", machine.Load1)
	}
	res := &Results{Machine: machine, Started: time.Now().UTC(), Settings: settingsView(s)}
	if s.goBench {
		fmt.Fprintln(stdout, "go test -bench BenchmarkHandlerNonStream/proxy (allocations per call)")
		allocs, line, err := handlerAllocs(ctx, root)
		if err != nil {
			return err
		}
		res.HandlerAllocs, res.HandlerBenchLine = allocs, line
		fmt.Fprintln(stdout, " ", line)
	}
	targets := []target{e.direct, e.bare, e.bareRedis, e.proxy, e.proxyNoMetrics}
	stopScrape := scrapeEachSecond(ctx, "http://"+e.metricsAddr+"/metrics")
	defer stopScrape()
	// Each scenario runs its targets in turn, for several short rounds:
	// whatever else the machine does then weighs on every target alike.
	rounds := func(name string, dur time.Duration, fn func(t target, d time.Duration) loadRun) (map[string]LoadResult, error) {
		fmt.Fprintln(stdout, name)
		acc := map[string]*loadRun{}
		for r := 0; r < s.rounds; r++ {
			for _, t := range targets {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if acc[t.name] == nil {
					acc[t.name] = &loadRun{}
				}
				acc[t.name].merge(fn(t, dur/time.Duration(s.rounds)))
			}
		}
		out := map[string]LoadResult{}
		for _, t := range targets {
			r := acc[t.name].result()
			out[t.name] = r
			cpu := ""
			if r.CPUPerCall > 0 {
				cpu = fmt.Sprintf("  cpu/call %6.1f µs", r.CPUPerCall)
			}
			if r.RedisCPUPerCall > 0 {
				cpu += fmt.Sprintf(" (+ redis %.1f µs)", r.RedisCPUPerCall)
			}
			fmt.Fprintf(stdout, "  %-10s %8.0f req/s  p50 %7.0f µs  p99 %7.0f µs%s  errors %d %s\n",
				t.name, r.RPS, r.P50, r.P99, cpu, r.Errors, r.FirstError)
		}
		return out, nil
	}

	// 1. Closed loop, non-streaming, fixed concurrency.
	if s.scenario("closed") {
		res.Closed, err = rounds(fmt.Sprintf("closed loop: %d connections, %s per target", s.conns, s.dur), s.dur, func(t target, d time.Duration) loadRun {
			return closedLoop(t, chatPath, []byte(chatBody), s.conns, s.warmup/time.Duration(s.rounds), d)
		})
		if err != nil {
			return err
		}
	}

	// 2. Open loop at a fixed rate.
	if s.scenario("open") {
		res.Open, err = rounds(fmt.Sprintf("open loop: %d req/s, %s per target", s.rate, s.openDur), s.openDur, func(t target, d time.Duration) loadRun {
			return openLoop(t, chatPath, []byte(chatBody), s.rate, s.warmup/(2*time.Duration(s.rounds)), d, false)
		})
		if err != nil {
			return err
		}
	}

	// 3. Streaming time to first byte.
	if s.scenario("ttfb") {
		res.TTFB, err = rounds(fmt.Sprintf("streams: time to first byte at %d streams/s, %s per target", s.ttfbRate, s.ttfbDur), s.ttfbDur, func(t target, d time.Duration) loadRun {
			return openLoop(t, chatPath, []byte(streamBody), s.ttfbRate, s.warmup/(2*time.Duration(s.rounds)), d, true)
		})
		if err != nil {
			return err
		}
	}

	// 4. Memory per open stream.
	if s.scenario("streams") && s.streams > 0 {
		fmt.Fprintf(stdout, "open streams: %d slow streams held at once\n", s.streams)
		res.Streams = map[string]streamHold{}
		for _, t := range []target{e.bare, e.proxy} {
			if err := ctx.Err(); err != nil {
				return err
			}
			h := holdStreams(t, chatPath, []byte(slowStreamBody), s.streams)
			res.Streams[t.name] = h
			fmt.Fprintf(stdout, "  %-8s %d streams (%d failed)  RSS %d → %d KiB  %.1f KiB/stream %s\n",
				t.name, h.Streams, h.Failed, h.RSSBeforeKiB, h.RSSAfterKiB, h.PerStreamKiB, h.FirstError)
			time.Sleep(1500 * time.Millisecond) // let the closed streams settle
		}
	}
	if err := e.tg.exited(); err != nil {
		return err
	}
	if err := e.tgBare.exited(); err != nil {
		return err
	}

	res.evaluate()
	res.Finished = time.Now().UTC()
	fmt.Fprintln(stdout)
	res.printTable(stdout)
	outDir := s.out
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(root, outDir)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "latency.svg"), res.svg(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s and %s\n", filepath.Join(outDir, "results.json"), filepath.Join(outDir, "latency.svg"))
	if s.strict {
		for _, t := range res.Targets {
			if !t.Pass {
				return fmt.Errorf("target missed: %s", t.Name)
			}
		}
	}
	return nil
}

// start launches Redis, the mock, the forwarder and the proxy, and creates
// the account and key.
func (e *env) start(ctx context.Context, s settings, self, tgBin string) error {
	ports := make([]int, 7)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	redisAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	mockAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	fwdAddr := "127.0.0.1:" + strconv.Itoa(ports[2])
	tgAddr := "127.0.0.1:" + strconv.Itoa(ports[3])
	fwdRedisAddr := "127.0.0.1:" + strconv.Itoa(ports[4])
	tgBareAddr := "127.0.0.1:" + strconv.Itoa(ports[5])
	e.metricsAddr = "127.0.0.1:" + strconv.Itoa(ports[6])

	redisBin, err := exec.LookPath(s.redisBin)
	if err != nil {
		return fmt.Errorf("redis-server is required (apt-get install -y redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return err
	}
	e.tmp = dir
	if e.redis, err = startProc("redis-server", dir, redisBin, []string{
		"--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--loglevel", "warning", "--maxclients", "10000",
	}, nil); err != nil {
		return err
	}
	if e.mock, err = startProc("mock", e.root, self, []string{"mock", "-addr", mockAddr}, nil); err != nil {
		return err
	}
	if e.fwd, err = startProc("forwarder", e.root, self, []string{"forwarder", "-addr", fwdAddr, "-upstream", mockAddr}, nil); err != nil {
		return err
	}
	if e.fwdRedis, err = startProc("forwarder+redis", e.root, self,
		[]string{"forwarder", "-addr", fwdRedisAddr, "-upstream", mockAddr, "-redis", redisAddr}, nil); err != nil {
		return err
	}
	for _, w := range []struct {
		p    *proc
		addr string
	}{{e.redis, redisAddr}, {e.mock, mockAddr}, {e.fwd, fwdAddr}, {e.fwdRedis, fwdRedisAddr}} {
		if err := waitTCP(ctx, w.addr, w.p, 10*time.Second); err != nil {
			return err
		}
	}
	tgEnv := []string{
		"REDIS_URL=redis://" + redisAddr + "/0",
		"OPENAI_BASE_URL=http://" + mockAddr + "/v1",
		"OPENAI_API_KEY=x",
		"TOLLGATE_LOG_LEVEL=" + envOr("TOLLGATE_LOG_LEVEL", "warn"),
	}
	admin := func(args ...string) ([]byte, error) {
		return runCmd(ctx, e.root, tgEnv, tgBin, append([]string{"admin", "-config", s.config}, args...)...)
	}
	if _, err := admin("account", "create", "bench"); err != nil {
		return err
	}
	if _, err := admin("credit", "bench", "100000000", "bench-seed"); err != nil {
		return err
	}
	out, err := admin("key", "create", "bench", "bench")
	if err != nil {
		return err
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(out, &k); err != nil || !strings.HasPrefix(k.Key, "tg-") {
		return fmt.Errorf("admin key create: unexpected output %q", out)
	}
	e.key = k.Key
	if e.tg, err = startProc("tollgate proxy", e.root, tgBin, []string{"proxy", "--config", s.config, "--addr", tgAddr,
		"--metrics-addr", e.metricsAddr}, tgEnv); err != nil {
		return err
	}
	if e.tgBare, err = startProc("tollgate proxy (metrics off)", e.root, tgBin, []string{"proxy", "--config", s.config, "--addr", tgBareAddr,
		"--metrics-addr", "off"}, tgEnv); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+tgAddr+"/readyz", e.tg, 15*time.Second); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+tgBareAddr+"/readyz", e.tgBare, 15*time.Second); err != nil {
		return err
	}
	e.direct = target{name: "direct", addr: mockAddr, pid: e.mock.pid()}
	e.bare = target{name: "bare", addr: fwdAddr, pid: e.fwd.pid()}
	e.bareRedis = target{name: "bare+redis", addr: fwdRedisAddr, pid: e.fwdRedis.pid(), redisPID: e.redis.pid()}
	e.proxy = target{name: "tollgate", addr: tgAddr, key: e.key, pid: e.tg.pid(), redisPID: e.redis.pid()}
	e.proxyNoMetrics = target{name: "tollgate-nometrics", addr: tgBareAddr, key: e.key, pid: e.tgBare.pid(), redisPID: e.redis.pid()}
	return nil
}

// handlerAllocs runs the proxy's handler benchmark and returns its allocs/op
// and result line.
func handlerAllocs(ctx context.Context, root string) (float64, string, error) {
	out, err := runCmd(ctx, root, nil, "go", "test", "-run", "^$", "-bench", "^BenchmarkHandlerNonStream$/^proxy$",
		"-benchtime", "20000x", "-count", "1", "./proxy/")
	if err != nil {
		return 0, "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "BenchmarkHandlerNonStream/proxy") {
			continue
		}
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			if f[i] == "allocs/op" {
				v, err := strconv.ParseFloat(f[i-1], 64)
				return v, strings.Join(f, " "), err
			}
		}
	}
	return 0, "", fmt.Errorf("no allocs/op in go test output:\n%s", out)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Machine describes where the figures come from.
type Machine struct {
	CPU       string  `json:"cpu"`
	Cores     int     `json:"cores"`
	MemoryGiB int     `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
	Redis     string  `json:"redis"`
	Load1     float64 `json:"load_average_1m"` // before the run: other work on the machine skews figures
}

func (m Machine) String() string {
	return fmt.Sprintf("%s, %d cores, %d GiB, Linux %s, %s, redis %s", m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, m.Redis)
}

func describeMachine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if i := strings.IndexByte(line, ':'); i > 0 {
					m.CPU = strings.TrimSpace(line[i+1:])
					break
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemoryGiB = int((kb + 512*1024) / (1024 * 1024))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(b), "%f", &m.Load1)
	}
	if out, err := exec.CommandContext(ctx, "redis-server", "--version").Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "v=") {
				m.Redis = f[2:]
			}
		}
	}
	return m
}

// scrapeEachSecond reads url (the proxy's /metrics) every second until
// stopped, as Prometheus would (every 15 s by default): the measured proxy
// pays for its expositions too.
func scrapeEachSecond(ctx context.Context, url string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	return func() { cancel(); <-done }
}
