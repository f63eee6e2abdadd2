package proxy

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// testPDF hand-writes a minimal PDF of n pages: a catalog, a page tree
// whose /Count is count, and n page objects written with sep between
// "/Type" and "/Page" ("" or " ").
func testPDF(n, count int, sep string) []byte {
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
	fmt.Fprintf(&b, "2 0 obj\n<< /Type%s/Pages /Kids [", sep)
	for i := range n {
		fmt.Fprintf(&b, "%d 0 R ", 3+i)
	}
	fmt.Fprintf(&b, "] /Count %d >>\nendobj\n", count)
	for i := range n {
		fmt.Fprintf(&b, "%d 0 obj\n<</Type%s/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Contents %d 0 R>>\nendobj\n", 3+i, sep, 3+n+i)
		fmt.Fprintf(&b, "%d 0 obj\n<< /Length 44 >>\nstream\nBT /F1 24 Tf 72 700 Td (Page %03d) Tj ET\nendstream\nendobj\n", 3+n+i, i+1)
	}
	b.WriteString("trailer\n<< /Root 1 0 R >>\n%%EOF\n")
	return b.Bytes()
}

// testObjStmPDF is a PDF 1.5 whose page tree and pages are all packed in a
// compressed object stream: only inflating it shows them.
func testObjStmPDF(n int) []byte {
	var objs bytes.Buffer
	fmt.Fprintf(&objs, "<< /Type /Pages /Kids [] /Count %d >>\n", n)
	for range n {
		objs.WriteString("<< /Type /Page /Parent 2 0 R >>\n")
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(objs.Bytes())
	zw.Close()
	var b bytes.Buffer
	b.WriteString("%PDF-1.5\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
	fmt.Fprintf(&b, "5 0 obj\n<< /Type /ObjStm /N %d /First 0 /Filter /FlateDecode /Length %d >>\nstream\r\n", n+1, z.Len())
	b.Write(z.Bytes())
	b.WriteString("\r\nendstream\nendobj\n%%EOF\n")
	return b.Bytes()
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestPDFPages(t *testing.T) {
	wrapped := func(s string) string { // base64 with line breaks (MIME style), as JSON "\n" escapes decode to
		var b strings.Builder
		for len(s) > 76 {
			b.WriteString(s[:76] + "\r\n")
			s = s[76:]
		}
		return b.String() + s
	}
	cases := []struct {
		name string
		b64  string
		want int64
	}{
		{"three pages", b64(testPDF(3, 3, " ")), 3},
		{"no whitespace: /Type/Page, and /Pages is no page", b64(testPDF(5, 5, "")), 5},
		{"page objects win over a smaller /Count", b64(testPDF(4, 1, " ")), 4},
		{"/Count when page objects do not show", b64(testPDF(0, 7, " ")), 7},
		{"compressed object stream", b64(testObjStmPDF(12)), 12},
		{"line breaks in the base64", wrapped(b64(testPDF(30, 30, " "))), 30},
		{"junk before the header", b64(append([]byte("\x00\x01junk"), testPDF(2, 2, " ")...)), 2},
		{"not a PDF", b64([]byte("hello, this is text /Type /Page")), 0},
		{"not base64", "%%%not base64%%%", 0},
		{"empty", "", 0},
		{"truncated: the page tree's /Count", b64(testPDF(6, 6, " ")[:300]), 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := pdfPages([]byte(tc.b64)); got != tc.want {
				t.Fatalf("pdfPages = %d, want %d", got, tc.want)
			}
		})
	}
}

// Every token split at every chunk boundary still counts: the lexer is fed
// one byte at a time whatever the chunking.
func TestPDFLexerAcrossChunks(t *testing.T) {
	pdf := testPDF(9, 9, "")
	var l pdfLexer
	for _, c := range pdf {
		l.feed(c)
	}
	if l.pages != 9 || l.maxCount != 9 {
		t.Fatalf("pages %d count %d", l.pages, l.maxCount)
	}
}

func encodeImage(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var b bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&b, img)
	case "jpeg":
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 50})
	case "gif":
		err = gif.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testWebP is a WebP VP8X (extended) header of w × h: the canvas size is
