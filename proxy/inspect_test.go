package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// wideObject is an object member of n distinct keys ("k00":0, …) followed
// by extra members (past smallObject keys: the hash set path).
func wideObject(n int, extra string) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"k%02d":%d`, i, i)
	}
	sb.WriteString(extra)
	sb.WriteByte('}')
	return sb.String()
}

// TestInspectRefusesDuplicateKeys: a key given twice in any object, at any
// depth, is refused with the key's path — before today only the top level
// was checked, and a nested duplicate (stream_options.include_usage) reached
// the provider, which reads the last value.
func TestInspectRefusesDuplicateKeys(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: quoted back cut short
	for _, tc := range []struct {
		name  string
		ep    *endpoint
		body  string
		param string // "" = accepted
	}{
		{"top level", epChat, `{"model":"gpt-4o","model":"gpt-4o-mini","messages":[]}`, "model"},
		{"usage flag", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":[]}`, "stream_options.include_usage"},
		{"usage flag escaped", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":true,"include\u005fusage":false},"messages":[]}`, "stream_options.include_usage"},
		{"in a message", epChat, `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"a","content":"b"}]}`, "messages[1].content"},
		{"in a part", epChat, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://a/x.png","url":"https://b/y.png"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"in nested arrays", epCompletions, `{"model":"m","prompt":"p","x":[[{"a":1}],[{"b":1,"b":2}]]}`, "x[1][0].b"},
		{"wide object", epChat, `{"model":"m","messages":[],"w":` + wideObject(40, `,"k07":1`) + `}`, "w.k07"},
		{"wide root itself", epChat, strings.Replace(wideObject(30, `,"messages":[],"model":"m","k29":1`), "{", `{"model":"m",`, 1), "model"},
		{"empty key", epChat, `{"model":"m","messages":[],"meta":{"":1,"":2}}`, `meta.""`},
		{"long key", epChat, `{"model":"m","messages":[],"meta":{"` + long + `":1,"` + long + `":2}}`, "meta." + strings.Repeat("é", 64) + "…"},
		{"tool schema", epMessages, `{"model":"m","max_tokens":5,"messages":[],"tools":[{"name":"f","input_schema":{"type":"object","properties":{"q":{"type":"string"},"q":{"type":"integer"}}}}]}`, "tools[0].input_schema.properties.q"},

		{"capitals at the root", epChat, `{"model":"m","max_tokens":10,"MAX_TOKENS":100000,"messages":[]}`, "MAX_TOKENS"},
		{"capitals alone", epChat, `{"model":"cheap","Model":"dear","messages":[]}`, "Model"},
		{"kelvin sign", epChat, `{"model":"m","max_to\u212aens":100000,"messages":[]}`, "max_to\u212aens"},
		{"capitals in stream_options", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":false,"Include_Usage":false},"messages":[]}`, "stream_options.Include_Usage"},
		{"capitals deeper are the client's", epChat, `{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"ID":{},"Type":{},"URL":{}}}}}]}`, ""},
		{"background response", epResponses, `{"model":"m","input":"hi","background":true}`, "background"},
		{"siblings may share keys", epChat, `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`, ""},
		{"depths may share keys", epChat, `{"model":"m","messages":[],"metadata":{"model":"x","metadata":{"model":"y"}}}`, ""},
		{"wide and distinct", epChat, `{"model":"m","messages":[],"logit_bias":` + wideObject(300, "") + `}`, ""},
		{"wide root and distinct", epChat, strings.Replace(wideObject(100, `,"messages":[]`), "{", `{"model":"m",`, 1), ""},
		{"escapes that differ", epChat, `{"model":"m","messages":[],"meta":{"a\u0062":1,"a\u0063":2}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inspect(tc.ep, []byte(tc.body))
			if tc.param == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var br *badRequest
			if !errors.As(err, &br) {
				t.Fatalf("accepted (or not a 400): %v", err)
			}
			if br.param != tc.param || !strings.Contains(br.msg, "'"+tc.param+"'") {
				t.Fatalf("param %q, message %q; want the key path %q", br.param, br.msg, tc.param)
			}
		})
	}
}

// TestRewriteSendsOneIncludeUsage: a streamed chat or completions call goes
// upstream with exactly one stream_options.include_usage, and it is true —
// read back with an independent strict parser.
func TestRewriteSendsOneIncludeUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		ep   *endpoint
		body string
	}{
		{"absent", epChat, `{"model":"m","stream":true,"messages":[]}`},
		{"false", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}`},
		{"escaped false", epChat, `{"model":"m","stream":true,"stream_options":{"include\u005fusage":false},"messages":[]}`},
		{"escaped true", epChat, `{"model":"m","stream":true,"stream_options":{"include\u005fusage":true},"messages":[],"max_tokens":5}`},
		{"string", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":"true"},"messages":[]}`},
		{"null options", epChat, `{"model":"m","stream":true,"stream_options":null,"messages":[]}`},
		{"other options", epChat, `{"model":"m","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}`},
		{"completions", epCompletions, `{"model":"m","stream":true,"stream_options":{"include_usage":false},"prompt":"p"}`},
		{"true, given", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[],"max_tokens":5}`},
		// Refused today; before, the provider got both and read false.
		{"true then false", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":[]}`},
		{"false then true", epChat, `{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_usage":true},"messages":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ()
			body := []byte(tc.body)
			if dup, err := jsonDuplicate(body); err != nil || dup != "" {
				if _, err := inspect(tc.ep, body); err == nil {
					t.Fatalf("a body with %q twice was accepted", dup)
				}
				return
			}
			r, err := inspect(tc.ep, body)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := rewrite(nil, &r, tc.ep, body, "m", 5)
			if dup, err := jsonDuplicate(out); err != nil || dup != "" {
				t.Fatalf("upstream body has %q twice (%v): %s", dup, err, out)
			}
			vals, err := membersAt(out, "stream_options.include_usage")
			if err != nil || len(vals) != 1 || vals[0] != true {
				t.Fatalf("upstream include_usage %v (%v), want exactly one true: %s", vals, err, out)
			}
		})
	}
}

// TestRemoteInputIsStructural: input the provider reads beyond the body is
// found in the parsed body — the parsed key counts, whatever its spelling,
// and a user's text that names a marker is only text. Each API shape the
// gateway forwards, with its remote references and provider-side tools.
func TestRemoteInputIsStructural(t *testing.T) {
	chat := func(content string) string {
		return `{"model":"m","messages":[{"role":"user","content":` + content + `}]}`
	}
	resp := func(rest string) string { return `{"model":"m",` + rest + `}` }
	msgs := func(rest string) string { return `{"model":"m","max_tokens":5,` + rest + `}` }
	for _, tc := range []struct {
		name   string
		ep     *endpoint
		body   string
		remote bool
	}{
		// Markers in text are text.
		{"text naming image_url", epChat, chat(`"Explain the \"image_url\" and \"file_id\" fields; also \"input_image\"."`), false},
		{"prompt naming file_id", epCompletions, `{"model":"m","prompt":"{\"file_id\":\"file-1\",\"image_url\":\"x\"}"}`, false},
		{"tool schema property image_url", epChat, `{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"image_url":{"type":"string"},"file_id":{"type":"string"}}}}}]}`, false},
		{"plain chat", epChat, chat(`"hi"`), false},

		// OpenAI chat parts.
		{"chat image by URL", epChat, chat(`[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]`), true},
		{"chat image inline", epChat, chat(`[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]`), true},
		{"chat image, key escaped", epChat, chat(`[{"image\u005furl":{"url":"https://x/y.png"}}]`), true},
		{"chat file by id", epChat, chat(`[{"type":"file","file":{"file_id":"file-abc"}}]`), true},
		{"chat file inline PDF", epChat, chat(`[{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}}]`), true},
		{"chat web search", epChat, `{"model":"m","messages":[],"web_search_options":{}}`, true},
		{"chat web search null", epChat, `{"model":"m","messages":[],"web_search_options":null}`, false},
		{"chat provider tool", epChat, `{"model":"m","messages":[],"tools":[{"type":"web_search"}]}`, true},
		{"chat custom tool", epChat, `{"model":"m","messages":[],"tools":[{"type":"custom","custom":{"name":"x"}}]}`, false},
		{"gemini cached content", epChat, `{"model":"m","messages":[],"extra_body":{"google":{"cached_content":"cachedContents/abc"}}}`, true},

		// Responses.
		{"previous response", epResponses, resp(`"input":"hi","previous_response_id":"resp_1"`), true},
		{"previous response null", epResponses, resp(`"input":"hi","previous_response_id":null`), false},
		{"conversation", epResponses, resp(`"input":"hi","conversation":"conv_1"`), true},
		{"stored prompt", epResponses, resp(`"prompt":{"id":"pmpt_1"}`), true},
		{"input image by URL", epResponses, resp(`"input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/y.png"}]}]`), true},
		{"input image by id", epResponses, resp(`"input":[{"role":"user","content":[{"type":"input_image","file_id":"file-1"}]}]`), true},
		{"input file by URL", epResponses, resp(`"input":[{"role":"user","content":[{"type":"input_file","file_url":"https://x/a.pdf"}]}]`), true},
		{"item reference", epResponses, resp(`"input":[{"type":"item_reference","id":"msg_1"}]`), true},
		{"item reference untyped", epResponses, resp(`"input":[{"id":"msg_1"}]`), true},
		{"stored reasoning", epResponses, resp(`"input":[{"type":"reasoning","id":"rs_1","summary":[]}]`), true},
		{"reasoning carried", epResponses, resp(`"input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"}]`), false},
		{"message with id", epResponses, resp(`"input":[{"role":"assistant","id":"msg_1","content":"x"}]`), false},
		{"function tool", epResponses, resp(`"input":"hi","tools":[{"type":"function","name":"f","parameters":{}}]`), false},
		{"web_search", epResponses, resp(`"input":"hi","tools":[{"type":"web_search"}]`), true},
		{"web_search_preview", epResponses, resp(`"input":"hi","tools":[{"type":"function","name":"f"},{"type":"web_search_preview"}]`), true},
		{"mcp", epResponses, resp(`"input":"hi","tools":[{"type":"mcp","server_label":"x","server_url":"https://x"}]`), true},
		{"computer_use", epResponses, resp(`"input":"hi","tools":[{"type":"computer_use_preview","display_width":1024}]`), true},
		{"screenshot", epResponses, resp(`"input":[{"type":"computer_call_output","call_id":"c","output":{"type":"computer_screenshot","image_url":"data:image/png;base64,AA"}}]`), true},

		// Anthropic Messages.
		{"image by URL", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]`), true},
		{"image inline", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]}]`), true},
		{"document by URL", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]`), true},
		{"document by file", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"document","source":{"type":"file","file_id":"file_1"}}]}]`), true},
		{"document PDF inline", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}}]}]`), true},
		{"document text", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain"}}]}]`), false},
		{"image in tool result", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"url","url":"https://x"}}]}]}]`), true},
		{"web_search tool", epMessages, msgs(`"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]`), true},
		{"web_fetch tool", epMessages, msgs(`"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]`), true},
		{"mcp_servers", epMessages, msgs(`"messages":[],"mcp_servers":[{"type":"url","url":"https://x","name":"x"}]`), true},
		{"mcp_servers empty", epMessages, msgs(`"messages":[],"mcp_servers":[]`), false},
		{"container", epMessages, msgs(`"messages":[],"container":"container_1"`), true},
		{"container upload", epMessages, msgs(`"messages":[{"role":"user","content":[{"type":"container_upload","file_id":"file_1"}]}]`), true},
		{"custom tool", epMessages, msgs(`"messages":[],"tools":[{"name":"f","input_schema":{"type":"object"}}]`), false},
		{"client tools", epMessages, msgs(`"messages":[],"tools":[{"type":"bash_20250124","name":"bash"},{"type":"text_editor_20250728","name":"str_replace_based_edit_tool"},{"type":"custom","name":"g","input_schema":{}}]`), false},

		// Batches carry their text.
		{"completions batch", epCompletions, `{"model":"m","prompt":["a","b"]}`, false},
		{"embeddings batch", epEmbeddings, `{"model":"m","input":["a","b"]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := inspect(tc.ep, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.remote != ""; got != tc.remote {
				t.Fatalf("remote input %v (%q), want %v", got, r.remote, tc.remote)
			}
		})
	}
}

// TestKeyHashCollisions: keys that share a hash are compared as text — in a
// small object and a large one — so a collision never refuses distinct keys
// and never hides a key given twice.
func TestKeyHashCollisions(t *testing.T) {
	object := func(n int, extra string) []byte {
		var sb strings.Builder
		sb.WriteString(`{`)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `"k\u00%02x":{"a":[1,"}"]}`, 0x41+i) // escaped: compared unescaped
		}
		sb.WriteString(extra + `}`)
		return []byte(sb.String())
	}
	same := func(n int) []uint64 { // every key gets one hash
		hs := make([]uint64, n)
		for i := range hs {
			hs[i] = 42
		}
		return hs
	}
	for _, n := range []int{3, smallObject, smallObject + 1, 40} {
		s := getScanner()
		s.b = object(n, "")
		if j := s.repeated(0, same(n)); j >= 0 {
			t.Fatalf("%d distinct keys sharing a hash: key %d reported as given twice", n, j)
		}
		s.b = object(n, `,"kB":0`) // "kB" is "k\u0042", key 1
		if j := s.repeated(0, same(n+1)); j != n {
			t.Fatalf("%d keys sharing a hash: repeat found at %d, want %d", n, j, n)
		}
		putScanner(s)
	}
}

// TestScanIsStrictJSON: the scanner accepts exactly what a strict parser
// (encoding/json) accepts — among others, raw control characters before an
// escape, which fastjson's validator let through — and bounds nesting.
func TestScanIsStrictJSON(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","a":"x` + "\x01" + `\n"}`, // raw control character before an escape
		`{"model":"m","a":"` + "\x00" + `"}`,
		`{"model":"m","a":"\x"}`, `{"model":"m","a":"\u12G4"}`, `{"model":"m","a":"\u12"}`,
		`{"model":"m","a":01}`, `{"model":"m","a":-}`, `{"model":"m","a":1.}`, `{"model":"m","a":1e}`, `{"model":"m","a":.5}`,
		`{"model":"m","a":+1}`, `{"model":"m","a":NaN}`, `{"model":"m","a":Infinity}`, `{"model":"m","a":tru}`, `{"model":"m","a":nul}`,
		`{"model":"m",}`, `{"model":"m","a":[1,]}`, `{"model":"m" "a":1}`, `{"model":"m","a":1}}`, `{"model":"m","a":1} x`, `{"model":"m"`,
		`{"model":"m","a":[}`, `{"model":"m","a":{]}`, `{model:"m"}`, `{"model":"m","a":"\/\b\f\n\r\t\"\\\u00e9\ud83d\ude00"}`,
		`{"model":"m","a":-0.5e+10,"b":[true,false,null,0,-1,1E-2]}`, " \t\r\n{\"model\":\"m\"}\n ",
		`{"model":"m","a":"` + "\x7f" + `é"}`,
	} {
		_, err := inspect(epEmbeddings, []byte(body))
		valid := json.Valid([]byte(body))
		if refused := errors.Is(err, errNotJSON); refused == valid {
			t.Errorf("%q: inspect %v, encoding/json valid %v", body, err, valid)
		}
	}
	deep := func(n int) []byte {
		return []byte(`{"model":"m","a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`)
	}
	if _, err := inspect(epEmbeddings, deep(maxDepth)); err != nil {
		t.Errorf("nesting %d: %v", maxDepth, err)
	}
	if _, err := inspect(epEmbeddings, deep(maxDepth+1)); !errors.Is(err, errTooDeep) {
		t.Errorf("nesting %d: %v", maxDepth+1, err)
	}
}

