package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// target is one server the load generator drives.
type target struct {
	name string // "direct", "bare", "tollgate"
	addr string // host:port
	key  string // API key sent as Bearer ("" for none)
	pid  int    // its process, for CPU and RSS
	// redisPID, when set, is a Redis the target uses: its CPU time is
	// measured over the closed-loop window too.
	redisPID int
}

// LoadResult is one load run against one target. Latencies are microseconds.
type LoadResult struct {
	Requests int     `json:"requests"` // answered 200 within the window
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_us"`
	P90      float64 `json:"p90_us"`
	P99      float64 `json:"p99_us"`
	P999     float64 `json:"p999_us"`
	Max      float64 `json:"max_us"`
	// CPUPerCall is the target process's CPU time per answered call (µs),
	// measured over the window (closed loop only).
	CPUPerCall float64 `json:"cpu_per_call_us,omitempty"`
	// RedisCPUPerCall is redis-server's CPU time per answered call (µs),
	// for targets that use Redis (closed loop only).
	RedisCPUPerCall float64 `json:"redis_cpu_per_call_us,omitempty"`
	// Percentiles are (percentile, µs) points for the plot.
	Percentiles [][2]float64 `json:"percentiles"`
	FirstError  string       `json:"first_error,omitempty"`
}

var plotPercentiles = []float64{50, 75, 90, 95, 99, 99.5, 99.9}

func summarize(lat []time.Duration, errs int, window time.Duration, firstErr string) LoadResult {
	slices.Sort(lat)
	r := LoadResult{Requests: len(lat), Errors: errs, Seconds: window.Seconds(), FirstError: firstErr}
	if window > 0 {
		r.RPS = float64(len(lat)) / window.Seconds()
	}
	if len(lat) == 0 {
		return r
	}
	r.P50, r.P90, r.P99, r.P999 = pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9)
	r.Max = us(lat[len(lat)-1])
	for _, p := range plotPercentiles {
		r.Percentiles = append(r.Percentiles, [2]float64{p, pct(lat, p)})
	}
	return r
}

// pct is the nearest-rank percentile p of sorted lat, in µs.
func pct(lat []time.Duration, p float64) float64 {
	i := int(float64(len(lat))*p/100+0.999999) - 1
	i = max(0, min(i, len(lat)-1))
	return us(lat[i])
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// newClient returns a load-generator client for t: keep-alive connections,
// bounded timeouts.
func newClient(t target, conns int, stream bool) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr: t.addr, MaxConns: conns, MaxIdleConnDuration: time.Minute,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		StreamResponseBody: stream, NoDefaultUserAgentHeader: true,
		MaxIdemponentCallAttempts: 1,
	}
}

func newRequest(t target, path string, body []byte) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("http://" + t.addr + path)
	req.Header.SetContentType("application/json")
	if t.key != "" {
		req.Header.Set("Authorization", "Bearer "+t.key)
	}
	req.SetBody(body)
	return req
}

// errTally counts failures and keeps the first one.
type errTally struct {
	n     atomic.Int64
	once  sync.Once
	first string
}

func (e *errTally) add(err error, status int, body []byte) {
	e.n.Add(1)
	e.once.Do(func() {
		if err != nil {
			e.first = err.Error()
			return
		}
		e.first = "status " + strconv.Itoa(status) + ": " + string(body[:min(len(body), 300)])
	})
}

// loadRun is the raw outcome of one load run; runs of several rounds merge.
type loadRun struct {
	lat      []time.Duration
	errs     int
	firstErr string
	window   time.Duration
	cpu      time.Duration // the target process's CPU time over the window
	redisCPU time.Duration // its Redis's, when it has one
}

func (r *loadRun) merge(o loadRun) {
	r.lat = append(r.lat, o.lat...)
	r.errs += o.errs
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
	r.window += o.window
	r.cpu += o.cpu
	r.redisCPU += o.redisCPU
}

func (r *loadRun) result() LoadResult {
	res := summarize(r.lat, r.errs, r.window, r.firstErr)
	if res.Requests > 0 && r.cpu > 0 {
		res.CPUPerCall = us(r.cpu) / float64(res.Requests)
	}
	if res.Requests > 0 && r.redisCPU > 0 {
		res.RedisCPUPerCall = us(r.redisCPU) / float64(res.Requests)
	}
	return res
}

// closedLoop keeps conns requests in flight for warmup+dur and measures the
// calls that completed inside the window after warmup. It also measures the
// target process's CPU time over the window.
func closedLoop(t target, path string, body []byte, conns int, warmup, dur time.Duration) loadRun {
	c := newClient(t, conns, false)
	defer c.CloseIdleConnections()
	var (
		wg    sync.WaitGroup
		errs  errTally
		lats  = make([][]time.Duration, conns)
		start = time.Now()
		from  = start.Add(warmup)
		until = from.Add(dur)
	)
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			req := newRequest(t, path, body)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			lat := make([]time.Duration, 0, 1<<14)
			for {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				err := c.Do(req, resp)
				t1 := time.Now()
				if err != nil || resp.StatusCode() != fasthttp.StatusOK {
					errs.add(err, resp.StatusCode(), resp.Body())
					if err != nil {
						time.Sleep(time.Millisecond)
					}
					continue
				}
				if !t0.Before(from) && !t1.After(until) {
					lat = append(lat, t1.Sub(t0))
				}
			}
			lats[w] = lat
		}(w)
	}
	// CPU of the target over the measured window.
	time.Sleep(time.Until(from))
	cpu0, _ := cpuTime(t.pid)
	rcpu0, _ := cpuTime(t.redisPID)
	time.Sleep(time.Until(until))
	cpu1, _ := cpuTime(t.pid)
	rcpu1, _ := cpuTime(t.redisPID)
	wg.Wait()
	r := loadRun{errs: int(errs.n.Load()), firstErr: errs.first, window: dur}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	if t.pid > 0 {
		r.cpu = cpu1 - cpu0
	}
	if t.redisPID > 0 {
		r.redisCPU = rcpu1 - rcpu0
	}
	return r
}

