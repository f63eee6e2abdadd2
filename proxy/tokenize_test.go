package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fastjson"

	"github.com/tollgate/tollgate/pricing"
)

// The token counts OpenAI's cookbook shows for tiktoken: the vocabularies
// are the real ones.
func TestCountTokensMatchesTiktoken(t *testing.T) {
	cases := []struct {
		text          string
		o200k, cl100k int64
	}{
		{"tiktoken is great!", 6, 6},
		{"antidisestablishmentarianism", 6, 6},
		{"hello world", 2, 2},
		{"", 0, 0},
	}
	for _, tc := range cases {
		if got := countTokens(encO200K, []byte(tc.text)); got != tc.o200k {
			t.Errorf("o200k %q = %d, want %d", tc.text, got, tc.o200k)
		}
		if got := countTokens(encCL100K, []byte(tc.text)); got != tc.cl100k {
			t.Errorf("cl100k %q = %d, want %d", tc.text, got, tc.cl100k)
		}
	}
}

func TestCountTokensBoundedAndExtrapolated(t *testing.T) {
	sentence := "The gateway counts every token it relays, and charges for exactly those. "
	long := []byte(strings.Repeat(sentence, 4*maxExactBytes/len(sentence)))
	got := countTokens(encO200K, long)
	exact, err := codecs[encO200K].get().Count(string(long))
	if err != nil {
		t.Fatal(err)
	}
	want := int64(exact)
	if got < want*99/100 || got > want*101/100 {
		t.Fatalf("extrapolated %d tokens for %d bytes, want about %d", got, len(long), want)
	}
	// Dense text behind a sparse head (32 KiB of spaces, then CJK) is
	// counted as dense: scaling the head's density counted it at ~1 %.
	cjk := []byte(strings.Repeat(" ", maxExactBytes) + strings.Repeat("计量网关按实际用量收费，每个令牌都被计算。", 8000))
	exact, err = codecs[encCL100K].get().Count(string(cjk))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // random windows: any draw must land near
		if got := countTokens(encCL100K, cjk); got < int64(exact)*90/100 || got > int64(exact)*110/100 {
			t.Fatalf("sparse head, dense rest: %d tokens, exact %d", got, exact)
		}
	}
	// Dense text at the edges of each sampled part and spaces between (8
	// parts of 8 KiB): a window kept inside its part saw the edges less
	// than the middle and counted this at about a quarter. On average over
	// many draws the count is the exact one.
	var edges strings.Builder
	dense := strings.Repeat("计量网关按实际用量收费。", 29)[:1020] // 1 KiB, whole runes (3 bytes each)
	for range 8 {
		edges.WriteString(dense + strings.Repeat(" ", 8<<10-2*len(dense)) + dense)
	}
	exact, err = codecs[encCL100K].get().Count(edges.String())
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	const draws = 200
	for range draws {
		sum += countTokens(encCL100K, []byte(edges.String()))
	}
	if mean := sum / draws; mean < int64(exact)*90/100 || mean > int64(exact)*110/100 {
		t.Fatalf("dense part edges: mean %d tokens over %d draws, exact %d", mean, draws, exact)
	}
	// Multi-byte text cut at the exact bound is cut between runes.
	emoji := []byte(strings.Repeat("é🙂", maxExactBytes/3))
	if got := countTokens(encCL100K, emoji); got <= 0 || got > int64(len(emoji)) {
		t.Fatalf("%d tokens for %d bytes", got, len(emoji))
	}
	// Invalid UTF-8 is counted, not refused.
	if got := countTokens(encCL100K, []byte{0xff, 0xfe, 'a'}); got <= 0 {
		t.Fatalf("invalid UTF-8 counted %d", got)
	}
}