// all DecodeConfig reads.
func testWebP(w, h int) []byte {
	chunk := make([]byte, 10)
	put24 := func(b []byte, v int) { b[0], b[1], b[2] = byte(v), byte(v>>8), byte(v>>16) }
	put24(chunk[4:], w-1)
	put24(chunk[7:], h-1)
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(4+8+len(chunk)))
	b.WriteString("WEBPVP8X")
	binary.Write(&b, binary.LittleEndian, uint32(len(chunk)))
	b.Write(chunk)
	return b.Bytes()
}

func TestImageSize(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		w, h int64
		ok   bool
	}{
		{"png", encodeImage(t, "png", 800, 600), 800, 600, true},
		{"jpeg", encodeImage(t, "jpeg", 1920, 1080), 1920, 1080, true},
		{"gif", encodeImage(t, "gif", 31, 517), 31, 517, true},
		{"webp vp8x", testWebP(4000, 3000), 4000, 3000, true},
		{"not an image", []byte("GIF87 but not really"), 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, h, ok := imageSize([]byte(b64(tc.data)))
			if w != tc.w || h != tc.h || ok != tc.ok {
				t.Fatalf("imageSize = %d×%d %v, want %d×%d %v", w, h, ok, tc.w, tc.h, tc.ok)
			}
		})
	}
}

// The providers' formulas, with their documented examples.
func TestImageCost(t *testing.T) {
	cases := []struct {
		name         string
		w, h         int64
		low          bool
		anthropic    int64 // Anthropic's formula
		openAI       int64 // OpenAI's tile formula
		openAIServed int64 // an OpenAI-compatible provider: the larger
	}{
		// Anthropic's table: 200×200 ≈ 54, 1000×1000 ≈ 1334, 1092×1092 ≈ 1590.
		{"200 square", 200, 200, false, 54, 255, 255},
		{"1000 square", 1000, 1000, false, 1334, 765, 1334},
		{"1092 square", 1092, 1092, false, 1590, 765, 1590},
		// OpenAI's examples: 1024 square high = 765; 2048×4096 high = 1105.
		{"1024 square", 1024, 1024, false, 1399, 765, 1399},
		{"2048×4096", 2048, 4096, false, 1600, 1105, 1600},
		{"4096×8192 low", 4096, 8192, true, 1600, 85, 1600},
		{"512 square is one tile", 512, 512, false, 350, 255, 350},
		{"long edge past 1568", 3000, 100, false, 111, 85 + 170*4, 765},
		{"1×1", 1, 1, false, 1, 255, 255},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := anthropicImageTokens(tc.w, tc.h); got != tc.anthropic {
				t.Errorf("anthropic = %d, want %d", got, tc.anthropic)
			}
			if got := openAIImageTokens(tc.w, tc.h, tc.low, imageRule{}); got != tc.openAI {
				t.Errorf("openai = %d, want %d", got, tc.openAI)
			}
			if got := imageCost(tc.w, tc.h, tc.low, true, imageRule{}); got != tc.anthropic {
				t.Errorf("served by anthropic = %d, want %d", got, tc.anthropic)
			}
			if got := imageCost(tc.w, tc.h, tc.low, false, imageRule{}); got != tc.openAIServed {
				t.Errorf("served by an OpenAI-compatible provider = %d, want %d", got, tc.openAIServed)
			}
		})
	}
}

