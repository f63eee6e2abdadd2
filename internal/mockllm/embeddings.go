package mockllm

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// embeddingDims is the length of every mock embedding.
const embeddingDims = 8

// embeddings answers /v1/embeddings: one deterministic vector per input
// (a string, a token array, or each element of an array of those).
func (s *Server) embeddings(ctx *fasthttp.RequestCtx, n int64, req *request, d *directives) {
	if s.cfg.Latency > 0 && !s.sleep(s.cfg.Latency) {
		writeClosing(ctx, kindEmbeddings)
		return
	}
	bp := getBuf()
	b := append((*bp)[:0], `{"object":"list","data":[`...)
	idx := 0
	in := req.input
	switch {
	case in.Type == gjson.String:
		b = appendEmbedding(b, idx, in.Raw, req.base64)
	case in.IsArray():
		first := true
		in.ForEach(func(_, e gjson.Result) bool {
			if first && e.Type == gjson.Number {
				// A flat token array is a single input.
				b = appendEmbedding(b, idx, in.Raw, req.base64)
				return false
			}
			first = false
			if idx > 0 {
				b = append(b, ',')
			}
			b = appendEmbedding(b, idx, e.Raw, req.base64)
			idx++
			return true
		})
	}
	b = append(b, `],"model":`...)
	b = append(b, req.model...)
	if !d.noUsage {
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = appendInt(b, int64(req.prompt))
		b = append(b, `,"total_tokens":`...)
		b = appendInt(b, int64(req.prompt))
		b = append(b, '}')
	}
	b = append(b, '}')
	writeJSON(ctx, b, d)
	*bp = b
	putBuf(bp)
}

// appendEmbedding appends one embedding object whose vector is derived from
// the raw JSON of its input (FNV-1a seeded splitmix64), in [-1, 1).
func appendEmbedding(b []byte, idx int, raw string, b64 bool) []byte {
	b = append(b, `{"object":"embedding","index":`...)
	b = appendInt(b, int64(idx))
	b = append(b, `,"embedding":`...)

	h := uint64(14695981039346656037)
	for i := 0; i < len(raw); i++ {
		h ^= uint64(raw[i])
		h *= 1099511628211
	}
	var vec [embeddingDims]float32
	for i := range vec {
		h += 0x9e3779b97f4a7c15
		z := h
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		vec[i] = float32(z>>40)/float32(1<<24)*2 - 1
	}

	if b64 {
		var raw [embeddingDims * 4]byte
		for i, f := range vec {
			binary.LittleEndian.PutUint32(raw[i*4:], math.Float32bits(f))
		}
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, raw[:])
		b = append(b, '"')
	} else {
		b = append(b, '[')
		for i, f := range vec {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}