// TestRewriteKeepsClientBytes: what the gateway does not set reaches the
// provider byte for byte — keys and strings holding escapes of control
// characters included, which re-encoding the parsed body turned into
// invalid JSON ("\x01").
func TestRewriteKeepsClientBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		ep   *endpoint
		body string
	}{
		{"control character in a key", epChat, `{"model":"m","x\u0001":1,"messages":[{"role":"user","content":"a"}]}`},
		{"control characters in text", epChat, `{"model":"m","messages":[{"role":"user","content":"\u001b[31mred\u001b[0m \u0007 \/"}],"stream":true}`},
		{"escaped options", epChat, `{"model":"m","messages":[],"stream":true,"stream_options":{"include_obfuscation":false , "include\u005fusage" : false}}`},
		{"limit given, granted less", epCompletions, `{"prompt":"p","max_tokens":  900 ,"model":"m"}`},
		{"limit null", epChat, `{"model":"m","messages":[],"max_tokens":null}`},
		{"whitespace", epResponses, " {\n \"model\" : \"m\" ,\n \"input\" : \"hi\"\n } \n"},
		{"empty options", epChat, `{"model":"m","messages":[],"stream":true,"stream_options":{ }}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			r, err := inspect(tc.ep, body)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := rewrite(nil, &r, tc.ep, body, "upstream", 7)
			if dup, err := jsonDuplicate(out); err != nil || dup != "" {
				t.Fatalf("upstream body is not strict JSON (%v) or repeats %q: %s", err, dup, out)
			}
			ms, _ := jsonMembers(out)
			for _, m := range ms {
				switch m.path {
				case "model":
					if m.value != "upstream" {
						t.Fatalf("model %v: %s", m.value, out)
					}
				case "max_tokens", "max_output_tokens":
					if m.value != json.Number("7") {
						t.Fatalf("%s %v: %s", m.path, m.value, out)
					}
				}
			}
			// Everything else is the client's text, verbatim.
			keep := func(b []byte) string {
				ms, err := jsonMembers(b)
				if err != nil {
					t.Fatal(err)
				}
				var sb strings.Builder
				for _, m := range ms {
					switch m.path {
					case "model", "max_tokens", "max_output_tokens", "stream_options", "stream_options.include_usage":
						continue
					}
					fmt.Fprintf(&sb, "%s=%#v\n", m.path, m.value)
				}
				return sb.String()
			}
			if a, b := keep(body), keep(out); a != b {
				t.Fatalf("members changed:\n%s\nvs\n%s", a, b)
			}
			for _, s := range []string{`\u001b[31mred`, `x\u0001`, `\/`, `"include_obfuscation":false`} {
				if strings.Contains(tc.body, s) && !strings.Contains(string(out), s) {
					t.Fatalf("%s not forwarded verbatim: %s", s, out)
				}
			}
		})
	}
}

// A processing tier the provider bills above its standard rates is refused
// (the catalog prices the standard tier); the standard and cheaper ones pass.
func TestInspectServiceTier(t *testing.T) {
	tests := []struct {
		ep   *endpoint
		tier string // the JSON value
		ok   bool
	}{
		{epChat, `"auto"`, true},
		{epChat, `"default"`, true},
		{epChat, `"flex"`, true},
		{epChat, `null`, true},
		{epChat, `"priority"`, false},
		{epChat, `"scale"`, false},
		{epChat, `"pri\u006frity"`, false},
		{epChat, `1`, false},
		{epResponses, `"priority"`, false},
		{epResponses, `"flex"`, true},
		{epMessages, `"standard_only"`, true},
		{epMessages, `"priority"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.ep.path+" "+tt.tier, func(t *testing.T) {
			body := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"input":"hi","service_tier":` + tt.tier + `}`
			_, err := inspect(tt.ep, []byte(body))
			var br *badRequest
			switch {
			case tt.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tt.ok && (!errors.As(err, &br) || br.param != "service_tier"):
				t.Fatalf("err = %v, want a 400 naming service_tier", err)
			}
		})
	}
}

// Provider-side tools billed per use beside tokens, at fees the catalog does
// not price, are refused (they would be free); web search (priced) and
// tools billed in tokens pass.
func TestInspectRefusesUnpricedToolFees(t *testing.T) {
	tests := []struct {
		name string
		ep   *endpoint
		body string
		ok   bool
	}{
		{"code_interpreter", epResponses, `{"model":"m","input":"hi","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}`, false},
		{"file_search", epResponses, `{"model":"m","input":"hi","tools":[{"type":"function","name":"f"},{"type":"file_search","vector_store_ids":["vs_1"]}]}`, false},
		{"image_generation", epResponses, `{"model":"m","input":"hi","tools":[{"type":"image_generation"}]}`, false},
		{"chat file_search", epChat, `{"model":"m","messages":[],"tools":[{"type":"file_search"}]}`, false},
		{"anthropic code execution", epMessages, `{"model":"m","max_tokens":5,"messages":[],"tools":[{"type":"code_execution_20250825","name":"code_execution"}]}`, false},
		{"web_search", epResponses, `{"model":"m","input":"hi","tools":[{"type":"web_search"}]}`, true},
		{"mcp", epResponses, `{"model":"m","input":"hi","tools":[{"type":"mcp","server_label":"x","server_url":"https://x"}]}`, true},
		{"anthropic web fetch", epMessages, `{"model":"m","max_tokens":5,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`, true},
		// An item that names such a type elsewhere than in tools is not a tool.
		{"a call item passed back", epResponses, `{"model":"m","input":[{"type":"code_interpreter_call","id":"ci_1"}],"metadata":{"type":"file_search"}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := inspect(tt.ep, []byte(tt.body))
			var br *badRequest
			switch {
			case tt.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tt.ok && (!errors.As(err, &br) || br.param != "tools"):
				t.Fatalf("err = %v, want a 400 naming tools", err)
			}
		})
	}
}