// OpenAI's models that count an image in more tokens than gpt-4o: their
// rules, by name, with the figures of OpenAI's guide.
func TestOpenAIImageRules(t *testing.T) {
	cases := []struct {
		model string
		w, h  int64
		low   bool
		want  int64
	}{
		{"gpt-4o", 1024, 1024, false, 765},
		{"gpt-4o-2024-08-06", 768, 2048, false, 85 + 170*8},
		{"gpt-4o-mini", 1024, 1024, false, 2833 + 5667*4},
		{"openai/gpt-4o-mini-2024-07-18", 1024, 1024, true, 2833},
		{"gpt-4.1", 1024, 1024, false, 1024},                 // 32 × 32 patches
		{"gpt-4.1", 1800, 2400, false, 1536},                 // past the cap: the cap
		{"gpt-4.1-mini", 1024, 1024, false, 1659},            // 1,024 × 1.62 = 1,658.88
		{"gpt-4.1-mini-2025-04-14", 4000, 3000, false, 2489}, // 1,536 × 1.62 = 2,488.32
		{"gpt-4.1-nano", 100, 100, false, 40},                // 16 patches × 2.46 = 39.36
		{"o4-mini", 512, 512, true, 441},                     // 256 × 1.72 = 440.32; low does not apply
		{"gpt-5-nano", 64, 64, false, 10},                    // 4 × 2.46 = 9.84
	}
	for _, tc := range cases {
		t.Run(tc.model, func(t *testing.T) {
			if got := openAIImageTokens(tc.w, tc.h, tc.low, imageRuleFor(tc.model)); got != tc.want {
				t.Fatalf("%d×%d: %d tokens, want %d", tc.w, tc.h, got, tc.want)
			}
		})
	}
	// An image of unknown size counts the most the model bills for one.
	for model, want := range map[string]int64{"gpt-4o": imageTokens, "gpt-4.1": imageTokens, "gpt-4.1-nano": 3779, "gpt-4o-mini": 2833 + 5667*8} {
		m := mediaEstimate{openAI: imageRuleFor(model)}
		if got := m.unsized(); got != want {
			t.Errorf("%s: an image by URL counts %d, want %d", model, got, want)
		}
		if got := m.tokens; got != 0 {
			t.Fatal(got)
		}
		m.inline(nil, []byte("application/pdf"), []byte(b64(testPDF(2, 2, " "))))
		if got := m.tokens; got != 2*(pdfPageText+want) {
			t.Errorf("%s: a 2-page PDF counts %d, want 2 × (%d + %d)", model, got, pdfPageText, want)
		}
		m.anthropic, m.tokens = true, 0
		if got := m.unsized(); got != imageTokens {
			t.Errorf("%s served by Anthropic: %d", model, got)
		}
	}
}

