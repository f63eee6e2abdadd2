// Package mockllm is a deterministic, fast mock of an OpenAI-compatible LLM
// provider (plus the native Anthropic Messages API).
//
// It exists for tests, for `tollgate dev` and for load benchmarks of the
// gateway, where it is the upstream "floor". It must never be imported by
// product packages (proxy, metering, billing, pricing, ...): only by tests,
// dev tooling and cmd/mockllm.
//
// The server is built on fasthttp. Request bodies are scanned with gjson and
// responses are produced by hand-written JSON appends into pooled buffers, so
// the non-streaming hot path allocates (almost) nothing. Streams are written
// synchronously on fasthttp's connection goroutine (no pipe, no extra
// goroutine per request); every SSE event is its own HTTP chunk and is
// flushed to the socket immediately.
//
// # Endpoints
//
// All endpoints live under /v1:
//
//	POST /v1/chat/completions   OpenAI chat (stream and non-stream)
//	POST /v1/completions        OpenAI legacy completions (stream and non-stream)
//	POST /v1/embeddings         OpenAI embeddings (8 dimensions; encoding_format "base64" honoured)
//	POST /v1/responses          OpenAI Responses API (stream and non-stream)
//	GET|DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items
//	                            stored responses: every resp_mock_N exists until deleted
//	                            (retrieved completed, without output; input_items empty);
//	                            other ids 404. No directives, no request count by kind.
//	POST /v1/messages           Anthropic Messages API (stream and non-stream)
//	POST /v1/messages/count_tokens  Anthropic token count: {"input_tokens":P}
//	GET  /v1/models             OpenAI model list (GET /v1/models/{id} echoes a model object)
//
// Unknown paths answer 404 and invalid JSON answers 400, both with an OpenAI
// error body {"error":{"message":..,"type":..,"param":null,"code":..}}.
// Errors on /v1/messages and /v1/messages/count_tokens use the Anthropic shape
// {"type":"error","error":{"type":..,"message":..}} instead, since that is
// what an Anthropic client expects.
//
// # Deterministic usage
//
// Words are counted like strings.Fields (runs of non-whitespace).
//
// Prompt / input tokens P:
//
//   - chat: for every element of "messages": 3 + words of its "content"
//     (a string, or an array of parts whose "text" fields are counted).
//   - completions: words of "prompt" if it is a string; for an array, the
//     words of each string element plus the number of integers of each token
//     array (a flat array of integers is one token array). No per-item
//     overhead.
//   - embeddings: like completions, over "input".
//   - responses: words of "instructions"; "input" as a plain string counts its
//     words with no overhead, an array of items counts 3 + words of each
//     item's "content" (string or array of parts with "text").
//   - messages (Anthropic): words of "system" (string or text blocks, no
//     overhead) + for every message 3 + words of its content (string or
//     blocks with "text").
//
// Directive text such as "[mock:tokens=3]" is an ordinary word of the prompt
// and is counted like any other.
//
// Completion / output tokens C: the default length is Config.OutputTokens
// (16 when zero), or N when the tokens=N directive is given. The limit is the
// smallest positive value among max_tokens, max_completion_tokens and
// max_output_tokens in the request. If the limit is smaller than the default
// length, C is the limit and the finish reason is "length" (Anthropic
// stop_reason "max_tokens"); otherwise C is the default and the finish reason
// is "stop" ("end_turn").
//
// The output text is "tok1 tok2 ... tokC". When streaming, one event is sent
// per token whose text is "tokI " (word plus space) except the last one,
// "tokC", so concatenated deltas equal the non-streaming text.
//
// Reported usage, with R = reasoning=N and X = cached=N (X capped at P):
//
//   - chat and completions: prompt_tokens P, completion_tokens C+R,
//     total_tokens P+C+R, prompt_tokens_details.cached_tokens X,
//     completion_tokens_details.reasoning_tokens R.
//   - responses: input_tokens P, input_tokens_details.cached_tokens X,
//     output_tokens C+R, output_tokens_details.reasoning_tokens R,
//     total_tokens P+C+R.
//   - messages: input_tokens P-X (Anthropic reports uncached input only),
//     cache_read_input_tokens X, cache_creation_input_tokens 0,
//     output_tokens C+R. The streamed message_start reports output_tokens 1,
//     message_delta the final C+R.
//   - embeddings: prompt_tokens P, total_tokens P.
//
// Response ids are derived from the request counter (the value returned by
// Requests() right after the request was counted): "chatcmpl-mock-N",
// "cmpl-mock-N", "resp_mock_N", "msg_mock_N". "created" is the constant
// 1700000000. The model field echoes the request's model ("mock" if absent).
//
// # Streams
//
// Chat and completions stream "data: {chunk}\n\n" events. Chat starts with a
// role chunk (delta {"role":"assistant","content":""}), then one chunk per
// token; the last token chunk carries finish_reason (with C = 0 a chunk with
// an empty delta carries it). Only when stream_options.include_usage is true
// is a final chunk with "choices":[] and "usage" sent (and every other chunk
// then has "usage":null). The stream ends with "data: [DONE]\n\n".
//
// The Responses stream sends "event: <type>\ndata: {...}\n\n" events:
// response.created, response.in_progress, response.output_item.added,
// response.content_part.added, one response.output_text.delta per token,
// response.output_text.done, response.content_part.done,
// response.output_item.done and response.completed (full response with
// usage). There is no [DONE].
//
// The Anthropic stream sends message_start, content_block_start, one
// content_block_delta (text_delta) per token, content_block_stop,
// message_delta and message_stop.
//
// # Directives
//
// A single request can be steered with the literal text "[mock:...]"
// anywhere in the request body (for example inside a message), or with the
// request header "X-Mock: ..." (the "[mock:" and "]" wrapper is optional
// there). Items are comma separated; body directives are applied first, then
// the header, later values win. Unknown or malformed directives answer 400.
//
//	status=NNN     answer status NNN (400..599) with an error body; 429 adds "Retry-After: 1"
//	hang           never answer: wait until the client closes the connection,
//	               the server is closed or 60 s passed, then drop the connection
//	cut=N          streams: send N token events, then drop the connection (no
//	               [DONE], usage chunk, response.completed or message_stop);
//	               non-streams: send the headers and half of the body, then drop
//	nousage        omit usage everywhere (including the include_usage chunk)
//	tokens=N       output N tokens instead of the default (still capped by max tokens)
//	cached=N       report N cached prompt tokens (capped at P)
//	reasoning=N    report N reasoning tokens (added to completion/output tokens)
//	delay=DUR      extra latency before the first byte (Go duration, e.g. 150ms)
//	ttft=DUR       time before the first streamed event (overrides Config.TTFT)
//	rate=N         stream pacing in tokens per second (overrides Config.TokensPerSecond; 0 = unpaced)
//
// Example: {"role":"user","content":"hi [mock:tokens=3,cached=2,status=429]"}.
//
// # Timing and failures
//
// Order of effects for a request: it is counted and recorded (Requests,
// LastRequest); unknown paths (404) and wrong methods (405) are answered;
// Config.FailEvery applies (a request whose counter value is a multiple of
// FailEvery answers 500, so with FailEvery=3 the 3rd, 6th, ... requests
// fail); directives are parsed; delay= is slept; hang, then status=, are
// honoured; finally the body is parsed and answered. Config.Latency is slept
// before successful non-streaming answers; Config.TTFT (or ttft=) before the
// first streamed event (stream headers are flushed immediately); tokens are
// then paced at Config.TokensPerSecond (or rate=). All waits end early when
// the server is closed: a pending delay or latency then answers 503, a
// pending stream or hang is dropped.
//
// # Running
//
// Start listens on 127.0.0.1:0 and StartAt on a chosen address; both return
// the base URL ("http://127.0.0.1:PORT/v1") to configure as the provider
// base URL. Handler can also be mounted on any fasthttp server.
// cmd/mockllm runs the mock as a standalone process.
package mockllm
