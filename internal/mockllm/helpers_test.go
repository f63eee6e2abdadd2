package mockllm

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// startTest starts a mock on 127.0.0.1 and closes it at the end of the test.
func startTest(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, base, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, base
}

type reply struct {
	status int
	header http.Header
	body   []byte
	err    error // error while reading the body (e.g. cut connection)
}

// do sends a request with a fresh, non-pooled client and reads the whole body.
func do(t *testing.T, method, url, body string, hdr map[string]string) reply {
	t.Helper()
	return doTimeout(t, method, url, body, hdr, 10*time.Second)
}

func doTimeout(t *testing.T, method, url, body string, hdr map[string]string, timeout time.Duration) reply {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: timeout}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func post(t *testing.T, url, body string) reply {
	t.Helper()
	return do(t, http.MethodPost, url, body, nil)
}

// mustOK fails unless r is a complete 200 response.
func mustOK(t *testing.T, r reply) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request error: %v (body %q)", r.err, r.body)
	}
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", r.status, r.body)
	}
}

// checkPaths asserts gjson paths of a JSON document.
func checkPaths(t *testing.T, doc []byte, want map[string]any) {
	t.Helper()
	if !gjson.ValidBytes(doc) {
		t.Fatalf("invalid JSON: %s", doc)
	}
	for path, w := range want {
		got := gjson.GetBytes(doc, path)
		switch w := w.(type) {
		case int:
			if !got.Exists() || got.Type != gjson.Number || got.Int() != int64(w) {
				t.Errorf("%s = %s, want %d in %s", path, got.Raw, w, doc)
			}
		case string:
			if got.Type != gjson.String || got.Str != w {
				t.Errorf("%s = %s, want %q in %s", path, got.Raw, w, doc)
			}
		case bool:
			if got.Exists() != w {
				t.Errorf("%s exists = %v, want %v in %s", path, got.Exists(), w, doc)
			}
		case nil:
			if got.Type != gjson.Null || !got.Exists() {
				t.Errorf("%s = %s, want null in %s", path, got.Raw, w)
			}
		default:
			t.Fatalf("bad want type %T", w)
		}
	}
}

type sseEvent struct {
	name string // "event:" line, empty if none
	data string
}

// parseSSE splits a (possibly truncated) SSE body into complete events.
func parseSSE(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	for _, block := range bytes.Split(body, []byte("\n\n")) {
		if len(bytes.TrimSpace(block)) == 0 {
			continue
		}
		var ev sseEvent
		for _, line := range strings.Split(string(block), "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		if ev.data != "[DONE]" && !gjson.Valid(ev.data) {
			t.Fatalf("event data is not JSON: %q", ev.data)
		}
		out = append(out, ev)
	}
	return out
}
