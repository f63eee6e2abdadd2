// Package proxy is Tollgate's metering reverse proxy: a fasthttp server that
// authenticates API keys, inspects each request without a full decode, prices
// it, reserves the worst case, forwards it to the model provider (relaying
// streams event by event), reads the provider's usage, and settles the exact
// charge — answering with X-Credits-* headers and OpenAI-shaped errors.
//
// It imports pricing and, for value types and sentinel errors only, metering;
// it reaches the store solely through the Meter interface it declares, so that
// tests can substitute a fake. It never talks to Stripe.
//
// # Ownership and lifetimes
//
// A *fasthttp.RequestCtx and every slice of its buffers are valid only until
// the handler returns. Inspection builds no tree of the request: what it
// returns (the model name, where rewrite splices) points into the client's
// body and shares its lifetime; the scanner's state is pooled and keeps
// nothing of a request once inspect returns. Whatever a body stream writer
// (streaming responses) needs is captured before SetBodyStreamWriter: the
// upstream response, copied strings and the request state, which the writer
// owns and releases. Pooled buffers larger than maxPooledBuf (and scanner
// tables grown for huge objects) are dropped instead of pooled. An estimate
// (tokenize.go, media.go) decodes base64 images and PDFs through a pooled
// streaming reader that holds a slice of the body only while one image or
// PDF is read, and keeps nothing of it once returned to its pool.
//
// The Server keeps one piece of state past a request: the owners of stored
// responses (Responses API) whose record is being written (responses.go),
// each dropped when its write ends (at most recordTimeout); Shutdown waits
// for those writes as for calls in flight.
//
// The live configuration (catalog, upstream clients, limiter: reload.go) is
// an immutable liveConf behind an atomic pointer; a call loads it once, at
// its start, and keeps it to its end (a streamBody holds it through its copy
// of the call), so Reload never changes what a call in flight uses. Drain
// counts metered calls in active from the handler's start to the end of
// their stream.
//
// Redis calls use context.Background(): they are bounded by the client's own
// read/write timeouts (proxy.redis_timeout), which costs no allocation per
// call. Upstream calls are bounded with DoDeadline and, for streams, by a
// per-read idle deadline on the connection. A stream's writes to its client
// are bounded too: before handing fasthttp bytes, the stream sets the
// client connection's write deadline (the idle timeout, never past the
// stream's deadline); fasthttp sets Server.WriteTimeout again before the
// connection's next answer. A streamBody keeps the client's net.Conn (never
// the RequestCtx) until fasthttp closes the body. A stream whose client left
// before its usage, on input no estimate sizes, outlives that close: a
// goroutine of its own reads the upstream on to its usage (orphan.go), never
// touching the client's response or connection again, and the stream's
// upstream response, reader and place in flight are released when that read
// ends (its deadline bounds it; Shutdown cuts it).
//
// The APIs the proxy speaks (OpenAI chat, completions, embeddings,
// moderations, Responses; Anthropic Messages) differ only through the
// dialect interface (dialect.go), one type per API in dialect_<name>.go.
//
// The Server also keeps each deployment's circuit breaker (breaker.go),
// created when a configuration first names the deployment and kept across
// reloads; closed, it costs a call two atomic loads.
//
// How a call ended is told once, when its caller has been answered (a
// stream: when it ends), to the optional Observer (metrics) and in one Info
// log line (observe.go). The caller's request id and trace context, and the
// provider's request id, are copied out of the request and response into
// the request-id slabs (ids.go): strings that outlive the handler without
// an allocation per call. The Observer keeps nothing of an event.
package proxy
