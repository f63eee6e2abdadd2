package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"image"
	_ "image/gif" // image.DecodeConfig: the formats the providers take
	_ "image/jpeg"
	_ "image/png"
	"io"
	"strings"
	"sync"

	"github.com/valyala/fastjson"
	_ "golang.org/x/image/webp"
)

// Images and documents in an estimate.
//
// An estimate (tokenize.go) runs when the provider reported no usage: a
// stream the client cut before the final usage event, or an answer without
// usage. The text of a request is tokenized; what is not text is counted
// here, by what the provider bills for it, and never below:
//
//   - An image carried in the body (a data: URL, Anthropic's base64 source)
//     is counted by its dimensions, read from its header (image.DecodeConfig:
//     PNG, JPEG, GIF, WebP), with the formula of the provider that serves
//     the call and of the model (imageCost). An image the body does not
//     carry (a URL, a file id), or whose header does not decode, counts the
//     most the model's provider bills for one: imageTokens, or more for the
//     OpenAI models whose images cost more tokens (imageRules).
//   - A PDF carried in the body is counted by its pages (pdfPages) at
//     pdfPageTokens each (its text, and its image as an image of unknown
//     size); a plain-text document (Anthropic's text or content
//     source, a text/* data URL) by its text, tokenized.
//   - A file or document the body does not carry — by id or URL, or a PDF
//     whose pages cannot be counted — cannot be measured. The hold assumed the model's whole context window for
//     such a call (inputTokens in limit.go; remote.go says why), and the
//     largest document a provider accepts (100 PDF pages at pdfPageTokens)
//     is past every window, so the estimate is that window: never less than
//     what was held for it.
//
// The work is bounded by the body (already in memory): base64 is decoded
// as a stream through a pooled reader, a PDF is scanned once, and its
// compressed object streams are inflated up to maxInflate bytes.

const (
	// imageTokens is what an image counts when its dimensions are unknown
	// (at least): what the dearest provider bills for an image at its
	// largest default size (Anthropic: at most about 1,600 tokens, its
	// images being scaled to 1.15 megapixels; gpt-4o's high detail is at
	// most 1,445, 8 tiles).
	imageTokens = 1600

	// pdfPageTokens is what a PDF page counts (with a model whose images
	// cost no more than imageTokens). Providers bill each page as its
	// extracted text plus an image of the page (Anthropic, "PDF support":
	// "typically 1,500-3,000 tokens per page" of text, plus the page's image
	// at its image rates; OpenAI's file inputs likewise extract the text and
	// an image of each page). The upper text figure plus an image of unknown
	// size (mediaEstimate.unsized): 3,000 + 1,600, more for the OpenAI
	// models whose images cost more.
	pdfPageText   = 3000
	pdfPageTokens = pdfPageText + imageTokens

	// Anthropic's image formula ("Vision: calculate image costs"): an image
	// whose long edge is past 1568 px, or that is past about 1,600 tokens
	// (1.15 megapixels), is first scaled down keeping its aspect ratio; it
	// then costs width × height / 750 tokens.
	anthropicMaxEdge      = 1568
	anthropicPixelsPerTok = 750
	anthropicMaxTokens    = imageTokens

	// OpenAI's image formulas ("Images and vision: calculating costs").
	// Tile models (gpt-4o, o-series): detail "low" is the base figure;
	// otherwise the image is scaled to fit a 2048 × 2048 square, then (when
	// larger) so that its shortest side is 768 px, and costs a figure per
	// 512 px tile it covers plus the base: 170 and 85 for gpt-4o, 5,667 and
	// 2,833 for gpt-4o-mini (the same price per image at its lower rate).
	// Patch models (gpt-4.1, its mini and nano, o4-mini, gpt-5 mini and
	// nano): one token per 32 px patch covering the image, at most 1,536
	// patches (larger images are scaled down to fit), times the model's
	// multiplier (1.62 mini, 2.46 nano, 1.72 o4-mini).
	openAIBaseTokens = 85
	openAITileTokens = 170
	openAIMaxSquare  = 2048
	openAIShortSide  = 768
	openAITile       = 512
	openAIMaxTiles   = 2 * 4 // 768 × 2048 at most
	openAIPatch      = 32
	openAIMaxPatches = 1536

	// maxInflate bounds the bytes inflated from a PDF's compressed object
	// streams (a zip bomb costs no more than this to scan).
	maxInflate = 64 << 20
)

