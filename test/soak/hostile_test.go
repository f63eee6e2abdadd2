package soak

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// strictUpstream is a provider that reads requests the way OpenAI's servers
// (and Go's encoding/json, Python's json) do — for a key given twice the last
// value wins — and honours "n" (that many choices, each up to max_tokens),
// billing its usage accordingly. It records what it understood of each
// tagged call.
type strictUpstream struct {
	srv  *httptest.Server
	URL  string
	mu   sync.Mutex
	seen map[int64]strictRequest
}

type strictRequest struct {
	Model     string `json:"model"`
	MaxTokens int64  `json:"max_tokens"`
	N         int64  `json:"n"`
	Stream    bool   `json:"stream"`
}

func startStrictUpstream(t testing.TB) *strictUpstream {
	t.Helper()
	u := &strictUpstream{seen: map[int64]strictRequest{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req strictRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, `{"error":{"message":"bad json","type":"invalid_request_error","code":null,"param":null}}`, 400)
			return
		}
		if tag, ok := callTag(body); ok {
			u.mu.Lock()
			u.seen[tag] = req
			u.mu.Unlock()
		}
		n := max(req.N, 1)
		out := int64(16)
		if req.MaxTokens > 0 {
			out = req.MaxTokens
		}
		usage := map[string]int64{"prompt_tokens": 10, "completion_tokens": n * out, "total_tokens": 10 + n*out}
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"id\":\"s\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n", req.Model)
			u, _ := json.Marshal(usage)
			fmt.Fprintf(w, "data: {\"id\":\"s\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[],\"usage\":%s}\n\ndata: [DONE]\n\n", req.Model, u)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		choices := make([]map[string]any, n)
		for i := range choices {
			choices[i] = map[string]any{"index": i, "message": map[string]string{"role": "assistant", "content": "hi"}, "finish_reason": "length"}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "chatcmpl-strict", "object": "chat.completion", "model": req.Model,
			"choices": choices, "usage": usage})
	}))
	t.Cleanup(u.srv.Close)
	u.URL = u.srv.URL + "/v1"
	return u
}

func (u *strictUpstream) request(tag int64) (strictRequest, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, ok := u.seen[tag]
	return r, ok
}

// rawResp is an answer read off a raw connection.
type rawResp struct {
	status int
	header http.Header
	body   []byte
	err    error // no answer: the connection was closed or timed out
}

