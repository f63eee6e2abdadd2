package mockllm

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// openAIStream summarises a chat or completions SSE body.
type openAIStream struct {
	contentChunks int      // chunks with non-empty delta.content / text
	finish        []string // non-null finish_reasons in order
	usageChunks   []gjson.Result
	done          bool // ended with [DONE]
	text          string
	firstRole     string
}

func summariseOpenAI(t *testing.T, body []byte, chat bool) openAIStream {
	t.Helper()
	var s openAIStream
	events := parseSSE(t, body)
	for i, ev := range events {
		if ev.name != "" {
			t.Errorf("unexpected event name %q", ev.name)
		}
		if ev.data == "[DONE]" {
			if i != len(events)-1 {
				t.Errorf("[DONE] is not last")
			}
			s.done = true
			continue
		}
		c := gjson.Parse(ev.data)
		wantObj := "text_completion"
		if chat {
			wantObj = "chat.completion.chunk"
		}
		if c.Get("object").Str != wantObj {
			t.Errorf("object %q, want %q", c.Get("object").Str, wantObj)
		}
		if u := c.Get("usage"); u.IsObject() {
			if n := len(c.Get("choices").Array()); n != 0 || !c.Get("choices").IsArray() {
				t.Errorf("usage chunk has choices %s", c.Get("choices").Raw)
			}
			s.usageChunks = append(s.usageChunks, u)
			continue
		}
		ch := c.Get("choices.0")
		if i == 0 && chat {
			s.firstRole = ch.Get("delta.role").Str
		}
		txt := ch.Get("text").Str
		if chat {
			txt = ch.Get("delta.content").Str
		}
		if txt != "" {
			s.contentChunks++
			s.text += txt
		}
		if f := ch.Get("finish_reason"); f.Type == gjson.String {
			s.finish = append(s.finish, f.Str)
		}
	}
	return s
}

func TestOpenAIStreams(t *testing.T) {
	_, base := startTest(t, Config{})
	tests := []struct {
		name       string
		path       string
		body       string
		chat       bool
		tokens     int
		finish     string
		usage      bool
		prompt     int
		completion int
	}{
		{name: "chat no stream_options", path: "/chat/completions", chat: true,
			body:   `{"model":"m","stream":true,"messages":[{"role":"user","content":"a b"}]}`,
			tokens: 16, finish: "stop"},
		{name: "chat include_usage false", path: "/chat/completions", chat: true,
			body:   `{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"a b"}]}`,
			tokens: 16, finish: "stop"},
		{name: "chat include_usage", path: "/chat/completions", chat: true,
			body:   `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}`,
			tokens: 16, finish: "stop", usage: true, prompt: 5, completion: 16},
		{name: "chat include_usage max_tokens", path: "/chat/completions", chat: true,
			body:   `{"model":"m","stream":true,"max_tokens":3,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}`,
			tokens: 3, finish: "length", usage: true, prompt: 5, completion: 3},
		{name: "chat include_usage nousage", path: "/chat/completions", chat: true,
			body:   `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a [mock:nousage]"}]}`,
			tokens: 16, finish: "stop"},
		{name: "chat zero tokens", path: "/chat/completions", chat: true,
			body:   `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"[mock:tokens=0]"}]}`,
			tokens: 0, finish: "stop", usage: true, prompt: 4, completion: 0},
		{name: "completions include_usage", path: "/completions",
			body:   `{"model":"m","stream":true,"max_tokens":2,"stream_options":{"include_usage":true},"prompt":"x y z"}`,
			tokens: 2, finish: "length", usage: true, prompt: 3, completion: 2},
		{name: "completions no usage", path: "/completions",
			body:   `{"model":"m","stream":true,"prompt":"x y z"}`,
			tokens: 16, finish: "stop"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, base+tc.path, tc.body)
			mustOK(t, r)
			if ct := r.header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			s := summariseOpenAI(t, r.body, tc.chat)
			if !s.done {
				t.Errorf("stream does not end with [DONE]")
			}
			if tc.chat && s.firstRole != "assistant" {
				t.Errorf("first chunk role %q", s.firstRole)
			}
			if s.contentChunks != tc.tokens {
				t.Errorf("%d content chunks, want %d", s.contentChunks, tc.tokens)
			}
			if want := appendText(nil, tc.tokens); s.text != string(want) {
				t.Errorf("concatenated text %q, want %q", s.text, want)
			}
			if len(s.finish) != 1 || s.finish[0] != tc.finish {
				t.Errorf("finish reasons %v, want [%s]", s.finish, tc.finish)
			}
			if !tc.usage {
				if len(s.usageChunks) != 0 {
					t.Errorf("unexpected usage chunk %v", s.usageChunks)
				}
				if strings.Contains(string(r.body), `"usage":null`) && !strings.Contains(tc.body, "include_usage\":true") {
					t.Errorf(`"usage":null without include_usage`)
				}
				return
			}
			if len(s.usageChunks) != 1 {
				t.Fatalf("%d usage chunks, want 1", len(s.usageChunks))
			}
			checkPaths(t, []byte(s.usageChunks[0].Raw), map[string]any{
				"prompt_tokens":     tc.prompt,
				"completion_tokens": tc.completion,
				"total_tokens":      tc.prompt + tc.completion,
			})
		})
	}
}

