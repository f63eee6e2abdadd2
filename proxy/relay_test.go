package proxy

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// Edge cases of the stream relay, each with the outcome it must have: how
// the call ends (settled, or failed and free), why, what is estimated, and
// what the client receives.
func TestRelayEdgeCases(t *testing.T) {
	s, model, m := fuzzServer(t)
	cases := []struct {
		name      string
		ep        *endpoint
		wantUsage bool
		data      string
		endErr    error

		failed    bool
		reason    string
		estimated bool
		input     int64 // -1: don't check
		output    int64 // -1: don't check
		inOut     []string
		notInOut  []string
	}{
		{name: "nothing after [DONE] is relayed", ep: epChat, data: "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n",
			estimated: true, input: -1, output: 1, inOut: []string{"[DONE]"}, notInOut: []string{"late"}},
		{name: "error object with spaces", ep: epChat, data: "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: { \"error\" : {\"message\":\"boom\"}}\n\ndata: [DONE]\n\n",
			failed: true, reason: "upstream_error_event", input: 0, output: 1, inOut: []string{"boom", "upstream_stream_cut"}, notInOut: []string{"[DONE]"}},
		{name: "error object after choices", ep: epChat, data: "data: {\"id\":\"x\",\"choices\":[{\"delta\":{},\"finish_reason\":\"error\"}],\"error\":{\"message\":\"provider down\"}}\n\ndata: [DONE]\n\n",
			failed: true, reason: "upstream_error_event", input: 0, output: 0},
		{name: "chat error event", ep: epChat, data: "event: error\ndata: {\"message\":\"bad\"}\n\n",
			failed: true, reason: "upstream_error_event", input: 0, output: 0},
		{name: "null error is no error", ep: epChat, data: "data: {\"choices\":[],\"error\":null,\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
			input: 4, output: 2},
		{name: "CRLF line ends", ep: epChat, data: "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\r\n\r\ndata: [DONE]\r\n\r\n",
			input: 7, output: 3},
		{name: "last event without its blank line", ep: epChat, data: "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]",
			input: 7, output: 3},
		{name: "no [DONE]: cut", ep: epChat, data: "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n",
			failed: true, reason: "upstream_stream_cut", input: 7, output: 3},
		{name: "connection reset mid-event", ep: epChat, data: "data: {\"choices\":[{\"delta\":{\"content\":\"hello wor", endErr: io.ErrUnexpectedEOF,
			failed: true, reason: "upstream_stream_cut", input: 0, output: -1},
		// An event past the bound is dropped, not relayed, but the call is
		// charged: by the usage at the event's end, or an estimate.
		{name: "line past the bound", ep: epChat, data: "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 2<<10) + "\"}}]}\n\ndata: [DONE]\n\n",
			reason: "event_too_large", estimated: true, input: -1, output: -1, inOut: []string{"event_too_large", "[DONE]"}, notInOut: []string{"xxxx"}},
		{name: "event past the bound", ep: epChat, data: strings.Repeat("data: {}\n", 200) + "\ndata: [DONE]\n\n",
			reason: "event_too_large", estimated: true, input: -1, output: 0, inOut: []string{"event_too_large", "[DONE]"}},
		{name: "line past the bound, usage at its end", ep: epChat, data: "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 2<<10) + "\"}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
			reason: "event_too_large", input: 7, output: 3, inOut: []string{"event_too_large", "[DONE]"}, notInOut: []string{"xxxx"}},
		{name: "usage-like text in the oversize line is not usage", ep: epChat, data: "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 2<<10) + ` \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":99999}\"}}]}` + "\n\ndata: [DONE]\n\n",
			reason: "event_too_large", estimated: true, input: -1, output: -1},
		{name: "responses completed past the bound, usage at its end: no cut", ep: epResponses, data: "event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"result\":\"" + strings.Repeat("A", 2<<10) + "\"}],\"usage\":{\"input_tokens\":3,\"output_tokens\":16}}}\n\n",
			reason: "event_too_large", input: 3, output: 16, inOut: []string{"event_too_large"}, notInOut: []string{"AAAA"}},
		{name: "anthropic message_delta past the bound", ep: epMessages,
			data:   "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_sequence\":\"" + strings.Repeat("y", 2<<10) + "\"},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			reason: "event_too_large", input: 9, output: 5, inOut: []string{"event_too_large", "message_stop"}, notInOut: []string{"yyyy"}},
		{name: "responses without event lines", ep: epResponses, data: "data: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
			input: 3, output: 1, inOut: []string{`"credits":"0.015"`, `"credits_balance":"999.985"`}},
		{name: "responses incomplete is charged", ep: epResponses, data: "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":16}}}\n\n",
			input: 3, output: 16},
		{name: "responses only .delta events count as text", ep: epResponses, data: "event: response.output_text.delta\ndata: {\"delta\":\"hello world\"}\n\nevent: response.output_text.done\ndata: {\"text\":\"hello world\"}\n\nevent: response.completed\ndata: {\"response\":{}}\n\n",
			estimated: true, input: -1, output: 2},
		{name: "anthropic without event lines", ep: epMessages, data: "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\ndata: {\"type\":\"message_stop\"}\n\n",
			input: 9, output: 5, inOut: []string{`"credits":"`}},
		{name: "anthropic without a final count: output estimated, input reported", ep: epMessages,
			data:      "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hello world\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			estimated: true, input: 9, output: 2},
		{name: "anthropic cut after message_delta: the held event still reaches the client", ep: epMessages,
			data:   "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n",
			failed: true, reason: "upstream_stream_cut", input: 9, output: 5, inOut: []string{"message_delta", "upstream_stream_cut"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			endErr := tc.endErr
			if endErr == nil {
				endErr = io.EOF
			}
			out := relay(t, s, model, m, tc.ep, tc.wantUsage, []byte(tc.data), 5, 64, endErr)
			if len(m.settles)+len(m.releases) != 1 {
				t.Fatalf("%d settles, %d releases", len(m.settles), len(m.releases))
			}
			if failed := len(m.releases) == 1; failed != tc.failed {
				t.Fatalf("failed = %v, want %v; client got %q", failed, tc.failed, out)
			}
			rec := m.releases
			if !tc.failed {
				rec = nil
				rec = append(rec, m.settles[0].Record)
			}
			r := rec[0]
			if r.Reason != tc.reason || r.Estimated != tc.estimated && !tc.failed {
				t.Fatalf("record %+v: want reason %q estimated %v", r, tc.reason, tc.estimated)
			}
			if tc.input >= 0 && r.Input+r.CachedInput != tc.input {
				t.Fatalf("input %d, want %d", r.Input+r.CachedInput, tc.input)
			}
			if tc.output >= 0 && r.Output != tc.output {
				t.Fatalf("output %d, want %d", r.Output, tc.output)
			}
			for _, w := range tc.inOut {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("client did not get %q: %q", w, out)
				}
			}
			for _, w := range tc.notInOut {
				if bytes.Contains(out, []byte(w)) {
					t.Errorf("client got %q: %q", w, out)
				}
			}
			// Every event the client gets is well-formed: JSON data or [DONE].
			for _, ev := range bytes.Split(bytes.TrimSpace(out), []byte("\n\n")) {
				for _, line := range bytes.Split(ev, []byte("\n")) {
					line = bytes.TrimSuffix(line, []byte("\r"))
					if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok && !bytes.Equal(d, strDone) && !tc.failed {
						if err := fastjson.ValidateBytes(d); err != nil && !bytes.Contains(d, []byte("x\"}}]}")) {
							t.Errorf("relayed invalid JSON %q: %v", d, err)
						}
					}
				}
			}
		})
	}
}

