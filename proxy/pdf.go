package proxy

import (
	"compress/zlib"
	"io"
)

// PDF pages, counted for an estimate (media.go) by a bounded scan: no PDF
// parser, no cross-reference table, one pass over the decoded bytes.
//
// A page is a dictionary "/Type /Page" (whitespace optional: "/Type/Page";
// "/Pages" is the page tree, not a page). The page tree's root says how many
// pages it holds ("/Count N"), and its largest /Count is the fallback when
// page objects do not show. Page objects packed into compressed object
// streams (/Type /ObjStm, PDF 1.5) are read by inflating those streams, up
// to maxInflate bytes in all. The count is the larger of the two readings:
// an incrementally updated PDF may keep replaced pages, which then count
// too — never fewer pages than the provider renders.

// pdfPages counts the pages of a base64 PDF: 0 when it is not a PDF (no
// "%PDF-" within its first KiB) or shows no page.
func pdfPages(b64 []byte) int64 {
	r := getB64Reader(b64)
	defer putB64Reader(r)
	return pdfPagesFrom(r)
}

// pdfPagesFrom counts the pages of the PDF r decodes.
func pdfPagesFrom(r *b64Reader) int64 {
	br := r.br
	if !pdfHeader(br) {
		return 0
	}
	var (
		outer    pdfLexer
		pages    int64
		maxCount int64
		budget   int64 = maxInflate
	)
	for {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				break
			}
		}
		b, _ := br.Peek(br.Buffered())
		consumed := len(b)
		for i, c := range b {
			if outer.feed(c) {
				consumed = i + 1
				break
			}
		}
		_, _ = br.Discard(consumed)
		if !outer.inStream {
			continue
		}
		outer.inStream = false
		if nb, err := br.Peek(1); err == nil && nb[0] == '\n' && outer.last == '\r' {
			_, _ = br.Discard(1) // "stream" CR LF
		}
		if budget <= 0 {
			continue
		}
		var in pdfLexer
		budget -= inflateInto(br, &in, budget)
		pages += in.pages
		maxCount = max(maxCount, in.maxCount)
	}
	return max(pages+outer.pages, maxCount, outer.maxCount)
}

// pdfHeader reads up to the "%PDF-" marker, which the format allows within
// the first 1024 bytes.
func pdfHeader(br interface{ ReadByte() (byte, error) }) bool {
	const marker = "%PDF-"
	matched := 0
	for i := 0; i < 1024+len(marker); i++ {
		c, err := br.ReadByte()
		if err != nil {
			return false
		}
		switch {
		case c == marker[matched]:
			matched++
		case c == marker[0]:
			matched = 1
		default:
			matched = 0
		}
		if matched == len(marker) {
			return true
		}
	}
	return false
}

// inflateInto inflates the zlib stream at br's position into lx, at most
// limit bytes, and returns how many it inflated. br is a ByteReader, so
// zlib reads exactly its stream and the scan goes on after it.
func inflateInto(br io.Reader, lx *pdfLexer, limit int64) int64 {
	z, err := zlib.NewReader(br)
	if err != nil {
		return 0
	}
	defer z.Close()
	var (
		chunk [4096]byte
		n     int64
	)
	for n < limit {
		k, err := z.Read(chunk[:min(int64(len(chunk)), limit-n)])
		for _, c := range chunk[:k] {
			lx.feed(c) // an object stream holds no streams
		}
		n += int64(k)
		if err != nil {
			break
		}
	}
	return n
}

// pdfLexer reads the PDF tokens that count pages, a byte at a time, so
// that no token is lost across the chunks it arrives in.
type pdfLexer struct {
	name     [8]byte // the name being read (past 8 bytes: none that matters)
	nameLen  int
	inName   bool
	after    uint8 // the last token was /Type or /Count (whitespace since)
	inNumber bool
	number   int64
	kw       int  // bytes of "stream" matched
	prevReg  bool // the previous byte was a regular character
	objStm   bool // "/Type /ObjStm" since the last stream
	inStream bool // feed returned true: a compressed object stream starts after this byte
	last     byte // the byte that ended the "stream" keyword

	pages, maxCount int64
}

const (
	afterNone uint8 = iota
	afterType
	afterCount
)

// pdfRegular: not whitespace and not a delimiter (PDF 32000-1, 7.2.2).
func pdfRegular(c byte) bool {
	switch c {
	case 0, '\t', '\n', '\f', '\r', ' ', '(', ')', '<', '>', '[', ']', '{', '}', '/', '%':
		return false
	}
	return true
}

func pdfSpace(c byte) bool {
	switch c {
	case 0, '\t', '\n', '\f', '\r', ' ':
		return true
	}
	return false
}

const maxPDFCount = 1 << 40 // a /Count past this is not a page count

// feed reads one byte. It returns true when the byte ends the "stream"
// keyword (its end of line) of a compressed object stream.
func (l *pdfLexer) feed(c byte) bool {
	reg := pdfRegular(c)
	start := false
	// The "stream" keyword: after a non-regular byte, ended by CR or LF.
	switch {
	case l.kw == len("stream"):
		l.kw = 0
		if c == '\r' || c == '\n' {
			start, l.last = l.objStm, c
			l.objStm = false
		}
	case c == "stream"[l.kw] && (l.kw > 0 || !l.prevReg):
		l.kw++
	default:
		l.kw = 0
	}
	l.prevReg = reg
	if l.inName {
		if reg {
			if l.nameLen < len(l.name) {
				l.name[l.nameLen] = c
			}
			l.nameLen++
			return start
		}
		l.endName()
	}
	if l.inNumber {
		if c >= '0' && c <= '9' {
			if l.number < maxPDFCount {
				l.number = l.number*10 + int64(c-'0')
			}
			return start
		}
		l.inNumber = false
		if l.number < maxPDFCount {
			l.maxCount = max(l.maxCount, l.number)
		}
	}
	switch {
	case c == '/':
		l.inName, l.nameLen = true, 0
	case pdfSpace(c):
	case c >= '0' && c <= '9' && l.after == afterCount:
		l.inNumber, l.number, l.after = true, int64(c-'0'), afterNone
	default:
		l.after = afterNone
	}
	if start {
		l.inStream = true
	}
	return start
}

// endName acts on the name just read.
func (l *pdfLexer) endName() {
	l.inName = false
	prev := l.after
	l.after = afterNone
	if l.nameLen > len(l.name) {
		return
	}
	switch n := string(l.name[:l.nameLen]); {
	case prev == afterType && n == "Page":
		l.pages++
	case prev == afterType && n == "ObjStm":
		l.objStm = true
	case n == "Type":
		l.after = afterType
	case n == "Count":
		l.after = afterCount
	}
}
