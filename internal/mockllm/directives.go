package mockllm

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
)

const (
	directivePrefix    = "[mock:"
	maxDirectiveLen    = 512     // bytes between "[mock:" and "]"
	maxDirectiveBlocks = 16      // "[mock:...]" occurrences looked at in a body
	maxDirectiveTokens = 1 << 20 // bound for tokens/cached/reasoning/cut
	maxDirectiveWait   = 10 * time.Minute
)

// directives are per-request overrides; see the package documentation.
type directives struct {
	status    int // 0 = none
	hang      bool
	cut       int // -1 = none
	noUsage   bool
	tokens    int // -1 = none
	cached    int
	reasoning int
	delay     time.Duration
	ttft      time.Duration // -1 = none
	rate      int           // -1 = none
}

var noDirectives = directives{cut: -1, tokens: -1, ttft: -1, rate: -1}

var prefixBytes = []byte(directivePrefix)

// parse applies the directives found in body, then those of the X-Mock
// header value. It only does work when "[mock:" occurs or the header is set.
func (d *directives) parse(header, body []byte) error {
	for i := 0; i < maxDirectiveBlocks; i++ {
		j := bytes.Index(body, prefixBytes)
		if j < 0 {
			break
		}
		rest := body[j+len(directivePrefix):]
		window := rest
		if len(window) > maxDirectiveLen+1 {
			window = window[:maxDirectiveLen+1]
		}
		end := bytes.IndexByte(window, ']')
		if end < 0 {
			return fmt.Errorf("mock: unterminated %q directive (no ']' within %d bytes)", directivePrefix, maxDirectiveLen)
		}
		if err := d.apply(rest[:end]); err != nil {
			return err
		}
		body = rest[end+1:]
	}
	if h := bytes.TrimSpace(header); len(h) > 0 {
		if bytes.HasPrefix(h, prefixBytes) && h[len(h)-1] == ']' {
			h = h[len(directivePrefix) : len(h)-1]
		}
		if len(h) > maxDirectiveLen {
			return fmt.Errorf("mock: X-Mock header longer than %d bytes", maxDirectiveLen)
		}
		if err := d.apply(h); err != nil {
			return fmt.Errorf("X-Mock header: %w", err)
		}
	}
	return nil
}

// apply parses one comma separated list such as "status=429,nousage".
func (d *directives) apply(list []byte) error {
	for len(list) > 0 {
		item := list
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			list = nil
		}
		item = bytes.TrimSpace(item)
		if len(item) == 0 {
			continue
		}
		key, val, hasVal := bytes.Cut(item, []byte{'='})
		key, val = bytes.TrimSpace(key), bytes.TrimSpace(val)
		if err := d.set(string(key), val, hasVal); err != nil {
			return err
		}
	}
	return nil
}

func (d *directives) set(key string, val []byte, hasVal bool) error {
	switch key {
	case "hang", "nousage":
		if hasVal {
			return fmt.Errorf("mock: directive %q takes no value", key)
		}
		if key == "hang" {
			d.hang = true
		} else {
			d.noUsage = true
		}
		return nil
	case "status", "cut", "tokens", "cached", "reasoning", "rate":
		n, err := strconv.Atoi(string(val))
		if err != nil || n < 0 || n > maxDirectiveTokens {
			return fmt.Errorf("mock: directive %s=%q: want an integer in [0, %d]", key, val, maxDirectiveTokens)
		}
		switch key {
		case "status":
			if n < 400 || n > 599 {
				return fmt.Errorf("mock: directive status=%d: want 400..599", n)
			}
			d.status = n
		case "cut":
			d.cut = n
		case "tokens":
			d.tokens = n
		case "cached":
			d.cached = n
		case "reasoning":
			d.reasoning = n
		case "rate":
			d.rate = n
		}
		return nil
	case "delay", "ttft":
		v, err := time.ParseDuration(string(val))
		if err != nil || v < 0 || v > maxDirectiveWait {
			return fmt.Errorf("mock: directive %s=%q: want a Go duration in [0, %s]", key, val, maxDirectiveWait)
		}
		if key == "delay" {
			d.delay = v
		} else {
			d.ttft = v
		}
		return nil
	}
	return fmt.Errorf("mock: unknown directive %q (known: status, hang, cut, nousage, tokens, cached, reasoning, delay, ttft, rate)", key)
}

// usage is the deterministic accounting of one generation.
type usage struct {
	prompt     int  // P
	completion int  // C: visible output tokens
	reasoning  int  // R
	cached     int  // X, <= P
	limited    bool // C was capped by the request's max tokens
	noUsage    bool
}

func (u *usage) completionTotal() int { return u.completion + u.reasoning }
func (u *usage) total() int           { return u.prompt + u.completion + u.reasoning }

func (s *Server) usage(req *request, d *directives) usage {
	u := usage{prompt: req.prompt, reasoning: d.reasoning, noUsage: d.noUsage}
	u.completion = s.cfg.OutputTokens
	if d.tokens >= 0 {
		u.completion = d.tokens
	}
	if req.maxTokens > 0 && req.maxTokens < u.completion {
		u.completion = req.maxTokens
		u.limited = true
	}
	u.cached = min(d.cached, u.prompt)
	return u
}
