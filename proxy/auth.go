package proxy

import (
	"bytes"
	"context"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/metering"
)

var (
	strBearer  = []byte("Bearer ")
	hdrAPIKey  = []byte("x-api-key")
	hdrAuthKey = []byte("Authorization")
)

// apiKey returns the key a client sent: "Authorization: Bearer <key>" (OpenAI
// SDKs) or "x-api-key: <key>" (Anthropic SDKs).
func apiKey(ctx *fasthttp.RequestCtx) []byte {
	if h := ctx.Request.Header.PeekBytes(hdrAuthKey); len(h) > 0 {
		if len(h) > len(strBearer) && bytes.EqualFold(h[:len(strBearer)], strBearer) {
			return bytes.TrimSpace(h[len(strBearer):])
		}
		return nil
	}
	return bytes.TrimSpace(ctx.Request.Header.PeekBytes(hdrAPIKey))
}

// authenticate resolves the caller's key. Keys longer than any we issue are
// refused without a lookup.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx) (metering.Identity, error) {
	key := apiKey(ctx)
	if len(key) == 0 {
		return metering.Identity{}, errNoKey
	}
	if len(key) > 256 {
		return metering.Identity{}, metering.ErrBadKey
	}
	return s.meter.Authenticate(context.Background(), key)
}
