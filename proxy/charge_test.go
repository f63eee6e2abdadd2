package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// rates of the test catalog's tiers: mc per token (input, cached, output).
var tierRates = map[string][3]int64{"core": {1, 1, 2}, "pro": {3, 3, 6}, "ultra": {8, 8, 16}}

// expectedCost prices a provider usage object independently of the proxy.
func expectedCost(t *testing.T, tier string, u map[string]any) int64 {
	t.Helper()
	num := func(m map[string]any, path ...string) int64 {
		var cur any = m
		for _, p := range path {
			mm, ok := cur.(map[string]any)
			if !ok {
				return 0
			}
			cur = mm[p]
		}
		f, _ := cur.(float64)
		return int64(f)
	}
	r := tierRates[tier]
	var in, cached, out int64
	if _, ok := u["input_tokens"]; ok { // Responses API
		in, cached, out = num(u, "input_tokens"), num(u, "input_tokens_details", "cached_tokens"), num(u, "output_tokens")
	} else {
		in, cached, out = num(u, "prompt_tokens"), num(u, "prompt_tokens_details", "cached_tokens"), num(u, "completion_tokens")
	}
	if in == 0 {
		t.Fatalf("usage without input tokens: %v", u)
	}
	return (in-cached)*r[0] + cached*r[1] + out*r[2]
}

// sseEvents splits an SSE body into (event name, data) pairs.
func sseEvents(t *testing.T, body []byte) [][2]string {
	t.Helper()
	var evs [][2]string
	var name, data string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" || name != "" {
				evs = append(evs, [2]string{name, data})
			}
			name, data = "", ""
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(line[6:])
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimSpace(line[5:])
		}
	}
	if data != "" || name != "" {
		evs = append(evs, [2]string{name, data})
	}
	return evs
}

func TestChargeEqualsUsageTimesRate(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 1000)
	cases := []struct {
		name, path, model, tier, body string
	}{
		{"chat core", "/v1/chat/completions", "gpt-4o-mini", "core", `{"model":"gpt-4o-mini","messages":` + msg("say something nice please") + `}`},
		{"chat alias", "/v1/chat/completions", "mini", "core", `{"model":"mini","messages":` + msg("hello") + `,"max_tokens":5}`},
		{"chat pro cached+reasoning", "/v1/chat/completions", "gpt-4.1-mini", "pro", `{"model":"gpt-4.1-mini","messages":` + msg("[mock:cached=3,reasoning=4] think hard about it") + `}`},
		{"chat ultra", "/v1/chat/completions", "gpt-4.1", "ultra", `{"model":"gpt-4.1","messages":` + msg("one two three four") + `,"max_completion_tokens":9}`},
		{"completions", "/v1/completions", "gpt-4o-mini", "core", `{"model":"gpt-4o-mini","prompt":"once upon a time","max_tokens":7}`},
		{"embeddings", "/v1/embeddings", "text-embedding-3-small", "core", `{"model":"text-embedding-3-small","input":["alpha beta","gamma delta epsilon"]}`},
		{"responses", "/v1/responses", "gpt-4.1-mini", "pro", `{"model":"gpt-4.1-mini","input":"write a haiku about tolls","max_output_tokens":12}`},
		{"responses cached", "/v1/responses", "gpt-4o-mini", "core", `{"model":"gpt-4o-mini","input":"[mock:cached=2] abc def ghi"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.balance("acme").Balance
			r := e.post(tc.path, key, tc.body)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			u, ok := r.json(t)["usage"].(map[string]any)
			if !ok {
				t.Fatalf("no usage in %s", r.body)
			}
			want := expectedCost(t, tc.tier, u)
			if got := credits(t, r.header.Get("X-Credits-Charged")); got != want {
				t.Fatalf("X-Credits-Charged = %d mc, want %d mc (usage %v)", got, want, u)
			}
			after := e.balance("acme").Balance
			if before-after != want {
				t.Fatalf("balance moved by %d mc, want %d", before-after, want)
			}
			if got := credits(t, r.header.Get("X-Credits-Balance")); got != after {
				t.Fatalf("X-Credits-Balance = %d, store says %d", got, after)
			}
			if r.header.Get("X-Credits-Tier") != tc.tier || r.header.Get("X-Request-Id") == "" {
				t.Fatalf("headers: tier %q request id %q", r.header.Get("X-Credits-Tier"), r.header.Get("X-Request-Id"))
			}
		})
	}
	e.assertLedger("acme")
}

func TestStreamChargeEqualsUsageTimesRate(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 1000)
	cases := []struct {
		name, path, tier, body string
		usageChunk             bool // the client asked for the usage chunk
	}{
		{"chat with usage chunk", "/v1/chat/completions", "core", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":` + msg("stream me a story") + `}`, true},
		{"chat without usage chunk", "/v1/chat/completions", "pro", `{"model":"gpt-4.1-mini","stream":true,"messages":` + msg("[mock:cached=2] stream again") + `,"max_tokens":10}`, false},
		{"completions with usage chunk", "/v1/completions", "ultra", `{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"prompt":"count to ten","max_tokens":6}`, true},
		{"responses", "/v1/responses", "core", `{"model":"gpt-4o-mini","stream":true,"input":"tell me more"}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The same body unstreamed tells what the mock will report.
			plain := strings.Replace(tc.body, `"stream":true`, `"stream":false`, 1)
			ref := e.post(tc.path, key, plain)
			if ref.status != 200 {
				t.Fatalf("reference call: %d %s", ref.status, ref.body)
			}
			want := expectedCost(t, tc.tier, ref.json(t)["usage"].(map[string]any))

			before := e.balance("acme").Balance
			r := e.post(tc.path, key, tc.body)
			if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			if got := credits(t, r.trailer.Get("X-Credits-Charged")); got != want {
				t.Fatalf("trailer X-Credits-Charged = %d mc, want %d (trailers %v)", got, want, r.trailer)
			}
			after := e.balance("acme").Balance
			if before-after != want {
				t.Fatalf("balance moved by %d, want %d", before-after, want)
			}
			if got := credits(t, r.trailer.Get("X-Credits-Balance-After")); got != after {
				t.Fatalf("trailer balance %d, store %d", got, after)
			}
			evs := sseEvents(t, r.body)
			sawUsage, sawDone := false, false
			for _, ev := range evs {
				if ev[1] == "[DONE]" {
					sawDone = true
					continue
				}
				var chunk map[string]any
				if err := json.Unmarshal([]byte(ev[1]), &chunk); err != nil {
					t.Fatalf("event %q is not JSON: %v", ev[1], err)
				}
				if u, ok := chunk["usage"].(map[string]any); ok && tc.path != "/v1/responses" {
					sawUsage = true
					if got := credits(t, u["credits"].(string)); got != want {
						t.Fatalf("usage.credits = %d, want %d", got, want)
					}
				}
			}
			if tc.path != "/v1/responses" {
				if sawUsage != tc.usageChunk {
					t.Fatalf("usage chunk delivered = %v, client asked = %v", sawUsage, tc.usageChunk)
				}
				if !sawDone {
					t.Fatal("no [DONE]")
				}
			}
		})
	}
	e.assertLedger("acme")
}