func TestEncodingFor(t *testing.T) {
	m := func(id string, deps ...string) *pricing.Model {
		pm := &pricing.Model{ID: id}
		for _, d := range deps {
			pm.Deployments = append(pm.Deployments, pricing.Deployment{Provider: "p", Model: d})
		}
		return pm
	}
	cases := []struct {
		m    *pricing.Model
		want encoding
	}{
		{m("gpt-4o"), encO200K},
		{m("mini", "gpt-4o-mini-2024-07-18"), encO200K},
		{m("o3-mini"), encO200K},
		{m("gpt-5"), encO200K},
		{m("fast", "openai/gpt-4.1-nano"), encO200K},
		{m("gpt-4"), encCL100K},
		{m("gpt-3.5-turbo"), encCL100K},
		{m("claude-sonnet", "claude-sonnet-4-5"), encCL100K},
		{m("gemini-2.5-flash"), encCL100K},
		{m("deepseek-chat"), encCL100K},
		{nil, encCL100K},
	}
	for _, tc := range cases {
		if got := encodingFor(tc.m); got != tc.want {
			name := "<nil>"
			if tc.m != nil {
				name = tc.m.ID
			}
			t.Errorf("%s: encoding %d, want %d", name, got, tc.want)
		}
	}
}

// requestText takes the text the provider tokenizes, not the JSON around it.
func TestRequestText(t *testing.T) {
	cases := []struct {
		name   string
		d      dialect
		body   string
		want   string
		msgs   int64
		direct int64
	}{
		{"chat", dialectChat, `{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}],"max_tokens":5}`,
			"Be brief.\nHi\nf{\"a\":1}\n", 3, 0},
		{"chat tools", dialectChat, `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}`,
			"x\n" + `[{"type":"function","function":{"name":"f"}}]`, 1, 0},
		{"completions tokens", dialectCompletions, `{"model":"m","prompt":["ab",[1,2,3],"cd"]}`, "abcd", 0, 3},
		{"completions flat token array", dialectCompletions, `{"model":"m","prompt":[1,2,3,4]}`, "", 0, 4},
		{"embeddings", dialectEmbeddings, `{"model":"m","input":"alpha beta"}`, "alpha beta", 0, 0},
		{"responses string", dialectResponses, `{"model":"m","instructions":"Be kind. ","input":"Hello"}`, "Be kind. Hello", 0, 0},
		{"responses items", dialectResponses, `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"Q"}]},{"type":"function_call","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"42"}]}`,
			"Q\nf{}\n42\n", 3, 0},
		{"messages", dialectMessages, `{"model":"m","max_tokens":9,"system":[{"type":"text","text":"Sys."}],"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"x"},{"type":"tool_use","id":"t","name":"f","input":{"q":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"R"}]}]}]}`,
			"Sys.Hi\nhmm{\"q\":1}\nR\n", 3, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := fastjson.Parse(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			text, msgs, direct := requestText(nil, tc.d, v)
			if string(text) != tc.want || msgs != tc.msgs || direct != tc.direct {
				t.Fatalf("requestText = %q, %d messages, %d direct; want %q, %d, %d", text, msgs, direct, tc.want, tc.msgs, tc.direct)
			}
		})
	}
	// The estimate: text tokens, framing per message, reply priming.
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hello world"}]}`)
	if got := requestTokens(estimator{enc: encO200K}, dialectChat, body); got != 3+1*tokensPerMessage+tokensReplyPrime {
		t.Fatalf("requestTokens = %d", got) // "hello world\n" is 3 tokens
	}
}