// rawRoundTrip writes req as is and reads one response.
func rawRoundTrip(addr string, req []byte, timeout time.Duration) rawResp {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return rawResp{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	go func() { _, _ = c.Write(req) }() // a server may answer before it has read everything
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawResp{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{status: resp.StatusCode, header: resp.Header, body: b}
}

// rawRequest builds an HTTP/1.1 request; header lines are written verbatim
// (so that they may carry bytes no HTTP library would send).
func rawRequest(method, path string, headers []string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n", method, path)
	hasLen := false
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), "content-length:") || strings.HasPrefix(strings.ToLower(h), "transfer-encoding:") {
			hasLen = true
		}
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	if !hasLen {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// TestHostileInput sends bad requests to a real proxy process: each must get
// its documented status (an OpenAI-shaped error), reach no provider, charge
// nothing, and leave the process alive and serving. The cases already proven
// in-process by proxy/failures_test.go (top-level malformed JSON, top-level
// nesting, invalid UTF-8 in a message, negative/fractional/oversized
// max_tokens, "../../" models, a 70 KB body against a 64 KB limit, no or a
// bad key, Basic auth) are not repeated here.
func TestHostileInput(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	mock := startMock(t, mockllm.Config{})
	strict := startStrictUpstream(t)
	cfg := writeConfig(t, map[string]any{"proxy.read_timeout": "1s"})
	// gemini models are served by the strict upstream, the rest by the mock.
	p := startProxy(t, "proxy", cfg, procEnv(mock.URL, "REDIS_URL="+rs.URL(), "GEMINI_BASE_URL="+strict.URL))
	victim, err := createAccount(st, "hostile", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	auth := "Authorization: Bearer " + victim.key
	jsonCT := "Content-Type: application/json"
	tag := int64(0)
	chat := func(model, extra string) (int64, []byte) {
		tag++
		return tag, []byte(fmt.Sprintf(`{"model":%s,"messages":[{"role":"user","content":"call-%d hi"}]%s}`, model, tag, extra))
	}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		_, _ = w.Write(b)
		_ = w.Close()
		return buf.Bytes()
	}
	deep := func(open, close string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}

	type hostileCase struct {
		name   string
		tag    int64
		req    []byte
		status int
		code   string
	}
	var cases []hostileCase
	add := func(name string, tg int64, req []byte, status int, code string) {
		cases = append(cases, hostileCase{name: name, tag: tg, req: req, status: status, code: code})
	}
	post := func(b []byte, hdr ...string) []byte {
		return rawRequest("POST", "/v1/chat/completions", append([]string{auth, jsonCT}, hdr...), b)
	}

	// Bodies that are not (acceptable) JSON.
	tg, b := chat(`"gpt-4o-mini"`, ``)
	add("trailing garbage after the object", tg, post(append(b, []byte(` {"model":"gpt-4.1"}`)...)), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, `,"temperature":NaN`)
	add("NaN literal", tg, post(b), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, `/* comment */`)
	add("comment", tg, post(b), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("byte order mark", tg, post(append([]byte("\xef\xbb\xbf"), b...)), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("gzip-encoded body (not decompressed, no bomb)", tg, post(gz(b), "Content-Encoding: gzip"), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, `,"metadata":`+deep(`{"a":`, `}`, 10000))
	add("objects nested 10,000 deep inside a request", tg, post(b), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, `,"tools":`+deep(`[`, `]`, 100000))
	add("arrays nested 100,000 deep inside a request", tg, post(b), 400, "invalid_request")

	// Oversized bodies: the default limit is 8 MiB.
	tg, b = chat(`"gpt-4o-mini"`, `,"pad":"`+strings.Repeat("x", 20<<20)+`"`)
	add("20 MB body (Content-Length)", tg, post(b), 413, "request_too_large")
	var chunked bytes.Buffer
	for off := 0; off < len(b); off += 1 << 20 {
		end := min(off+1<<20, len(b))
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", end-off, b[off:end])
	}
	chunked.WriteString("0\r\n\r\n")
	add("20 MB body (chunked)", tg, post(chunked.Bytes(), "Transfer-Encoding: chunked"), 413, "request_too_large")

	// Strings that are not valid UTF-8 or hide control characters.
	tg, b = chat("\"gpt-4o-mini\xff\"", ``)
	add("invalid UTF-8 in the model", tg, post(b), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini"`, ",\"user\":\"\xc0\xaf\"")
	add("overlong UTF-8 sequence", tg, post(b), 400, "invalid_request")
	tg, b = chat(`"gpt-4o-mini\ud800"`, ``)
	add("lone surrogate escape in the model", tg, post(b), 404, "model_not_found")

	// Output limits.
	for _, v := range []struct{ name, extra string }{
		{"max_tokens = int64 max", `,"max_tokens":9223372036854775807`},
		{"max_tokens past int64", `,"max_tokens":92233720368547758070`},
		{"max_tokens 1e300", `,"max_tokens":1e300`},
		{"max_tokens as a string", `,"max_tokens":"16"`},
		{"max_tokens zero", `,"max_tokens":0`},
		{"max_completion_tokens negative", `,"max_completion_tokens":-1`},
		{"max_tokens negative zero", `,"max_tokens":-0.0`},
	} {
		tg, b = chat(`"gpt-4o-mini"`, v.extra)
		add(v.name, tg, post(b), 400, "invalid_request")
	}
	tag++
	add("responses max_output_tokens negative", tag, rawRequest("POST", "/v1/responses", []string{auth, jsonCT},
		[]byte(fmt.Sprintf(`{"model":"gpt-4o-mini","input":"call-%d","max_output_tokens":-7}`, tag))), 400, "invalid_request")
	tag++
	add("messages without max_tokens", tag, rawRequest("POST", "/v1/messages", []string{auth, jsonCT},
		[]byte(fmt.Sprintf(`{"model":"claude-sonnet","messages":[{"role":"user","content":"call-%d"}]}`, tag))), 400, "invalid_request")

	// Models with path and URL tricks: never a route, never forwarded.
	for _, m := range []string{
		`"https://api.openai.com/v1/chat/completions"`, `"gpt-4o-mini/../gpt-4.1"`, `"gpt-4o-mini?api-version=1"`,
		`"gpt-4o-mini#frag"`, `"gpt-4o-mini%2F..%2Fgpt-4.1"`, `"gpt-4o-mini\u0000"`, `" gpt-4o-mini"`, `"gpt-4o-mini\r\nX-Injected: 1"`,
		`"//evil.example/v1"`, `"gpt-4o-mini\\"`,
	} {
		tg, b = chat(m, ``)
		add("model "+m, tg, post(b), 404, "model_not_found")
	}
	tg, b = chat(`["gpt-4o-mini"]`, ``)
	add("model as an array", tg, post(b), 400, "invalid_request")

	// Authorization that is missing its key or is malformed.
	for _, h := range []struct{ name, line string }{
		{"Bearer without a key", "Authorization: Bearer"},
		{"Bearer and spaces", "Authorization: Bearer     "},
		{"key with a suffix", "Authorization: Bearer " + victim.key + "x"},
		{"x-api-key empty", "x-api-key: "},
		{"two Authorization headers, the first bad", "Authorization: Bearer tg-nope\r\n" + auth},
	} {
		tg, b = chat(`"gpt-4o-mini"`, ``)
		add("auth: "+h.name, tg, rawRequest("POST", "/v1/chat/completions", []string{h.line, jsonCT}, b), 401, "")
	}
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("auth: key with a NUL (malformed header)", tg, rawRequest("POST", "/v1/chat/completions", []string{auth + "\x00", jsonCT}, b), 400, "invalid_request")
	// Headers past the read buffer (4 KiB): 431 Request Header Fields Too Large.
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("auth: a 4 KB key", tg, rawRequest("POST", "/v1/chat/completions", []string{"Authorization: Bearer tg-" + strings.Repeat("a", 4000), jsonCT}, b), 431, "")
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("auth: a 64 KB header", tg, rawRequest("POST", "/v1/chat/completions", []string{"Authorization: Bearer " + strings.Repeat("a", 64<<10), jsonCT}, b), 431, "")

	// CR and LF inside header values (raw TCP). A bare CR, a NUL or a space
	// before the colon is refused (RFC 9112 §2.2, §5.1). A bare LF may end a
	// line and an obs-fold may be read as a space (RFC 9112 §2.2, §5.2):
	// fasthttp does both, so those requests are served as the headers they
	// then are — and nothing the client put in a header comes back in the
	// answer or goes upstream.
	for _, h := range []struct {
		name, line string
		status     int
	}{
		{"bare CR in the Authorization value", auth + "\rX-Injected: 1", 400},
		{"NUL in a header value", "X-Trace: a\x00b", 400},
		{"space before the colon", "Authorization : Bearer " + victim.key, 400},
		{"bare LF in the Authorization value", auth + "\nX-Injected: 1", 200},
		{"obs-fold continuation", "Authorization: Bearer\r\n " + victim.key, 200},
	} {
		tg, b = chat(`"gpt-4o-mini"`, ``)
		add("header: "+h.name, tg, rawRequest("POST", "/v1/chat/completions", []string{h.line, jsonCT}, b), h.status, "")
	}

	// Methods and routes.
	add("GET on a metered route", 0, rawRequest("GET", "/v1/chat/completions", []string{auth}, nil), 405, "method_not_allowed")
	add("PUT on a metered route", 0, rawRequest("PUT", "/v1/chat/completions", []string{auth, jsonCT}, []byte(`{}`)), 405, "method_not_allowed")
	// fasthttp normalises the path: an encoded slash is the same route.
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("percent-encoded route", tg, rawRequest("POST", "/v1/chat%2Fcompletions", []string{auth, jsonCT}, b), 200, "")
	tg, b = chat(`"gpt-4o-mini"`, ``)
	add("CRLF in the request target", tg, rawRequest("POST", "/v1/chat/completions?x=%0d%0aSet-Cookie:%20a=b", []string{auth, jsonCT}, b), 200, "")

	ledgerBefore, _, _ := ledgerInvariant(st, victim.id)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawRoundTrip(p.Addr, tc.req, 15*time.Second)
			if r.err != nil {
				t.Fatalf("no answer: %v", r.err)
			}
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %.300s", r.status, tc.status, r.body)
			}
			if r.header.Get("Set-Cookie") != "" || r.header.Get("X-Injected") != "" {
				t.Errorf("a header was injected into the answer: %v", r.header)
			}
			if tc.status >= 400 {
				if code := errorCode(r.body); !json.Valid(r.body) || !strings.Contains(string(r.body), `"error"`) {
					t.Errorf("not an OpenAI-shaped error: %.300s", r.body)
				} else if tc.code != "" && code != tc.code {
					t.Errorf("code %q, want %q: %.300s", code, tc.code, r.body)
				}
			}
			if tc.tag != 0 && tc.status != 200 && mock.forwarded(tc.tag) != 0 {
				t.Errorf("forwarded to the provider")
			}
			p.assertAlive(t)
		})
	}
	// Nothing was charged but the requests that were served (200).
	served := 0
	for _, tc := range cases {
		if tc.status == 200 {
			served++
		}
	}
	after, entries, problems := ledgerInvariant(st, victim.id)
	for _, pr := range problems {
		t.Error(pr)
	}
	if n := len(usageByRef(entries)); n != served || after.Balance > ledgerBefore.Balance {
		t.Errorf("%d debits for %d requests served; balance %d → %d", n, served, ledgerBefore.Balance, after.Balance)
	}
	// Still serving.
	c := &callSpec{tag: 9_999, account: victim, base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8}
	if r := c.do(newClient(1)); r.status != 200 {
		t.Fatalf("the proxy no longer serves: %d %s %v", r.status, r.code, r.err)
	}
}

