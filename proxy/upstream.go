package proxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Provider is an upstream model provider as the proxy needs it.
type Provider struct {
	Name    string
	Kind    string // "openai" (OpenAI-compatible) or "anthropic"
	BaseURL string // OpenAI-compatible base, e.g. https://api.openai.com/v1
	// NativeBaseURL is the base for the provider's native API (Anthropic
	// /v1/messages); defaults to BaseURL.
	NativeBaseURL string
	APIKey        string
	// APIKeys are more keys of the provider, each with its weight: a call
	// goes out with one of them (APIKey included, weight 1), chosen at
	// random in proportion to the weights. Keys of one provider must belong
	// to one organisation (stored responses are read with any of them).
	APIKeys []APIKey
	Headers map[string]string
}

// APIKey is one of a provider's keys and its share of the calls.
type APIKey struct {
	Key    string
	Weight int // default 1
}

// upstream is a provider with its long-lived clients.
type upstream struct {
	name    string
	kind    string
	base    string // without trailing slash
	native  string
	headers [][2][]byte                 // canonical key, value
	keys    []upstreamKey               // none when the provider takes no key
	weights int                         // Σ keys' weights
	uris    map[*endpoint]*fasthttp.URI // parsed once; copied into each request
	plain   *fasthttp.HostClient        // non-streaming calls
	stream  *fasthttp.HostClient        // streaming calls: per-read idle deadlines
	cfg     Provider                    // what it was built from (Reload keeps it when unchanged)
}

// Timeouts bound upstream calls.
type Timeouts struct {
	Connect    time.Duration
	FirstByte  time.Duration
	Request    time.Duration
	StreamIdle time.Duration
	Stream     time.Duration
}