// mediaEstimate counts the non-text input of one request. Its zero value
// is not ready: est must be set. It lives for one estimate.
type mediaEstimate struct {
	anthropic bool      // Anthropic's formulas only (its API, or its provider, serves the call)
	openAI    imageRule // how the model counts an image at OpenAI
	tokens    int64     // images and PDF pages
	unknown   bool      // input the body does not carry (see above)
}

// walk counts every image, file and document part of v, at any depth, in
// any dialect's shape, and appends the text of text documents to text.
func (m *mediaEstimate) walk(text []byte, v *fastjson.Value) []byte {
	switch v.Type() {
	case fastjson.TypeObject:
		switch string(v.GetStringBytes("type")) {
		case "image_url", "input_image", "image":
			m.tokens += m.image(v)
		case "file", "input_file":
			text = m.file(text, v)
		case "document":
			text = m.document(text, v)
		}
		v.GetObject().Visit(func(_ []byte, c *fastjson.Value) { text = m.walk(text, c) })
	case fastjson.TypeArray:
		for _, c := range v.GetArray() {
			text = m.walk(text, c)
		}
	}
	return text
}

// image is what an image part costs: chat's {"image_url":{"url","detail"}},
// Responses' {"image_url":"…","detail"}, Anthropic's {"source":{…}}.
func (m *mediaEstimate) image(v *fastjson.Value) int64 {
	var data []byte // base64
	detail := v.GetStringBytes("detail")
	switch u := v.Get("image_url"); {
	case u != nil && u.Type() == fastjson.TypeString:
		data = dataURLBase64(u.GetStringBytes(), "image/")
	case u != nil && u.Type() == fastjson.TypeObject:
		data = dataURLBase64(u.GetStringBytes("url"), "image/")
		detail = u.GetStringBytes("detail")
	default:
		if s := v.Get("source"); s != nil && string(s.GetStringBytes("type")) == "base64" {
			data = s.GetStringBytes("data")
		}
	}
	if data == nil {
		return m.unsized()
	}
	w, h, ok := imageSize(data)
	if !ok {
		return m.unsized()
	}
	return imageCost(w, h, string(detail) == "low", m.anthropic, m.openAI)
}

// unsized is what an image of unknown size costs: the most the provider
// bills for one.
func (m *mediaEstimate) unsized() int64 {
	if m.anthropic {
		return imageTokens
	}
	return max(imageTokens, m.openAI.maxTokens())
}

// imageCost is what an image of w × h pixels costs. Served by Anthropic, it
// is Anthropic's formula; otherwise the call may reach OpenAI or another
// OpenAI-compatible provider (Anthropic's among them), and it is the larger
// of the two formulas. low is OpenAI's detail "low"; r the model's rule.
func imageCost(w, h int64, low, anthropic bool, r imageRule) int64 {
	a := anthropicImageTokens(w, h)
	if anthropic {
		return a
	}
	return max(a, openAIImageTokens(w, h, low, r))
}

// imageRule is how an OpenAI model counts an image; the zero value is
// gpt-4o's tiles.
type imageRule struct {
	patchMilli int64 // patch models: tokens per patch, in thousandths (0: a tile model)
	base, tile int64 // tile models: the base and per-tile figures (0: gpt-4o's)
}

// imageRules are the OpenAI models whose images cost more tokens than
// gpt-4o's tiles, by the prefix of their names (the first match wins:
// longer prefixes first).
var imageRules = [...]struct {
	prefix string
	rule   imageRule
}{
	{"gpt-4o-mini", imageRule{base: 2833, tile: 5667}},
	{"gpt-4.1-mini", imageRule{patchMilli: 1620}},
	{"gpt-4.1-nano", imageRule{patchMilli: 2460}},
	{"gpt-4.1", imageRule{patchMilli: 1000}},
	{"gpt-5-mini", imageRule{patchMilli: 1620}},
	{"gpt-5-nano", imageRule{patchMilli: 2460}},
	{"o4-mini", imageRule{patchMilli: 1720}},
}