// TestHostileDuplicateKeys: a body may name a key twice. Tollgate reads the
// first value (fastjson); providers read the last (as encoding/json and
// Python's json do). Whatever Tollgate priced and reserved must be what the
// provider serves: a duplicated model, max_tokens or stream must be refused
// (400) or forwarded without the duplicate.
func TestHostileDuplicateKeys(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	mock := startMock(t, mockllm.Config{})
	strict := startStrictUpstream(t)
	p := startProxy(t, "proxy", writeConfig(t, nil), procEnv(mock.URL, "REDIS_URL="+rs.URL(), "GEMINI_BASE_URL="+strict.URL))
	prices := loadPrices(t)
	cases := []struct {
		name, body string
		model      string // the model priced
	}{
		// gemini-flash is core (1/2), gemini-2.5-flash pro (3/6): the provider serves the dearer one.
		{"model twice", `{"model":"gemini-flash","model":"gemini-2.5-flash","max_tokens":50,"messages":[{"role":"user","content":"call-%d"}]}`, "gemini-flash"},
		// A 1-token hold, then 4,000 tokens generated.
		{"max_tokens twice", `{"model":"gemini-flash","max_tokens":1,"max_tokens":4000,"messages":[{"role":"user","content":"call-%d"}]}`, "gemini-flash"},
		// Priced as a whole answer, served as a stream.
		{"stream twice", `{"model":"gemini-flash","stream":false,"stream":true,"max_tokens":20,"messages":[{"role":"user","content":"call-%d"}]}`, "gemini-flash"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := createAccount(st, fmt.Sprintf("dup-%d", i), 1_000_000)
			if err != nil {
				t.Fatal(err)
			}
			tg := int64(100 + i)
			r := rawRoundTrip(p.Addr, rawRequest("POST", "/v1/chat/completions",
				[]string{"Authorization: Bearer " + a.key, "Content-Type: application/json"}, []byte(fmt.Sprintf(tc.body, tg))), 15*time.Second)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status == 400 {
				return // refused: fine
			}
			up, ok := strict.request(tg)
			if !ok {
				t.Fatalf("status %d but the provider never saw the call: %.300s", r.status, r.body)
			}
			var resp struct {
				Usage *wireUsage `json:"usage"`
			}
			_ = json.Unmarshal(r.body, &resp)
			charged := parseCredits(r.header.Get("X-Credits-Charged"))
			problems := []string{}
			if up.Model != "gemini-2.0-flash" {
				problems = append(problems, fmt.Sprintf("priced as %s (gemini-2.0-flash upstream) but the provider served %q", tc.model, up.Model))
			}
			if up.Stream && !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
				problems = append(problems, "the provider streamed a call Tollgate priced and answered as a whole answer")
			}
			if g, err := st.Generation(context.Background(), a.id, r.header.Get("X-Request-Id")); err != nil || g.Estimated {
				problems = append(problems, fmt.Sprintf("charged an estimate, not the provider's usage (record %+v, %v)", g, err))
			}
			if resp.Usage != nil {
				want := prices.cost(t, tc.model, resp.Usage.normalise(epChat))
				if charged != want {
					problems = append(problems, fmt.Sprintf("charged %d mc for usage %+v priced %d (the hold capped it)", charged, *resp.Usage, want))
				}
			}
			if len(problems) > 0 {
				t.Errorf("status %d, upstream understood %+v: %s", r.status, up, strings.Join(problems, "; "))
			}
		})
	}
	p.assertAlive(t)
}