// openLoop sends rate requests a second on a fixed schedule, whatever the
// answers before them (each from its own goroutine, so a slow answer never
// holds back later sends). Requests scheduled in the warmup are not measured.
// ttfb measures the time to the first byte of the response body (streams).
func openLoop(t target, path string, body []byte, rate int, warmup, dur time.Duration, ttfb bool) loadRun {
	c := newClient(t, 1024, ttfb)
	defer c.CloseIdleConnections()
	interval := time.Second / time.Duration(rate)
	total := int((warmup + dur) / interval)
	skip := int(warmup / interval)
	lat := make([]time.Duration, total)
	var (
		wg   sync.WaitGroup
		errs errTally
	)
	start := time.Now().Add(10 * time.Millisecond)
	for i := 0; i < total; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			lat[i] = -1
			req := newRequest(t, path, body)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			// Latency counts from the actual send: Go's timers wake up to
			// ~1 ms late on an idle machine, and that lateness is the
			// generator's, not the server's. The schedule stays open-loop:
			// a late send never delays the ones after it.
			t0 := time.Now()
			err := c.Do(req, resp)
			if err != nil || resp.StatusCode() != fasthttp.StatusOK {
				if err == nil && ttfb {
					_ = resp.CloseBodyStream()
				}
				errs.add(err, resp.StatusCode(), resp.Body())
				return
			}
			if !ttfb {
				lat[i] = time.Since(t0)
				return
			}
			d, err := firstByte(resp.BodyStream(), t0)
			_ = resp.CloseBodyStream()
			if err != nil {
				errs.add(err, 0, nil)
				return
			}
			lat[i] = d
		}(i)
	}
	wg.Wait()
	r := loadRun{errs: int(errs.n.Load()), firstErr: errs.first, window: dur}
	for _, l := range lat[skip:] {
		if l >= 0 {
			r.lat = append(r.lat, l)
		}
	}
	return r
}

var strData = []byte("data:")

// firstByte reads the first body byte (it must start an SSE data line),
// returns the time since t0, then reads the stream to its end.
func firstByte(r io.Reader, t0 time.Time) (time.Duration, error) {
	var buf [4096]byte
	n, err := r.Read(buf[:1])
	d := time.Since(t0)
	if n == 0 {
		return 0, fmt.Errorf("stream ended before its first byte: %v", err)
	}
	m, _ := io.ReadFull(r, buf[1:len(strData)])
	if !bytes.Equal(buf[:1+m], strData) {
		return 0, fmt.Errorf("stream does not start with an SSE data line: %q", buf[:1+m])
	}
	for {
		if _, err := r.Read(buf[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return d, nil
			}
			return d, err
		}
	}
}

// streamHold is the outcome of holding many slow streams open at once.
type streamHold struct {
	Streams      int     `json:"streams"`
	Failed       int     `json:"failed"`
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	PerStreamKiB float64 `json:"per_stream_kib"`
	FirstError   string  `json:"first_error,omitempty"`
}

// holdStreams opens n slow streams through t (each on its own connection),
// waits until every one delivered its first event, measures t's RSS, then
// closes them all. Connections are opened at most 256 at a time, within the
// listen backlog.
func holdStreams(t target, path string, body []byte, n int) streamHold {
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, t.addr, len(body))
	if t.key != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", t.key)
	}
	req.WriteString("\r\n")
	req.Write(body)
	raw := req.Bytes()

	h := streamHold{Streams: n}
	// Let the process settle (GC, idle conns) before the baseline.
	time.Sleep(500 * time.Millisecond)
	h.RSSBeforeKiB, _ = rssKiB(t.pid)

	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n)
		errs  errTally
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 256)
	)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := openStream(t.addr, raw)
			if err != nil {
				errs.add(err, 0, nil)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	time.Sleep(time.Second)
	h.RSSAfterKiB, _ = rssKiB(t.pid)
	h.Failed, h.FirstError = int(errs.n.Load()), errs.first
	if len(conns) > 0 {
		h.PerStreamKiB = float64(h.RSSAfterKiB-h.RSSBeforeKiB) / float64(len(conns))
	}
	h.Streams = len(conns)
	for _, c := range conns {
		_ = c.Close()
	}
	return h
}

// openStream sends raw on a new connection and waits for the first SSE
// event of a 200 answer.
func openStream(addr string, raw []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(raw); err != nil {
		c.Close()
		return nil, err
	}
	var buf [2048]byte
	got := 0
	for {
		m, err := c.Read(buf[got:])
		got += m
		if bytes.Contains(buf[:got], strData) {
			break
		}
		if err != nil || got == len(buf) {
			c.Close()
			return nil, fmt.Errorf("no first event (%v): %q", err, buf[:min(got, 200)])
		}
	}
	if !bytes.HasPrefix(buf[:got], []byte("HTTP/1.1 200")) {
		c.Close()
		return nil, fmt.Errorf("not 200: %q", buf[:min(got, 200)])
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
