package mockllm

import (
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// modelIDs are the ids listed by GET /v1/models. Every endpoint accepts any
// model name; this list only exists for clients that discover models.
var modelIDs = []string{
	"mock-gpt",
	"mock-gpt-mini",
	"mock-reasoning",
	"mock-embedding",
	"mock-claude",
}

func appendModel(b []byte, id string) []byte {
	b = append(b, `{"id":`...)
	b = gjson.AppendJSONString(b, id)
	b = append(b, `,"object":"model","created":`...)
	b = appendInt(b, mockCreated)
	b = append(b, `,"owned_by":"mockllm"}`...)
	return b
}

func writeModels(ctx *fasthttp.RequestCtx) {
	bp := getBuf()
	b := append((*bp)[:0], `{"object":"list","data":[`...)
	for i, id := range modelIDs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, id)
	}
	b = append(b, `]}`...)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	*bp = b
	putBuf(bp)
}

// writeModel answers GET /v1/models/{id} with a model object for any id.
func writeModel(ctx *fasthttp.RequestCtx, id []byte) {
	bp := getBuf()
	b := appendModel((*bp)[:0], string(id))
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	*bp = b
	putBuf(bp)
}