// TestHostileChoices: "n" asks the provider for n choices, each up to
// max_tokens, and the provider bills all of them. The hold (and so the
// charge, which never exceeds it) must cover n × max_tokens, or the call
// must be refused; otherwise n=128 buys 128 answers for the price of one.
func TestHostileChoices(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	strict := startStrictUpstream(t)
	p := startProxy(t, "proxy", writeConfig(t, nil), procEnv(strict.URL, "REDIS_URL="+rs.URL()))
	prices := loadPrices(t)
	a, err := createAccount(st, "choices", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 8} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("n=%d stream=%v", n, stream), func(t *testing.T) {
				c := &callSpec{tag: int64(n*10) + map[bool]int64{false: 0, true: 1}[stream], account: a, base: p.URL, ep: epChat,
					model: "gpt-4o-mini", maxTokens: 100, stream: stream}
				extra := fmt.Sprintf(`,"n":%d`, n)
				r := c.doExtra(newClient(1), extra)
				if r.status == 400 && n > 1 {
					return // refused: fine
				}
				if r.status != 200 || !r.usage.seen {
					t.Fatalf("status %d %s %v, usage %+v", r.status, r.code, r.err, r.usage)
				}
				want := prices.cost(t, c.model, r.usage)
				if r.charged != want {
					t.Errorf("charged %d mc for %d choices, usage %+v priced %d: the hold covered one choice", r.charged, n, r.usage, want)
				}
			})
		}
	}
	_, _, problems := ledgerInvariant(st, a.id)
	for _, pr := range problems {
		t.Error(pr)
	}
}

