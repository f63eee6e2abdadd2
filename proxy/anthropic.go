package proxy

import (
	"bytes"
	"strings"

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

// Betas that widen a model's context window past the catalog's
// (context-1m-2025-08-07: Claude Sonnet reads up to 1M tokens, priced higher
// past 200K). The hold is sized to the catalog's window and rates, so a call
// under such a beta could be billed beyond it: until the catalog knows the
// extended window and its price, the gateway refuses the beta. A widening
// beta is "context-" then a digit; "context-management-…" is not one.
const wideningBetaPrefix = "context-"

// refuseWideningBetas checks every anthropic-beta value of a /v1/messages
// request (each header, each comma-separated name).
func refuseWideningBetas(h *fasthttp.RequestHeader) error {
	for _, v := range h.PeekAll("anthropic-beta") {
		if name := wideningBeta(v); name != nil {
			return invalid("anthropic-beta", "The anthropic-beta feature '%s' widens the model's context window beyond what this gateway prices and holds for it; send the request without it.", name)
		}
	}
	return nil
}

// wideningBeta returns the first context-widening name in a comma-separated
// anthropic-beta value, or nil.
func wideningBeta(v []byte) []byte {
	for len(v) > 0 {
		var name []byte
		name, v, _ = bytes.Cut(v, comma)
		name = bytes.Trim(name, " \t\"'") // a quoted name is the same name to a lenient server
		p := len(wideningBetaPrefix)
		if len(name) > p && strings.EqualFold(string(name[:p]), wideningBetaPrefix) && name[p] >= '0' && name[p] <= '9' {
			return name
		}
	}
	return nil
}

var comma = []byte(",")