// Web searches the provider ran before a stream ended without its usage are
// charged: the estimate counts the searches seen starting in the stream
// (Anthropic's server_tool_use web_search blocks, Responses' web_search_call
// items); a final count from the provider stands as it is.
func TestRelayEstimateCountsSearches(t *testing.T) {
	s, model, m := fuzzServer(t)
	const (
		start   = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n"
		search  = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_1\",\"name\":\"web_search\",\"input\":{}}}\n\n"
		fetch   = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_2\",\"name\":\"web_fetch\",\"input\":{}}}\n\n"
		text    = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
		mention = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\",\"text\":\"a \\\"server_tool_use\\\" web_search\"}}\n\n"
		stop    = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
		final   = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5,\"server_tool_use\":{\"web_search_requests\":1}}}\n\n"

		respSearch = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"item\":{\"type\":\"web_search_call\",\"id\":\"ws_1\",\"status\":\"in_progress\"}}\n\n"
		respMsg    = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"item\":{\"type\":\"message\",\"id\":\"msg_1\",\"content\":[]}}\n\n"
		respDone   = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n"
	)
	cases := []struct {
		name      string
		ep        *endpoint
		data      string
		estimated bool
		searches  int64
	}{
		{"anthropic without a final count", epMessages, start + search + fetch + search + text + mention + stop, true, 2},
		{"anthropic final count stands", epMessages, start + search + search + final + stop, false, 1},
		{"anthropic no search", epMessages, start + fetch + text + mention + stop, true, 0},
		{"responses without usage", epResponses, respSearch + respMsg + respSearch + respSearch + respDone, true, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay(t, s, model, m, tc.ep, false, []byte(tc.data), 7, 64, io.EOF)
			if len(m.settles) != 1 {
				t.Fatalf("%d settles, %d releases", len(m.settles), len(m.releases))
			}
			r := m.settles[0].Record
			if r.Estimated != tc.estimated || r.WebSearch != tc.searches {
				t.Fatalf("record estimated %v, %d searches; want %v, %d", r.Estimated, r.WebSearch, tc.estimated, tc.searches)
			}
		})
	}
}