// imageRuleFor is the rule of a model name ("openai/" style prefixes
// ignored).
func imageRuleFor(name string) imageRule {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.ToLower(name)
	for _, r := range imageRules {
		if strings.HasPrefix(name, r.prefix) {
			return r.rule
		}
	}
	return imageRule{}
}

func (r imageRule) figures() (base, tile int64) {
	if r.base == 0 && r.tile == 0 {
		return openAIBaseTokens, openAITileTokens
	}
	return r.base, r.tile
}

// maxTokens is the most an image costs under the rule.
func (r imageRule) maxTokens() int64 {
	if r.patchMilli > 0 {
		return ceilDiv(openAIMaxPatches*r.patchMilli, 1000)
	}
	base, tile := r.figures()
	return base + tile*openAIMaxTiles
}

// anthropicImageTokens: scaled to fit a 1568 px long edge (rounded up, so
// never below the provider's count), w × h / 750 rounded up, at most the
// 1,600 an image scaled to 1.15 megapixels costs.
func anthropicImageTokens(w, h int64) int64 {
	if w <= 0 || h <= 0 {
		return imageTokens
	}
	if long := max(w, h); long > anthropicMaxEdge {
		w, h = ceilDiv(w*anthropicMaxEdge, long), ceilDiv(h*anthropicMaxEdge, long)
	}
	return min(ceilDiv(w*h, anthropicPixelsPerTok), anthropicMaxTokens)
}

