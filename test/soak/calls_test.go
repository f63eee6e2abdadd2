package soak

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Endpoints a call may use.
const (
	epChat      = "chat"
	epResponses = "responses"
	epMessages  = "messages"
)

var epPath = map[string]string{epChat: "/v1/chat/completions", epResponses: "/v1/responses", epMessages: "/v1/messages"}

// callSpec is one call a client makes.
type callSpec struct {
	tag        int64 // unique; appears in the prompt as "call-<tag>"
	account    *account
	ep         string
	model      string
	stream     bool
	maxTokens  int    // 0: none (the proxy grants what the account affords)
	directives string // mock directives, without the "[mock:" "]" wrapper
	hangup     bool   // read two events, then close the connection
	base       string // proxy URL
	opened     func() // streams: called once, after the second event
	// promptOverride replaces the generated prompt (raw upstream modes).
	promptOverride string
	extra          string // JSON members appended to the body (",\"n\":8")
}

// callResult is everything the client saw.
type callResult struct {
	spec     *callSpec
	status   int
	code     string // error code of a non-200 answer
	message  string // error message of a non-200 answer
	reqID    string
	err      error // transport error (not a hang-up)
	usage    usage // as reported to the client
	terminal bool  // the end marker ([DONE], response.completed, message_stop) arrived
	cut      bool  // an error event arrived in the stream
	charged  int64 // X-Credits-Charged (header, or trailer for streams); -1 when absent
	credits  int64 // usage.credits of the chat usage chunk; -1 when absent
	hungUp   bool
	respID   string // the provider's response id, as relayed
	events   int
	start    time.Time
	elapsed  time.Duration
}

func (c *callSpec) promptText() string {
	if c.promptOverride != "" {
		return c.promptOverride
	}
	content := fmt.Sprintf("call-%d please answer briefly", c.tag)
	if c.directives != "" {
		content += " [mock:" + c.directives + "]"
	}
	return content
}

func (c *callSpec) body() []byte {
	content := c.promptText()
	m := map[string]any{"model": c.model}
	switch c.ep {
	case epChat:
		m["messages"] = []map[string]string{{"role": "user", "content": content}}
		if c.maxTokens > 0 {
			m["max_tokens"] = c.maxTokens
		}
		if c.stream {
			m["stream_options"] = map[string]bool{"include_usage": true}
		}
	case epResponses:
		m["input"] = content
		if c.maxTokens > 0 {
			m["max_output_tokens"] = c.maxTokens
		}
	case epMessages:
		m["messages"] = []map[string]string{{"role": "user", "content": content}}
		m["max_tokens"] = c.maxTokens
	}
	if c.stream {
		m["stream"] = true
	}
	b, _ := json.Marshal(m)
	if c.extra != "" {
		b = append(b[:len(b)-1], c.extra+"}"...)
	}
	return b
}

// do makes the call and records what the client saw.
func (c *callSpec) do(client *http.Client) *callResult {
	r := &callResult{spec: c, charged: -1, credits: -1, start: time.Now()}
	defer func() { r.elapsed = time.Since(r.start) }()
	req, err := http.NewRequest(http.MethodPost, c.base+epPath[c.ep], bytes.NewReader(c.body()))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Authorization", "Bearer "+c.account.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	r.reqID = resp.Header.Get("X-Request-Id")
	if r.status != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		r.code, r.message = errorCode(b), errorMessage(b)
		return r
	}
	if !c.stream || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			r.err = err
			return r
		}
		r.charged = parseCredits(resp.Header.Get("X-Credits-Charged"))
		var body struct {
			ID    string     `json:"id"`
			Usage *wireUsage `json:"usage"`
		}
		if err := json.Unmarshal(b, &body); err != nil {
			r.err = fmt.Errorf("200 body is not JSON: %w: %.200s", err, b)
			return r
		}
		if body.Usage != nil {
			r.usage = body.Usage.normalise(c.ep)
		}
		r.respID = body.ID
		r.terminal = true
		return r
	}
	r.err = r.readStream(resp, c)
	return r
}

// readStream reads SSE events until the end (or, for a hang-up, two events).
func (r *callResult) readStream(resp *http.Response, c *callSpec) error {
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var name, data string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.charged = parseCredits(resp.Trailer.Get("X-Credits-Charged"))
				return nil
			}
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(line[len("event:"):])
			continue
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimSpace(line[len("data:"):])
			continue
		case line != "":
			continue
		}
		if data == "" && name == "" {
			continue
		}
		r.events++
		r.event(c.ep, name, data)
		name, data = "", ""
		if r.events == 2 && c.opened != nil {
			c.opened()
		}
		if c.hangup && r.events >= 2 {
			r.hungUp = true
			return nil // the deferred Close drops the connection mid-stream
		}
	}
}