// TestHostileGenerationOfAnotherAccount: a key may read only its own
// account's cost records.
func TestHostileGenerationOfAnotherAccount(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	mock := startMock(t, mockllm.Config{})
	p := startProxy(t, "proxy", writeConfig(t, nil), procEnv(mock.URL, "REDIS_URL="+rs.URL()))
	alice, err := createAccount(st, "alice", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := createAccount(st, "mallory", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	c := &callSpec{tag: 1, account: alice, base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8}
	r := c.do(newClient(1))
	if r.status != 200 || r.reqID == "" {
		t.Fatalf("alice's call: %d %v", r.status, r.err)
	}
	get := func(key, query string) rawResp {
		return rawRoundTrip(p.Addr, rawRequest("GET", "/v1/generation?"+query, []string{"Authorization: Bearer " + key}, nil), 10*time.Second)
	}
	if g := get(alice.key, "id="+r.reqID); g.status != 200 || !strings.Contains(string(g.body), r.reqID) {
		t.Fatalf("alice reading her own record: %d %s", g.status, g.body)
	}
	for _, tc := range []struct {
		name, key, query string
		status           int
	}{
		{"another account's request id", mallory.key, "id=" + r.reqID, 404},
		{"path trick in the id", mallory.key, "id=" + r.reqID + "/../" + r.reqID, 404},
		{"hash-tag trick in the id", mallory.key, "id=" + "%7Ba:alice%7D:gen:" + r.reqID, 404},
		{"id twice, the second alice's", mallory.key, "id=x&id=" + r.reqID, 404},
		{"no id", mallory.key, "", 400},
		{"a 200-character id", mallory.key, "id=" + strings.Repeat("r", 200), 400},
		{"no key", "", "id=" + r.reqID, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := get(tc.key, tc.query)
			if g.status != tc.status {
				t.Errorf("status %d, want %d: %s", g.status, tc.status, g.body)
			}
			if strings.Contains(string(g.body), `"credits_charged"`) {
				t.Errorf("another account's cost record leaked: %s", g.body)
			}
		})
	}
	p.assertAlive(t)
}

// TestHostileSlowClients: a client that never finishes its headers, or its
// body, is cut at proxy.read_timeout; nothing is forwarded.
func TestHostileSlowClients(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	mock := startMock(t, mockllm.Config{})
	const readTimeout = time.Second
	p := startProxy(t, "proxy", writeConfig(t, map[string]any{"proxy.read_timeout": readTimeout.String()}),
		procEnv(mock.URL, "REDIS_URL="+rs.URL()))
	a, err := createAccount(st, "slowpoke", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	full := rawRequest("POST", "/v1/chat/completions", []string{"Authorization: Bearer " + a.key, "Content-Type: application/json"},
		[]byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"call-1 hi"}],"max_tokens":8}`))
	headEnd := bytes.Index(full, []byte("\r\n\r\n")) + 4
	for _, tc := range []struct {
		name string
		sent []byte
	}{
		{"headers never finished", full[:headEnd-10]},
		{"body never finished", full[:headEnd+20]},
		{"one header byte a second", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if tc.sent != nil {
				_, _ = c.Write(tc.sent)
			} else {
				go func() {
					for i := 0; i < 30; i++ {
						if _, err := c.Write(full[i : i+1]); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
				}()
			}
			_ = c.SetReadDeadline(time.Now().Add(readTimeout + 10*time.Second))
			resp, err := io.ReadAll(c) // until the proxy closes the connection
			took := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection stayed open %s: %v", took.Round(time.Millisecond), err)
			} // a reset (the client was still writing) is a close too
			if took > readTimeout+5*time.Second {
				t.Errorf("cut after %s, want about read_timeout %s", took.Round(time.Millisecond), readTimeout)
			}
			if len(resp) > 0 && !bytes.HasPrefix(resp, []byte("HTTP/1.1 408")) && !bytes.HasPrefix(resp, []byte("HTTP/1.1 400")) {
				t.Errorf("answered %.60q", resp)
			}
		})
	}
	if mock.forwarded(1) != 0 {
		t.Error("a request never received in full was forwarded")
	}
	ac, _, problems := ledgerInvariant(st, a.id)
	for _, pr := range problems {
		t.Error(pr)
	}
	if ac.Balance != a.funded {
		t.Errorf("balance %d, want %d", ac.Balance, a.funded)
	}
	p.assertAlive(t)
}

// TestHostileConnectionsPerIP: past proxy.max_conns_per_ip connections from
// one address are refused with 429; the others, and later ones, are served.
func TestHostileConnectionsPerIP(t *testing.T) {
	rs := testredis.Start(t)
	st := metering.New(rs.Client(t), metering.Options{KeyCacheTTL: -1})
	mock := startMock(t, mockllm.Config{})
	const limit = 4
	p := startProxy(t, "proxy", writeConfig(t, map[string]any{"proxy.max_conns_per_ip": limit, "proxy.read_timeout": "5s"}),
		procEnv(mock.URL, "REDIS_URL="+rs.URL()))
	a, err := createAccount(st, "crowd", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	for i := 0; i < limit; i++ {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server register them
	over := rawRoundTrip(p.Addr, rawRequest("GET", "/healthz", nil, nil), 5*time.Second)
	if over.err == nil && over.status != http.StatusTooManyRequests {
		t.Errorf("connection %d: %d, want 429", limit+1, over.status)
	}
	// A held connection is still served.
	_, _ = held[0].Write(rawRequest("GET", "/healthz", nil, nil))
	_ = held[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(held[0]), nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("a connection within the limit was not served: %v %v", resp, err)
	}
	for _, c := range held {
		c.Close()
	}
	// Once they are gone, new connections are served again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := &callSpec{tag: 1, account: a, base: p.URL, ep: epChat, model: "gpt-4o-mini", maxTokens: 8}
		cl := newClient(1)
		r := c.do(cl)
		cl.CloseIdleConnections()
		if r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served after the crowd left: %d %v", r.status, r.err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, _, problems := ledgerInvariant(st, a.id)
	for _, pr := range problems {
		t.Error(pr)
	}
	p.assertAlive(t)
}

// doExtra is do with extra JSON members appended to the body.
func (c *callSpec) doExtra(client *http.Client, extra string) *callResult {
	cc := *c
	cc.extra = extra
	return cc.do(client)
}