// openAIImageTokens: OpenAI's formula for the model's rule. Scaled sizes
// are rounded up, so that a tile boundary never rounds a tile away. A tile
// model never scales an image up (an image smaller than 768 px keeps its
// size: 512 × 512 is one tile). A patch model's scaling to 1,536 patches is
// counted as the cap itself, which it never exceeds; "low" does not apply.
func openAIImageTokens(w, h int64, low bool, r imageRule) int64 {
	if w <= 0 || h <= 0 {
		return max(imageTokens, r.maxTokens())
	}
	if r.patchMilli > 0 {
		patches := min(ceilDiv(w, openAIPatch)*ceilDiv(h, openAIPatch), openAIMaxPatches)
		return ceilDiv(patches*r.patchMilli, 1000)
	}
	base, tile := r.figures()
	if low {
		return base
	}
	if long := max(w, h); long > openAIMaxSquare {
		w, h = ceilDiv(w*openAIMaxSquare, long), ceilDiv(h*openAIMaxSquare, long)
	}
	if short := min(w, h); short > openAIShortSide {
		w, h = ceilDiv(w*openAIShortSide, short), ceilDiv(h*openAIShortSide, short)
	}
	return base + tile*ceilDiv(w, openAITile)*ceilDiv(h, openAITile)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// maxImageSide bounds the dimensions an image header may claim (the
// providers refuse far smaller images; the products above stay exact).
const maxImageSide = 1 << 20

// imageSize reads an image's dimensions from the header of its base64
// data, decoding no more of it than the header.
func imageSize(b64 []byte) (w, h int64, ok bool) {
	r := getB64Reader(b64)
	defer putB64Reader(r)
	cfg, _, err := image.DecodeConfig(r.br)
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxImageSide || cfg.Height > maxImageSide {
		return 0, 0, false
	}
	return int64(cfg.Width), int64(cfg.Height), true
}

// file is a chat {"type":"file","file":{"file_data"|"file_id"}} or a
// Responses {"type":"input_file","file_data"|"file_id"|"file_url"} part.
func (m *mediaEstimate) file(text []byte, v *fastjson.Value) []byte {
	f := v
	if inner := v.Get("file"); inner != nil && inner.Type() == fastjson.TypeObject {
		f = inner
	}
	data := f.GetStringBytes("file_data")
	if data == nil {
		m.unknown = true // by id or URL
		return text
	}
	media, b64 := splitDataURL(data)
	if media == nil { // bare base64: what it is shows in its bytes
		b64 = data
	}
	return m.inline(text, media, b64)
}

// document is an Anthropic {"type":"document","source":{…}} block: base64
// (a PDF), text, content (blocks, whose images walk counts), or a URL or
// file the body does not carry. Its title and context are text too.
func (m *mediaEstimate) document(text []byte, v *fastjson.Value) []byte {
	text = append(text, v.GetStringBytes("title")...)
	text = append(text, v.GetStringBytes("context")...)
	s := v.Get("source")
	switch string(s.GetStringBytes("type")) {
	case "base64":
		return m.inline(text, s.GetStringBytes("media_type"), s.GetStringBytes("data"))
	case "text":
		return append(text, s.GetStringBytes("data")...)
	case "content":
		c := s.Get("content")
		if c != nil && c.Type() == fastjson.TypeString {
			return append(text, c.GetStringBytes()...)
		}
		return appendRequestContent(text, c)
	}
	m.unknown = true // "url", "file", or a source this gateway does not know
	return text
}

// inline counts a file carried in the body as base64: text/* is text, a PDF
// (by its media type or its first bytes) is its pages; anything else, or a
// PDF whose pages cannot be counted, is input of unknown size.
func (m *mediaEstimate) inline(text, media, b64 []byte) []byte {
	if bytes.HasPrefix(media, []byte("text/")) {
		return appendBase64(text, b64)
	}
	if pages := pdfPages(b64); pages > 0 {
		m.tokens += pages * (pdfPageText + m.unsized())
		return text
	}
	m.unknown = true
	return text
}

// appendBase64 appends the decoded base64 b64 (as much as decodes).
func appendBase64(dst, b64 []byte) []byte {
	r := getB64Reader(b64)
	defer putB64Reader(r)
	var chunk [4096]byte
	for {
		n, err := r.br.Read(chunk[:])
		dst = append(dst, chunk[:n]...)
		if err != nil {
			return dst
		}
	}
}

// dataURLBase64 is the base64 data of a data: URL whose media type starts
// with prefix; nil for anything else (an http URL).
func dataURLBase64(u []byte, prefix string) []byte {
	media, b64 := splitDataURL(u)
	if media == nil || !bytes.HasPrefix(media, []byte(prefix)) {
		return nil
	}
	return b64
}

// splitDataURL splits "data:<media>[;params];base64,<data>"; media is nil
// when u is not a base64 data: URL.
func splitDataURL(u []byte) (media, b64 []byte) {
	rest, ok := bytes.CutPrefix(u, []byte("data:"))
	if !ok {
		return nil, nil
	}
	head, data, ok := bytes.Cut(rest, []byte(","))
	if !ok || !bytes.HasSuffix(head, []byte(";base64")) {
		return nil, nil
	}
	media, _, _ = bytes.Cut(head, []byte(";"))
	return media[:len(media):len(media)], data
}

// b64Reader decodes base64 text as a stream: pooled, with its buffered
// reader, for one decode at a time.
type b64Reader struct {
	src bytes.Reader
	br  *bufio.Reader
}

var b64Pool = sync.Pool{New: func() any {
	r := &b64Reader{}
	r.br = bufio.NewReaderSize(nil, 4096)
	return r
}}

// getB64Reader decodes b64 (the standard alphabet the providers take; line
// breaks ignored). Decoding stops at the first byte that is not base64.
func getB64Reader(b64 []byte) *b64Reader {
	r := b64Pool.Get().(*b64Reader)
	r.src.Reset(b64)
	r.br.Reset(base64.NewDecoder(base64.StdEncoding, &r.src))
	return r
}

func putB64Reader(r *b64Reader) {
	r.src.Reset(nil)
	r.br.Reset(nil)
	b64Pool.Put(r)
}

var _ io.ByteReader = (*bufio.Reader)(nil) // pdfPages hands it to zlib, which then reads exactly its stream