func TestAnthropicStream(t *testing.T) {
	_, base := startTest(t, Config{})
	r := post(t, base+"/messages", `{"model":"claude-x","max_tokens":3,"stream":true,"system":"be terse","messages":[{"role":"user","content":"hi there [mock:cached=1]"}]}`)
	mustOK(t, r)
	events := parseSSE(t, r.body)
	want := []string{"message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
	var got []string
	for _, ev := range events {
		got = append(got, ev.name)
		if typ := gjson.Get(ev.data, "type").Str; typ != ev.name {
			t.Errorf("event %q has data type %q", ev.name, typ)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v\nwant   %v", got, want)
	}
	// P = 2 (system) + 3 + 3 = 8; 1 cached.
	checkPaths(t, []byte(events[0].data), map[string]any{
		"message.id":                                "msg_mock_1",
		"message.model":                             "claude-x",
		"message.role":                              "assistant",
		"message.usage.input_tokens":                7,
		"message.usage.output_tokens":               1,
		"message.usage.cache_read_input_tokens":     1,
		"message.usage.cache_creation_input_tokens": 0,
	})
	var text string
	for _, ev := range events[2:5] {
		checkPaths(t, []byte(ev.data), map[string]any{"delta.type": "text_delta", "index": 0})
		text += gjson.Get(ev.data, "delta.text").Str
	}
	if text != "tok1 tok2 tok3" {
		t.Errorf("text %q", text)
	}
	checkPaths(t, []byte(events[6].data), map[string]any{
		"delta.stop_reason":   "max_tokens",
		"usage.output_tokens": 3,
	})

	// nousage drops usage from message_start and message_delta.
	r = post(t, base+"/messages", `{"model":"c","stream":true,"messages":[{"role":"user","content":"[mock:nousage,tokens=1]"}]}`)
	mustOK(t, r)
	events = parseSSE(t, r.body)
	if len(events) != 6 {
		t.Fatalf("%d events, want 6", len(events))
	}
	checkPaths(t, []byte(events[0].data), map[string]any{"message.usage": false})
	checkPaths(t, []byte(events[4].data), map[string]any{"usage": false, "delta.stop_reason": "end_turn"})
}

func TestResponsesStream(t *testing.T) {
	_, base := startTest(t, Config{})
	r := post(t, base+"/responses", `{"model":"r","stream":true,"max_output_tokens":2,"input":[{"role":"user","content":"a b c"}]}`)
	mustOK(t, r)
	events := parseSSE(t, r.body)
	want := []string{
		"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
	}
	var got []string
	for i, ev := range events {
		got = append(got, ev.name)
		if ev.data == "[DONE]" {
			t.Fatalf("[DONE] in a Responses stream")
		}
		checkPaths(t, []byte(ev.data), map[string]any{"type": ev.name, "sequence_number": i})
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v\nwant   %v", got, want)
	}
	checkPaths(t, []byte(events[0].data), map[string]any{"response.status": "in_progress", "response.id": "resp_mock_1", "response.usage": nil})
	if d := gjson.Get(events[4].data, "delta").Str + gjson.Get(events[5].data, "delta").Str; d != "tok1 tok2" {
		t.Errorf("deltas %q", d)
	}
	checkPaths(t, []byte(events[9].data), map[string]any{
		"response.status":                  "completed",
		"response.output.0.content.0.text": "tok1 tok2",
		"response.usage.input_tokens":      6,
		"response.usage.output_tokens":     2,
		"response.usage.total_tokens":      8,
	})
}

func TestCut(t *testing.T) {
	_, base := startTest(t, Config{})
	tests := []struct {
		name   string
		path   string
		body   string
		hdr    map[string]string
		n      int
		delta  func(ev sseEvent) bool // is this a token event?
		absent []string               // substrings that must not appear
	}{
		{name: "chat", path: "/chat/completions", n: 3,
			body:   `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"content":"[mock:cut=3]"}]}`,
			delta:  func(ev sseEvent) bool { return gjson.Get(ev.data, "choices.0.delta.content").Str != "" },
			absent: []string{"[DONE]", `"prompt_tokens"`, `"finish_reason":"stop"`}},
		{name: "chat cut=0 via header", path: "/chat/completions", n: 0, hdr: map[string]string{"X-Mock": "cut=0"},
			body:   `{"stream":true,"messages":[]}`,
			delta:  func(ev sseEvent) bool { return gjson.Get(ev.data, "choices.0.delta.content").Str != "" },
			absent: []string{"[DONE]"}},
		{name: "chat cut beyond length", path: "/chat/completions", n: 2,
			body:   `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"content":"[mock:tokens=2,cut=5]"}]}`,
			delta:  func(ev sseEvent) bool { return gjson.Get(ev.data, "choices.0.delta.content").Str != "" },
			absent: []string{"[DONE]", `"prompt_tokens"`}},
		{name: "completions", path: "/completions", n: 4,
			body:   `{"stream":true,"prompt":"[mock:cut=4]"}`,
			delta:  func(ev sseEvent) bool { return gjson.Get(ev.data, "choices.0.text").Str != "" },
			absent: []string{"[DONE]"}},
		{name: "responses", path: "/responses", n: 2,
			body:   `{"stream":true,"input":"[mock:cut=2]"}`,
			delta:  func(ev sseEvent) bool { return ev.name == "response.output_text.delta" },
			absent: []string{"response.completed", "response.output_text.done"}},
		{name: "messages", path: "/messages", n: 5,
			body:   `{"stream":true,"messages":[{"role":"user","content":"[mock:cut=5]"}]}`,
			delta:  func(ev sseEvent) bool { return ev.name == "content_block_delta" },
			absent: []string{"message_stop", "message_delta", "content_block_stop"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", base+tc.path, tc.body, tc.hdr)
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			if !errors.Is(r.err, io.ErrUnexpectedEOF) {
				t.Errorf("body read error %v, want unexpected EOF (connection cut)", r.err)
			}
			n := 0
			for _, ev := range parseSSE(t, r.body) {
				if tc.delta(ev) {
					n++
				}
			}
			if n != tc.n {
				t.Errorf("%d token events, want %d", n, tc.n)
			}
			for _, s := range tc.absent {
				if strings.Contains(string(r.body), s) {
					t.Errorf("cut stream contains %q", s)
				}
			}
		})
	}

	// Non-streaming: a truncated body, then the connection is dropped.
	for _, path := range []string{"/chat/completions", "/embeddings", "/messages"} {
		r := post(t, base+path, `{"input":"x","messages":[{"content":"[mock:cut=1]"}]}`)
		if r.status != 200 || !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: status %d err %v, want 200 and unexpected EOF", path, r.status, r.err)
		}
		if len(r.body) == 0 || gjson.ValidBytes(r.body) {
			t.Errorf("%s: body %q is not a truncated JSON document", path, r.body)
		}
	}
}