// An estimate counts each image, file and document by what the provider
// bills: exactly the text of the same request without it, plus its tokens.
func TestRequestTokensMedia(t *testing.T) {
	pdf3 := b64(testPDF(3, 3, " "))
	png800 := b64(encodeImage(t, "png", 800, 600)) // anthropic 640, openai 85+170*4 = 765
	jpg1092 := b64(encodeImage(t, "jpeg", 1092, 1092))
	const window = 128000
	chat := func(part string) string {
		return `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Summarize this, please."}` + part + `]}]}`
	}
	responses := func(part string) string {
		return `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"Summarize this, please."}` + part + `]}]}`
	}
	messages := func(part string) string {
		return `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"text","text":"Summarize this, please."}` + part + `]}]}`
	}
	cases := []struct {
		name      string
		d         dialect
		body      func(string) string
		part      string
		extraText string // text the part adds, tokenized
		anthropic bool
		want      int64 // tokens beside the text; -1: the window
	}{
		{"chat pdf file_data", dialectChat, chat, `,{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,` + pdf3 + `"}}`, "", false, 3 * pdfPageTokens},
		{"chat pdf bare base64", dialectChat, chat, `,{"type":"file","file":{"filename":"a.pdf","file_data":"` + pdf3 + `"}}`, "", false, 3 * pdfPageTokens},
		{"chat file_id", dialectChat, chat, `,{"type":"file","file":{"file_id":"file-abc"}}`, "", false, -1},
		{"chat text file", dialectChat, chat, `,{"type":"file","file":{"file_data":"data:text/plain;base64,` + b64([]byte("the quick brown fox")) + `"}}`, "the quick brown fox", false, 0},
		{"chat png", dialectChat, chat, `,{"type":"image_url","image_url":{"url":"data:image/png;base64,` + png800 + `"}}`, "", false, 765},
		{"chat png low detail", dialectChat, chat, `,{"type":"image_url","image_url":{"url":"data:image/png;base64,` + png800 + `","detail":"low"}}`, "", false, 640},
		{"chat png by anthropic", dialectChat, chat, `,{"type":"image_url","image_url":{"url":"data:image/png;base64,` + png800 + `"}}`, "", true, 640},
		{"chat image url", dialectChat, chat, `,{"type":"image_url","image_url":{"url":"https://x/a.png"}}`, "", false, imageTokens},
		{"chat undecodable image", dialectChat, chat, `,{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}`, "", false, imageTokens},
		{"responses pdf", dialectResponses, responses, `,{"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,` + pdf3 + `"}`, "", false, 3 * pdfPageTokens},
		{"responses file_url", dialectResponses, responses, `,{"type":"input_file","file_url":"https://x/a.pdf"}`, "", false, -1},
		{"responses file_id", dialectResponses, responses, `,{"type":"input_file","file_id":"file-abc"}`, "", false, -1},
		{"responses jpeg", dialectResponses, responses, `,{"type":"input_image","image_url":"data:image/jpeg;base64,` + jpg1092 + `"}`, "", false, 1590},
		{"messages pdf", dialectMessages, messages, `,{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"` + pdf3 + `"}}`, "", true, 3 * pdfPageTokens},
		{"messages text document", dialectMessages, messages, `,{"type":"document","title":"Fox","source":{"type":"text","media_type":"text/plain","data":"the quick brown fox"}}`, "Foxthe quick brown fox", true, 0},
		{"messages content document", dialectMessages, messages, `,{"type":"document","source":{"type":"content","content":[{"type":"text","text":"the quick brown fox"},{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"` + jpg1092 + `"}}]}}`, "the quick brown fox", true, 1590},
		{"messages url document", dialectMessages, messages, `,{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}`, "", true, -1},
		{"messages file document", dialectMessages, messages, `,{"type":"document","source":{"type":"file","file_id":"file_abc"}}`, "", true, -1},
		{"messages base64 image", dialectMessages, messages, `,{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + png800 + `"}}`, "", true, 640},
		{"messages unreadable pdf", dialectMessages, messages, `,{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"` + b64([]byte("%PDF-1.7 but nothing")) + `"}}`, "", true, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := estimator{enc: encO200K, anthropic: tc.anthropic, window: window}
			base := requestTokens(e, tc.d, []byte(tc.body("")))
			if base > 20 {
				t.Fatalf("base %d", base)
			}
			want := tc.want
			switch {
			case want < 0:
				want = window
			default:
				want += base
				if tc.extraText != "" {
					bp := getBuf()
					text, _, _ := requestText((*bp)[:0], tc.d, mustParse(t, tc.body("")))
					text = append(text, tc.extraText...)
					want = countTokens(encO200K, text) + 1*tokensPerMessage + tokensReplyPrime + tc.want
					putBuf(bp)
				}
			}
			if got := requestTokens(e, tc.d, []byte(tc.body(tc.part))); got != want {
				t.Fatalf("estimate %d, want %d (text alone %d)", got, want, base)
			}
		})
	}
}