func newUpstream(p Provider, t Timeouts, maxRespBody int) (*upstream, error) {
	u, err := url.Parse(strings.TrimRight(p.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider %q: bad base URL %q", p.Name, p.BaseURL)
	}
	addr := u.Host
	tls := u.Scheme == "https"
	if u.Port() == "" {
		if tls {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	up := &upstream{
		name: p.Name, kind: p.Kind, base: strings.TrimRight(p.BaseURL, "/"),
		native: strings.TrimRight(p.NativeBaseURL, "/"), cfg: p,
	}
	if up.native == "" {
		up.native = up.base
	}
	keys := p.APIKeys
	if p.APIKey != "" {
		keys = append([]APIKey{{Key: p.APIKey, Weight: 1}}, keys...)
	}
	for _, k := range keys {
		if k.Key == "" {
			return nil, fmt.Errorf("provider %q: an empty API key", p.Name)
		}
		w := max(k.Weight, 1)
		up.weights += w
		up.keys = append(up.keys, upstreamKey{apiKey: []byte(k.Key), auth: []byte("Bearer " + k.Key), upTo: up.weights})
	}
	for k, v := range p.Headers {
		if name := wideningBeta([]byte(v)); name != nil && strings.EqualFold(k, "anthropic-beta") { // anthropic.go
			return nil, fmt.Errorf("provider %q: header anthropic-beta %q widens the context window past the catalog's, which holds do not cover; remove it", p.Name, name)
		}
		up.headers = append(up.headers, [2][]byte{fasthttp.AppendNormalizedHeaderKey(nil, k), []byte(v)})
	}
	up.uris = make(map[*endpoint]*fasthttp.URI, len(endpoints))
	for _, ep := range endpoints {
		uri := &fasthttp.URI{}
		if err := uri.Parse(nil, []byte(up.url(ep))); err != nil {
			return nil, fmt.Errorf("provider %q: bad URL %q: %w", p.Name, up.url(ep), err)
		}
		up.uris[ep] = uri
	}
	dialer := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	up.plain = &fasthttp.HostClient{
		Addr: addr, IsTLS: tls, Name: "tollgate",
		MaxConns:                      4096,
		MaxIdleConnDuration:           60 * time.Second,
		MaxResponseBodySize:           maxRespBody,
		WriteTimeout:                  t.Request,
		ReadBufferSize:                8192,
		DisableHeaderNamesNormalizing: false,
		NoDefaultUserAgentHeader:      true,
		RetryIfErr:                    noRetry,
		Dial: func(a string) (net.Conn, error) {
			c, err := dialer.Dial("tcp", a)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		},
	}
	up.stream = &fasthttp.HostClient{
		Addr: addr, IsTLS: tls, Name: "tollgate",
		MaxConns:                 1 << 20,
		MaxIdleConnDuration:      60 * time.Second,
		StreamResponseBody:       true,
		WriteTimeout:             t.FirstByte,
		ReadBufferSize:           4096,
		NoDefaultUserAgentHeader: true,
		RetryIfErr:               noRetry,
		Dial: func(a string) (net.Conn, error) {
			c, err := dialer.Dial("tcp", a)
			if err != nil {
				return nil, &dialError{err}
			}
			return &idleConn{Conn: c, firstByte: t.FirstByte, idle: t.StreamIdle}, nil
		},
	}
	return up, nil
}

// noRetry: a model call is not idempotent (it costs money upstream), so it is
// resent only when a pooled keep-alive connection turned out to be closed
// before the provider answered anything — the one case where the provider
// cannot have started work.
func noRetry(_ *fasthttp.Request, attempts int, err error) (bool, bool) {
	return false, attempts == 1 && (errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF))
}

// upstreamKey is one API key of a provider, as sent.
type upstreamKey struct {
	apiKey []byte // x-api-key (Anthropic's native API)
	auth   []byte // the full Authorization value
	upTo   int    // cumulative weight: chosen when the draw is below it
}

// key picks one of the provider's keys in proportion to their weights (nil
// when it has none). A retry draws again, so a key that is rate limited is
// not necessarily the one tried next.
func (u *upstream) key() *upstreamKey {
	switch len(u.keys) {
	case 0:
		return nil
	case 1:
		return &u.keys[0]
	}
	n := rand.IntN(u.weights)
	for i := range u.keys {
		if n < u.keys[i].upTo {
			return &u.keys[i]
		}
	}
	return &u.keys[len(u.keys)-1]
}

// dialError marks a failure to connect: the provider received nothing, so
// the call may be sent again (retried, or to a fallback).
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// isDialError reports whether err is a failure to connect.
func isDialError(err error) bool {
	var de *dialError
	return errors.As(err, &de)
}

// url returns the upstream URL for an endpoint.
func (u *upstream) url(ep *endpoint) string {
	if ep.native {
		return u.native + ep.path
	}
	return u.base + ep.path
}

// Upstream request header keys, in canonical form: SetCanonical skips the
// per-call normalisation.
var (
	hdrAccept        = []byte("Accept")
	hdrAuthorization = []byte("Authorization")
	hdrXAPIKey       = []byte("X-Api-Key")
	strJSON          = []byte("application/json")
	strUserAgent     = []byte("tollgate")
)

// prepare fills req's headers for this provider.
func (u *upstream) prepare(req *fasthttp.Request, ep *endpoint, stream bool) {
	req.Header.SetMethod(fasthttp.MethodPost)
	if uri := u.uris[ep]; uri != nil {
		req.SetURI(uri) // a copy of the parsed URI: no parse per call
	} else {
		req.SetRequestURI(u.url(ep))
	}
	req.Header.SetContentTypeBytes(strJSON)
	if stream {
		req.Header.SetCanonical(hdrAccept, strEventStream)
	} else {
		req.Header.SetCanonical(hdrAccept, strJSON)
	}
	req.Header.SetUserAgentBytes(strUserAgent)
	if k := u.key(); k != nil {
		ep.dialect.setKey(&req.Header, k) // dialect_*.go
	}
	for _, h := range u.headers {
		req.Header.SetCanonical(h[0], h[1])
	}
}

// prepareStored fills req for a stored response's route (responses.go):
// method (GET, DELETE) on /responses/{id}, or its /input_items, below the
// provider's base, with the client's query string.
func (u *upstream) prepareStored(req *fasthttp.Request, method, id []byte, items bool, query []byte) {
	req.Header.SetMethodBytes(method)
	bp := getBuf()
	b := append((*bp)[:0], u.base...)
	b = append(b, "/responses/"...)
	b = append(b, id...)
	if items {
		b = append(b, "/input_items"...)
	}
	if len(query) > 0 {
		b = append(b, '?')
		b = append(b, query...)
	}
	req.SetRequestURIBytes(b) // copied
	*bp = b
	putBuf(bp)
	req.Header.SetCanonical(hdrAccept, strJSON)
	req.Header.SetUserAgentBytes(strUserAgent)
	if k := u.key(); k != nil {
		epResponses.dialect.setKey(&req.Header, k)
	}
	for _, h := range u.headers {
		req.Header.SetCanonical(h[0], h[1])
	}
}

// idleConn bounds each read: from the moment a request is written until its
// response headers are complete (the blank line that ends them), reads share
// one deadline, firstByte after the write — so headers trickled a byte at a
// time cannot outlast it; later reads wait at most idle each (a body that
// trickles is bounded per event by streamBody's idle timer). No timer
// goroutine per stream.
type idleConn struct {
	net.Conn
	firstByte, idle time.Duration
	awaiting        bool      // a request was written; its response headers are not complete
	until           time.Time // the headers' deadline
	newlines        int       // consecutive line ends seen while awaiting
}

func (c *idleConn) Write(b []byte) (int, error) {
	if !c.awaiting {
		c.awaiting, c.until, c.newlines = true, time.Now().Add(c.firstByte), 0
	}
	return c.Conn.Write(b)
}

func (c *idleConn) Read(b []byte) (int, error) {
	switch {
	case c.awaiting && c.firstByte > 0:
		_ = c.Conn.SetReadDeadline(c.until)
	case !c.awaiting && c.idle > 0:
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	n, err := c.Conn.Read(b)
	for i := 0; c.awaiting && i < n; i++ {
		switch b[i] {
		case '\n':
			if c.newlines++; c.newlines == 2 {
				c.awaiting = false // the blank line: headers complete
			}
		case '\r':
		default:
			c.newlines = 0
		}
	}
	return n, err
}

// upstreamErr classifies a client error: timeouts → errTimeout (504), others → errUpstream (502).
func upstreamErr(err error) error {
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, fasthttp.ErrDialTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("%w: %w", errTimeout, err)
	}
	return fmt.Errorf("%w: %w", errUpstream, err)
}