func (r *callResult) event(ep, name, data string) {
	if strings.HasPrefix(data, `{"error"`) || name == "error" || name == "response.failed" {
		r.cut = true
		return
	}
	switch ep {
	case epChat:
		if data == "[DONE]" {
			r.terminal = true
			return
		}
		var ch struct {
			ID      string            `json:"id"`
			Choices []json.RawMessage `json:"choices"`
			Usage   *wireUsage        `json:"usage"`
		}
		if json.Unmarshal([]byte(data), &ch) == nil && r.respID == "" {
			r.respID = ch.ID
		}
		if ch.Usage != nil {
			r.usage = ch.Usage.normalise(ep)
			if ch.Usage.Credits != "" {
				r.credits = parseCredits(ch.Usage.Credits)
			}
		}
	case epResponses:
		if name == "response.completed" {
			var ev struct {
				Response struct {
					ID    string     `json:"id"`
					Usage *wireUsage `json:"usage"`
				} `json:"response"`
			}
			if json.Unmarshal([]byte(data), &ev) == nil && ev.Response.Usage != nil {
				r.usage = ev.Response.Usage.normalise(ep)
			}
			r.respID = ev.Response.ID
			r.terminal = true
		}
	case epMessages:
		switch name {
		case "message_start":
			var ev struct {
				Message struct {
					ID    string     `json:"id"`
					Usage *wireUsage `json:"usage"`
				} `json:"message"`
			}
			_ = json.Unmarshal([]byte(data), &ev)
			r.respID = ev.Message.ID
			if ev.Message.Usage != nil {
				u := ev.Message.Usage.normalise(ep)
				r.usage.in, r.usage.cached, r.usage.cw, r.usage.cw1h, r.usage.seen = u.in, u.cached, u.cw, u.cw1h, true
			}
		case "message_delta":
			var ev struct {
				Usage *wireUsage `json:"usage"`
			}
			if json.Unmarshal([]byte(data), &ev) == nil && ev.Usage != nil {
				r.usage.out = ev.Usage.OutputTokens
			}
		case "message_stop":
			r.terminal = true
		}
	}
}

// wireUsage is the union of the three dialects' usage objects.
type wireUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	PromptDetails    *struct {
		Cached int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	InputDetails *struct {
		Cached int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	CacheRead     int64 `json:"cache_read_input_tokens"`
	CacheCreation int64 `json:"cache_creation_input_tokens"`
	CacheSplit    *struct {
		W5m int64 `json:"ephemeral_5m_input_tokens"`
		W1h int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	Credits string `json:"credits"`
}

func (w *wireUsage) normalise(ep string) usage {
	u := usage{seen: true}
	switch ep {
	case epChat:
		if w.PromptDetails != nil {
			u.cached = w.PromptDetails.Cached
		}
		u.in, u.out = w.PromptTokens-u.cached, w.CompletionTokens
	case epResponses:
		if w.InputDetails != nil {
			u.cached = w.InputDetails.Cached
		}
		u.in, u.out = w.InputTokens-u.cached, w.OutputTokens
	case epMessages: // Anthropic reports uncached input only; cache writes beside it
		u.in, u.cached, u.out, u.cw = w.InputTokens, w.CacheRead, w.OutputTokens, w.CacheCreation
		if w.CacheSplit != nil {
			u.cw1h = w.CacheSplit.W1h
			u.cw = max(w.CacheCreation-u.cw1h, w.CacheSplit.W5m)
		}
	}
	return u
}

// parseCredits parses "12.345" (credits, three decimals) into mc; -1 when absent or malformed.
func parseCredits(s string) int64 {
	s = strings.TrimSpace(s)
	if s == "" {
		return -1
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 3 {
		return -1
	}
	w, err1 := strconv.ParseInt(whole, 10, 64)
	f, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	v := w*1000 + f
	if neg {
		v = -v
	}
	return v
}

// errorCode returns error.code of an OpenAI-shaped error body ("" when none).
func errorCode(b []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil {
		return ""
	}
	return e.Error.Code
}

// errorMessage returns error.message of an OpenAI-shaped error body.
func errorMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Error.Message
}

// newClient is an HTTP client for up to conns concurrent calls per proxy.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: 4 * conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second,
			DisableCompression: true,
		},
	}
}

// expectedUsage is the mock's deterministic usage for a call (internal/mockllm
// doc.go): the prompt is "call-N please answer briefly [mock:…]", five words.
// The output is tokens=N capped by the call's max tokens — and by what the
// proxy granted, which only a poor account notices: exact says whether the
// output must equal the figure or may be smaller.
func (c *callSpec) expectedUsage() (u usage, exact bool) {
	words := int64(len(strings.Fields(string(c.promptText()))))
	p := words
	if c.ep != epResponses {
		p += 3
	}
	out, reasoning, cached := int64(16), int64(0), int64(0)
	for _, d := range strings.Split(c.directives, ",") {
		k, v, _ := strings.Cut(d, "=")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "tokens":
			out = n
		case "reasoning":
			reasoning = n
		case "cached":
			cached = min(n, p)
		}
	}
	if c.maxTokens > 0 && int64(c.maxTokens) < out {
		out = int64(c.maxTokens)
	}
	return usage{in: p - cached, cached: cached, out: out + reasoning, seen: true}, c.maxTokens > 0
}