// Pages never take an estimate past the window the hold assumed.
func TestRequestTokensMediaCappedAtWindow(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"data:application/pdf;base64,` + b64(testPDF(40, 40, " ")) + `"}}]}]}`
	e := estimator{enc: encO200K, window: 100_000}
	if got := requestTokens(e, dialectChat, []byte(body)); got != 100_000 {
		t.Fatalf("estimate %d, want the window", got)
	}
	e.window = 1_000_000
	if got := requestTokens(e, dialectChat, []byte(body)); got < 40*pdfPageTokens || got > 40*pdfPageTokens+20 {
		t.Fatalf("estimate %d, want 40 pages", got)
	}
}

func BenchmarkPDFPages(b *testing.B) {
	pdf := []byte(b64(testPDF(100, 100, " ")))
	b.SetBytes(int64(len(pdf)))
	b.ReportAllocs()
	for b.Loop() {
		pdfPages(pdf)
	}
}

func BenchmarkImageSize(b *testing.B) {
	img := []byte(b64(encodeImage(b, "jpeg", 1024, 768)))
	b.ReportAllocs()
	for b.Loop() {
		imageSize(img)
	}
}

// FuzzPDFPages: any bytes, as base64 or raw, end in a count without panic,
// and a PDF's count never falls below the pages it was written with.
func FuzzPDFPages(f *testing.F) {
	f.Add(testPDF(3, 3, " "), uint8(0))
	f.Add(testPDF(2, 5, ""), uint8(1))
	f.Add(testObjStmPDF(4), uint8(2))
	f.Add([]byte("%PDF-1.7\n/Type /Page /Type/Pages /Count 99999999999999999999 stream\r\n"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		in := []byte(b64(data))
		if mode&1 != 0 {
			in = data // raw: not base64
		}
		n := pdfPages(in)
		if n < 0 || n > maxPDFCount+int64(len(data)) {
			t.Fatalf("pdfPages = %d for %d bytes", n, len(data))
		}
	})
}

// FuzzImageSize: a header that claims any size is read without panic, and
// what it yields prices within the formulas' bounds.
func FuzzImageSize(f *testing.F) {
	f.Add(encodeImage(f, "png", 3, 2))
	f.Add(encodeImage(f, "jpeg", 17, 9))
	f.Add(encodeImage(f, "gif", 5, 5))
	f.Add(testWebP(4000, 3000))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, h, ok := imageSize([]byte(b64(data)))
		if !ok {
			return
		}
		if w <= 0 || h <= 0 || w > maxImageSide || h > maxImageSide {
			t.Fatalf("size %d×%d", w, h)
		}
		if c := imageCost(w, h, false, false, imageRule{}); c < openAIBaseTokens || c > imageTokens {
			t.Fatalf("cost %d for %d×%d", c, w, h)
		}
	})
}

func mustParse(t testing.TB, body string) *fastjson.Value {
	t.Helper()
	v, err := fastjson.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Concurrent estimates share the pooled base64 readers and agree with one
// made alone (run with -race).
func TestRequestTokensMediaConcurrent(t *testing.T) {
	bodies := []string{
		`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"data:application/pdf;base64,` + b64(testPDF(7, 7, " ")) + `"}}]}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64(encodeImage(t, "png", 640, 480)) + `"}}]}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"data:application/pdf;base64,` + b64(testObjStmPDF(5)) + `"}}]}]}`,
	}
	e := estimator{enc: encCL100K, window: 1 << 20}
	want := make([]int64, len(bodies))
	for i, b := range bodies {
		want[i] = requestTokens(e, dialectChat, []byte(b))
	}
	const workers = 16
	errs := make(chan string, workers)
	for w := range workers {
		go func() {
			for j := range 50 {
				i := (w + j) % len(bodies)
				if got := requestTokens(e, dialectChat, []byte(bodies[i])); got != want[i] {
					errs <- fmt.Sprintf("body %d: %d, want %d", i, got, want[i])
					return
				}
			}
			errs <- ""
		}()
	}
	for range workers {
		if msg := <-errs; msg != "" {
			t.Fatal(msg)
		}
	}
}
