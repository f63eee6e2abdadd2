package proxy

import (
	"github.com/valyala/fasthttp"
)

// Anthropic's native API versions its wire format with request headers: the
// client's anthropic-version (its SDK pins one) and anthropic-beta (opt-in
// features) are what its code was written against, so they are forwarded on
// /v1/messages. A provider header configured for the upstream
// (Provider.Headers) is kept when the client sent none; failing both, the
// stable version is sent, which the API requires.

const defaultAnthropicVersion = "2023-06-01"

var (
	hdrAnthropicVersion = []byte("anthropic-version")
	hdrAnthropicBeta    = []byte("anthropic-beta")
)

// forwardNativeHeaders copies the client's Anthropic versioning headers onto
// an upstream request that prepare has filled.
func forwardNativeHeaders(dst *fasthttp.Request, src *fasthttp.RequestHeader) {
	if v := src.PeekBytes(hdrAnthropicVersion); len(v) > 0 {
		dst.Header.SetBytesKV(hdrAnthropicVersion, v)
	} else if len(dst.Header.PeekBytes(hdrAnthropicVersion)) == 0 {
		dst.Header.SetBytesK(hdrAnthropicVersion, defaultAnthropicVersion)
	}
	if v := src.PeekBytes(hdrAnthropicBeta); len(v) > 0 {
		dst.Header.SetBytesKV(hdrAnthropicBeta, v)
	}
}
