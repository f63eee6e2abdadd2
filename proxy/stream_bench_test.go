package proxy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"
)

// BenchmarkStreamMemory holds b.N slow streams open at once through the
// proxy (client, proxy and mock in process, on in-memory connections) and
// reports the heap and goroutine stacks that the proxy and the mock hold per
// stream. The mock's share is measured alone first and subtracted. Run with
// -benchtime 2000x; STREAM_HEAP_PROFILE=file writes a heap profile while the
// proxied streams are open (go tool pprof -sample_index=inuse_space).
func BenchmarkStreamMemory(b *testing.B) {
	e := newBenchEnv(b)
	const body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"[mock:rate=1,tokens=30] hold"}],"stream":true,"max_tokens":32}`
	raw := func(dial func() (net.Conn, error)) func() (net.Conn, error) {
		req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			benchKey, len(body), body)
		return func() (net.Conn, error) {
			c, err := dial()
			if err != nil {
				return nil, err
			}
			if _, err := c.Write([]byte(req)); err != nil {
				return nil, err
			}
			var buf [4096]byte
			got := 0
			for !bytes.Contains(buf[:got], []byte("data:")) {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := c.Read(buf[got:])
				if err != nil {
					return nil, err
				}
				got += n
			}
			return c, nil
		}
	}
	hold := func(open func() (net.Conn, error), n int) (heap, stack float64, closeAll func()) {
		before := memNow()
		conns := make([]net.Conn, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := open()
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		after := memNow()
		return float64(after.heap-before.heap) / float64(n), float64(after.stack-before.stack) / float64(n), func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}
	}
	n := b.N
	mh, ms, closeMock := hold(raw(e.mockLn.Dial), n)
	ph, ps, closeProxy := hold(raw(e.ln.Dial), n)
	if f := os.Getenv("STREAM_HEAP_PROFILE"); f != "" && n > 100 {
		w, _ := os.Create(f)
		_ = pprof.Lookup("heap").WriteTo(w, 0)
		w.Close()
	}
	closeProxy()
	closeMock()
	// The proxied streams hold a mock stream each too: subtract it. The
	// in-memory client side (a pipe pair per connection) is counted in both.
	b.ReportMetric((ph-mh)/1024, "proxy-heap-KiB/stream")
	b.ReportMetric((ps-ms)/1024, "proxy-stack-KiB/stream")
	b.ReportMetric(mh/1024, "mock-heap-KiB/stream")
}

type memSample struct{ heap, stack uint64 }

func memNow() memSample {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{heap: m.HeapInuse, stack: m.StackInuse}
}