// Images whose size is unknown (a URL, an undecodable header) count
// imageTokens each in an estimate, in every dialect's shape.
func TestRequestTokensCountImages(t *testing.T) {
	cases := []struct {
		name   string
		d      dialect
		body   string
		images int64
	}{
		{"chat", dialectChat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"https://x/a.png"}},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}`, 2},
		{"responses", dialectResponses, `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hello world"},{"type":"input_image","image_url":"https://x/a.png"}]}]}`, 1},
		{"messages", dialectMessages, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"tool_result","content":[{"type":"image","source":{"type":"url","url":"https://x"}}]}]}]}`, 2},
		{"moderations", dialectModerations, `{"input":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}`, 1},
		{"none", dialectChat, `{"model":"m","messages":[{"role":"user","content":"an image_url, in words"}]}`, 0},
	}
	for _, tc := range cases {
		v, err := fastjson.Parse(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		m := mediaEstimate{}
		m.walk(nil, v)
		if got := m.tokens; got != tc.images*imageTokens || m.unknown {
			t.Errorf("%s: %d tokens of images (unknown %v), want %d images", tc.name, got, m.unknown, tc.images)
		}
		if got := requestTokens(estimator{enc: encO200K}, tc.d, []byte(tc.body)); got < tc.images*imageTokens || got > tc.images*imageTokens+64 {
			t.Errorf("%s: estimate %d, want %d images' %d tokens and a few of text", tc.name, got, tc.images, tc.images*imageTokens)
		}
	}
}

func TestAppendDelivered(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"chat", `{"choices":[{"message":{"content":"Hi","reasoning_content":"think","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}`, "Hithinkf{}"},
		{"completions", `{"choices":[{"text":"abc"}]}`, "abc"},
		{"responses", `{"output":[{"type":"reasoning","summary":[{"type":"summary_text","text":"S"}]},{"type":"message","content":[{"type":"output_text","text":"T"}]},{"type":"function_call","arguments":"{\"x\":1}"}]}`, `ST{"x":1}`},
		{"messages", `{"content":[{"type":"thinking","thinking":"th"},{"type":"text","text":"tx"},{"type":"tool_use","input":{"a":"b"}}]}`, `thtx{"a":"b"}`},
	}
	for _, tc := range cases {
		v, err := fastjson.Parse(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(appendDelivered(nil, v)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestScanText(t *testing.T) {
	cases := []struct{ name, data, want string }{
		{"chat delta", `{"choices":[{"delta":{"content":"Hel\"lo"}}]}`, `Hel\"lo`},
		{"value named like a key", `{"type":"text","text":"x"}`, "x"},
		{"object value skipped", `{"delta":{"type":"text_delta","text":"ab"}}`, "ab"},
		{"responses delta", `{"type":"response.output_text.delta","delta":"d1"}`, "d1"},
		{"tool arguments", `{"tool_calls":[{"function":{"arguments":"{\"a\":"}}]}`, `{\"a\":`},
		{"anthropic json", `{"delta":{"type":"input_json_delta","partial_json":"{\"k\""}}`, `{\"k\"`},
		{"thinking", `{"delta":{"type":"thinking_delta","thinking":"hm"}}`, "hm"},
		{"reasoning_content", `{"delta":{"content":null,"reasoning_content":"r"}}`, "r"},
		{"escaped backslash before quote", `{"content":"a\\"}`, `a\\`},
		{"key text inside a string", `{"content":"say \"text\":\"no\""}`, `say \"text\":\"no\"`},
		{"spaces", `{ "content" : "sp" }`, "sp"},
		{"truncated", `{"content":"abc`, ""},
		{"not json", `]]"content"`, ""},
	}
	for _, tc := range cases {
		got, n := scanText(nil, []byte(tc.data), 1<<20)
		if string(got) != tc.want || n != int64(len(tc.want)) {
			t.Errorf("%s: %q (%d), want %q", tc.name, got, n, tc.want)
		}
	}
	// The sample stops at its limit; the count goes on.
	got, n := scanText(nil, []byte(`{"content":"abcdef"}`), 4)
	if string(got) != "abcd" || n != 6 {
		t.Fatalf("limited: %q %d", got, n)
	}
}

func TestUnescapeJSON(t *testing.T) {
	cases := []struct{ in, want string }{
		{`plain`, "plain"},
		{`a\nb\t\"c\"\\\/`, "a\nb\t\"c\"\\/"},
		{`\u00e9\u4e2d`, "é中"},
		{`\ud83d\ude42`, "🙂"},
		{`\ud83d`, "\ufffd"},
		{`\u12`, ""},
		{`trail\`, "trail"},
		{`\q`, ""},
	}
	for _, tc := range cases {
		if got := string(unescapeJSON(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("unescape %q = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReconcileOutput(t *testing.T) {
	cases := []struct {
		name                      string
		in, out, reasoning, total int64
		wantOut, wantReasoning    int64
	}{
		{"openai: reasoning inside output", 75, 1186, 1024, 1261, 1186, 1024},
		{"no total", 10, 5, 0, 0, 5, 0},
		{"gemini: thoughts only in total", 20, 198, 0, 623, 603, 405},
		{"gemini: thoughts reported beside output", 20, 198, 405, 623, 603, 405},
		{"reasoning beside output, no total", 20, 10, 50, 0, 60, 50},
		{"total below the sum", 20, 10, 0, 25, 10, 0},
		{"total equals input", 20, 0, 0, 20, 0, 0},
	}
	for _, tc := range cases {
		out, r := reconcileOutput(tc.in, tc.out, tc.reasoning, tc.total)
		if out != tc.wantOut || r != tc.wantReasoning {
			t.Errorf("%s: output %d reasoning %d, want %d %d", tc.name, out, r, tc.wantOut, tc.wantReasoning)
		}
	}
}

// A stream whose provider reported no final count is estimated from the
// relayed text; the estimate of a long stream scales its sample.
func TestStreamedTokens(t *testing.T) {
	if got := streamedTokens(encO200K, []byte(`hello world`), 11); got != 2 {
		t.Fatalf("%d", got)
	}
	if got := streamedTokens(encO200K, []byte(`hello world`), 22); got != 4 {
		t.Fatalf("scaled: %d", got)
	}
	if got := streamedTokens(encO200K, nil, 0); got != 0 {
		t.Fatalf("empty: %d", got)
	}
}

var benchText = []byte(strings.Repeat("Tollgate meters every call: it reads the provider's usage, and when there is none it counts the tokens itself. ", 36)) // ~4 KiB

// BenchmarkCountTokens is the tokenizer estimate's cost per 4 KiB of text.
// It runs only for calls without usage; calls with usage never reach it.
func BenchmarkCountTokens(b *testing.B) {
	for _, enc := range []struct {
		name string
		e    encoding
	}{{"o200k", encO200K}, {"cl100k", encCL100K}} {
		b.Run(enc.name, func(b *testing.B) {
			countTokens(enc.e, benchText) // build the vocabulary outside the timing
			b.SetBytes(int64(len(benchText)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				countTokens(enc.e, benchText)
			}
		})
	}
}

// BenchmarkCountTokensCapped: the worst case, a response far past the exact
// bound (1 MiB), costs what maxExactBytes costs.
func BenchmarkCountTokensCapped(b *testing.B) {
	big := bytes.Repeat(benchText, 256)
	countTokens(encO200K, big)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		countTokens(encO200K, big)
	}
}

func BenchmarkRequestTokens(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"` +
		strings.Repeat("Explain metering in one sentence, please. ", 24) + `"}],"max_tokens":256}`)
	requestTokens(estimator{enc: encO200K}, dialectChat, body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		requestTokens(estimator{enc: encO200K}, dialectChat, body)
	}
}

// BenchmarkScanText is the hot-path cost a streamed chunk pays for a
// possible estimate: one pass to find and copy its text.
func BenchmarkScanText(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-BqsZ2c0mDq6V5u9uQGHhqUqzY1xrT","object":"chat.completion.chunk","created":1751929611,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_07871e2ad8","choices":[{"index":0,"delta":{"content":" metering"},"logprobs":null,"finish_reason":null}],"usage":null}`)
	buf := make([]byte, 0, maxTextSample)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf, _ = scanText(buf[:0], chunk, maxTextSample)
	}
}

// The vocabularies are built once and shared: concurrent estimates agree.
func TestCountTokensConcurrent(t *testing.T) {
	want := [2]int64{countTokens(encCL100K, benchText), countTokens(encO200K, benchText)}
	done := make(chan [2]int64, 8)
	for range 8 {
		go func() { done <- [2]int64{countTokens(encCL100K, benchText), countTokens(encO200K, benchText)} }()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Fatalf("concurrent counts %v, want %v", got, want)
		}
	}
}

// A moderation's estimate follows its input's size whatever its shape: a
// large text hidden behind a first short string, in an object, in nested
// arrays or in a part of another type is counted.
func TestModerationEstimateFollowsTheInput(t *testing.T) {
	big := strings.Repeat("word ", 20_000) // ~20,000 tokens
	for _, body := range []string{
		`{"input":"` + big + `"}`,
		`{"input":["x",{"type":"text","text":"` + big + `"}]}`,
		`{"input":{"text":"` + big + `"}}`,
		`{"input":[["` + big + `"]]}`,
		`{"input":[{"type":"other","data":"` + big + `"}]}`,
	} {
		if got := requestTokens(estimator{enc: encO200K}, dialectModerations, []byte(body)); got < 19_000 {
			t.Errorf("estimate %d tokens for %.60s…; want ≥ 19,000", got, body)
		}
	}
}
