package proxy

import (
	"bytes"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// The request scanner: one pass over the body's bytes, linear in their
// number, that
//
//   - validates the body as strict JSON (RFC 8259: no NaN or Infinity, no
//     raw control characters in strings, only JSON's escapes, no trailing
//     data), nested at most maxDepth deep;
//   - refuses a key given twice in any object, at any depth. JSON leaves
//     duplicates to the parser, and parsers disagree: some read the first
//     value, most providers the last — so a body could be priced as one call
//     and served as another ("include_usage":true then false, and no usage
//     comes back). Keys compare unescaped, as every parser reads them
//     ("include\u005fusage" is include_usage; an unpaired surrogate escape
//     reads as U+FFFD, as Go's decoder reads it);
//   - notes, structurally, input the provider reads beyond the body
//     (remote.go): the parsed key and the "type" of each part count, never
//     text that merely mentions them;
//   - keeps what inspect and rewrite need of the root's members: their kind
//     and where their values are, so that rewrite splices the client's bytes.
//
// It builds no tree. Work per object is linear in its keys: up to
// smallObject keys compare by hash with each other; a larger object's key
// hashes go through an open-addressing table at most two-thirds full. Hashes are
// seeded per process, so that a caller cannot choose collisions, and a
// repeated hash is confirmed on the keys themselves. Scanner state is pooled;
// the common path allocates nothing.

const (
	// maxDepth bounds nesting (fastjson's bound, which the gateway used before).
	maxDepth = 300
	// smallObject is the most keys an object may have to be compared pairwise.
	smallObject = 16
)

// kind is a JSON value's kind (kindNone: absent).
type kind uint8

const (
	kindNone kind = iota
	kindObject
	kindArray
	kindString
	kindNumber
	kindTrue
	kindFalse
	kindNull
)

// span is body[start:end].
type span struct{ start, end int }

// jsonValue is what the scan keeps of a value.
type jsonValue struct {
	kind kind
	span
	escaped bool // a string that holds escapes
	elems   int  // an array's elements, an object's members
	numbers bool // an array whose every element is a number
}

// present: given and not null.
func (v jsonValue) present() bool { return v.kind != kindNone && v.kind != kindNull }

// frame is an open object or array.
type frame struct {
	object  bool
	start   int  // its opening bracket
	under   name // the parent object's member it is the value of (nameOther in an array)
	at      span // that member's raw key
	key     span // an object: the raw key of the member being read
	index   int  // its position in the parent array; -1 under an object
	keys    int  // an object's first key hash in scanner.keys
	count   int  // members or elements so far
	numbers bool // an array: every element so far is a number
	member  name // an object: the member being read
	part         // an object: what it says about remote input (remote.go)
}

// scanner is the state of one scan (pooled).
type scanner struct {
	req    request // what inspect builds (inspect.go)
	b      []byte
	frames []frame
	keys   []uint64 // the key hashes of the open objects
	slots  []uint64 // the hash table of a large object
	buf    []byte   // unescaped keys and type values

	top        [nameCount]jsonValue // the root's members, by name
	usage      jsonValue            // stream_options.include_usage
	rootObject bool
	rootEnd    int // the root object's closing brace

	remote     string // why the provider reads input the body does not size ("" = none)
	storedItem bool   // a Responses input item the provider looks up
	// lookup: a part the provider looks up by reference — an item
	// reference, cached content — whose tokens no estimate counts
	// (request.unsized).
	lookup        bool
	toolOpenAI    bool // a tool the provider runs, as OpenAI counts client tools
	toolAnthropic bool // the same, as Anthropic counts them
}

// Errors of the scan (shared: they carry no request data).
var (
	errNotJSON  = invalid("", "Request body is not valid JSON.")
	errTooDeep  = invalid("", "Request body nests more than %d levels deep.", maxDepth)
	keySeed     = maphash.MakeSeed()
	scannerPool = sync.Pool{New: func() any { return new(scanner) }}
)

// maxPooledScan: scanner buffers grown past this many entries are dropped
// rather than pooled.
const maxPooledScan = 1 << 16

func getScanner() *scanner { return scannerPool.Get().(*scanner) }

func putScanner(s *scanner) {
	if cap(s.keys) > maxPooledScan || cap(s.slots) > maxPooledScan || cap(s.buf) > maxPooledScan {
		return
	}
	s.b = nil // the body is the caller's
	scannerPool.Put(s)
}

// scan reads b. It returns a *badRequest for invalid JSON, nesting past
// maxDepth, or a key given twice (naming its path).
func (s *scanner) scan(b []byte) error {
	*s = scanner{b: b, frames: s.frames[:0], keys: s.keys[:0], slots: s.slots, buf: s.buf}
	i := skipSpace(b, 0)
	want := true // a value comes next (else a comma or a closing bracket)
	for {
		if i >= len(b) {
			if !want && len(s.frames) == 0 {
				return nil
			}
			return errNotJSON
		}
		if !want {
			if len(s.frames) == 0 {
				return errNotJSON // data after the document
			}
			f := &s.frames[len(s.frames)-1]
			switch b[i] {
			case ',':
				i = skipSpace(b, i+1)
				if f.object {
					var err error
					if i, err = s.key(i); err != nil {
						return err
					}
				} else {
					s.element()
				}
				want = true
			case '}':
				if !f.object {
					return errNotJSON
				}
				if err := s.closeObject(i); err != nil {
					return err
				}
				i = skipSpace(b, i+1)
			case ']':
				if f.object {
					return errNotJSON
				}
				s.closeArray(i)
				i = skipSpace(b, i+1)
			default:
				return errNotJSON
			}
			continue
		}
		switch c := b[i]; c {
		case '{', '[':
			if len(s.frames) >= maxDepth {
				return errTooDeep
			}
			s.push(c == '{', i)
			i = skipSpace(b, i+1)
			switch {
			case i >= len(b):
				return errNotJSON
			case c == '{' && b[i] == '}':
				if err := s.closeObject(i); err != nil {
					return err
				}
				i, want = skipSpace(b, i+1), false
			case c == '[' && b[i] == ']':
				s.closeArray(i)
				i, want = skipSpace(b, i+1), false
			case c == '{':
				var err error
				if i, err = s.key(i); err != nil {
					return err
				}
			default:
				s.element()
			}
			continue
		case '"':
			end, esc, ok := scanString(b, i)
			if !ok {
				return errNotJSON
			}
			s.done(jsonValue{kind: kindString, span: span{i, end}, escaped: esc}, nil)
			i = end
		case 't', 'f', 'n':
			k, lit := kindTrue, "true"
			if c == 'f' {
				k, lit = kindFalse, "false"
			} else if c == 'n' {
				k, lit = kindNull, "null"
			}
			if !bytes.HasPrefix(b[i:], []byte(lit)) {
				return errNotJSON
			}
			s.done(jsonValue{kind: k, span: span{i, i + len(lit)}}, nil)
			i += len(lit)
		default:
			end, ok := scanNumber(b, i)
			if !ok {
				return errNotJSON
			}
			s.done(jsonValue{kind: kindNumber, span: span{i, end}}, nil)
			i = end
		}
		i, want = skipSpace(b, i), false
	}
}

// push opens an object or array at b[at].
func (s *scanner) push(object bool, at int) {
	f := frame{object: object, start: at, index: -1, keys: len(s.keys), numbers: true}
	if n := len(s.frames); n > 0 {
		p := &s.frames[n-1]
		if p.object {
			f.under, f.at = p.member, p.key
		} else {
			f.index = p.count - 1
		}
	}
	s.frames = append(s.frames, f)
}

// element counts the next element of the open array.
func (s *scanner) element() { s.frames[len(s.frames)-1].count++ }

// key reads a member's key and its colon at b[i]; it returns where the
// value starts.
func (s *scanner) key(i int) (int, error) {
	b := s.b
	if i >= len(b) || b[i] != '"' {
		return i, errNotJSON
	}
	end, esc, ok := scanString(b, i)
	if !ok {
		return i, errNotJSON
	}
	raw := span{i + 1, end - 1}
	k := s.unescaped(raw, esc)
	f := &s.frames[len(s.frames)-1]
	f.count++
	f.member = nameOf(k)
	if f.member == nameOther && (len(s.frames) == 1 || len(s.frames) == 2 && f.under == nameStreamOptions) {
		// Servers written in Go (encoding/json) match names regardless of
		// case: "MAX_TOKENS" or "Model" would reach them as the parameter
		// the gateway read under its own spelling, or did not read at all.
		if m, ok := foldsTo(k); ok {
			param := string(k)
			if len(s.frames) == 2 {
				param = "stream_options." + param
			}
			return i, invalid(param, "Parameter '%s' differs from '%s' only by case, which some servers read as the same parameter; use '%s'.", param, m, m)
		}
	}
	f.key = raw // the member being read, for the path of a key given twice below it
	s.keys = append(s.keys, maphash.Bytes(keySeed, k))
	i = skipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return i, errNotJSON
	}
	return skipSpace(b, i+1), nil
}

// foldsTo reports whether k, spelled with capitals (or the Kelvin sign and
// long s, which Go folds to k and s), folds to a name the gateway reads,
// and returns that name.
func foldsTo(k []byte) (string, bool) {
	var buf [32]byte
	low, folded := buf[:0], false
	for i := 0; i < len(k); {
		c := k[i]
		switch {
		case 'A' <= c && c <= 'Z':
			low, folded = append(low, c+'a'-'A'), true
			i++
		case c < utf8.RuneSelf:
			low = append(low, c)
			i++
		default:
			r, n := utf8.DecodeRune(k[i:])
			switch r {
			case '\u212a': // KELVIN SIGN
				low, folded = append(low, 'k'), true
			case '\u017f': // LATIN SMALL LETTER LONG S
				low, folded = append(low, 's'), true
			default:
				return "", false // no other rune folds to ASCII
			}
			i += n
		}
	}
	if !folded || nameOf(low) == nameOther {
		return "", false
	}
	return string(low), true
}

// unescaped is the text of a string's raw bytes (valid only until the next
// call: escaped text is decoded into s.buf).
func (s *scanner) unescaped(raw span, escaped bool) []byte {
	if !escaped {
		return s.b[raw.start:raw.end]
	}
	s.buf = unescapeJSON(s.buf[:0], s.b[raw.start:raw.end])
	return s.buf
}

// done records a finished value in its parent: the part's members, the
// root's members, stream_options.include_usage. closed is the container
// just closed (nil for a scalar).
func (s *scanner) done(v jsonValue, closed *frame) {
	n := len(s.frames)
	if n == 0 {
		return // the document itself
	}
	p := &s.frames[n-1]
	if !p.object {
		if v.kind != kindNumber {
			p.numbers = false
		}
		return
	}
	if p.member == nameOther {
		return // nothing the gateway reads
	}
	var typ []byte
	if p.member == nameType && v.kind == kindString {
		typ = s.unescaped(span{v.start + 1, v.end - 1}, v.escaped)
	}
	p.note(p.member, v.kind, typ, closed)
	switch {
	case n == 1:
		s.top[p.member] = v
	case n == 2 && p.under == nameStreamOptions && p.member == nameIncludeUsage && s.frames[0].object:
		s.usage = v
	}
}

// closeObject closes the object whose brace is at b[at]: its keys are
// checked, its part classified.
func (s *scanner) closeObject(at int) error {
	n := len(s.frames)
	f := &s.frames[n-1]
	if j := s.repeated(f.start, s.keys[f.keys:]); j >= 0 {
		return s.duplicate(f.start, j)
	}
	if s.remote == "" || !s.lookup {
		r := f.reason()
		if s.remote == "" {
			s.remote = r
		}
		s.lookup = s.lookup || r == reasonStored || r == reasonCached
	}
	if n == 3 && !s.frames[1].object && s.frames[0].object {
		switch s.frames[1].under {
		case nameInput:
			s.storedItem = s.storedItem || f.storedItem()
		case nameTools:
			if f.typ == typeFeeTool {
				return errFeeTool
			}
			openAI, anthropic := f.providerTool()
			s.toolOpenAI = s.toolOpenAI || openAI
			s.toolAnthropic = s.toolAnthropic || anthropic
		}
	}
	closed := *f
	s.keys = s.keys[:f.keys]
	s.frames = s.frames[:n-1]
	if n == 1 {
		s.rootObject, s.rootEnd = true, at
	}
	s.done(jsonValue{kind: kindObject, span: span{closed.start, at + 1}, elems: closed.count}, &closed)
	return nil
}

// closeArray closes the array whose bracket is at b[at].
func (s *scanner) closeArray(at int) {
	n := len(s.frames)
	closed := s.frames[n-1]
	s.frames = s.frames[:n-1]
	s.done(jsonValue{kind: kindArray, span: span{closed.start, at + 1}, elems: closed.count,
		numbers: closed.numbers && closed.count > 0}, &closed)
}

// repeated returns the position of the first key of the object at
// b[obj] that repeats an earlier one, or -1; hs are its keys' hashes.
// Hashes only are kept while scanning — eight bytes a key — and a repeated
// hash is confirmed on the keys' text, found again in the object's bytes
// (only then: a key given twice, or two keys that share a hash).
func (s *scanner) repeated(obj int, hs []uint64) int {
	n := len(hs)
	if n <= smallObject {
		for j := 1; j < n; j++ {
			for i := range j {
				if hs[i] == hs[j] && s.sameKeys(obj, i, j) {
					return j
				}
			}
		}
		return -1
	}
	size := 1
	for size < n+n/2 {
		size <<= 1
	}
	if cap(s.slots) < size {
		s.slots = make([]uint64, size)
	}
	slots := s.slots[:size]
	clear(slots)
	mask := uint64(size - 1)
	for j, h := range hs {
		h |= 1 // 0 marks an empty slot
		at := h & mask
		for slots[at] != 0 && slots[at] != h {
			at = (at + 1) & mask
		}
		if slots[at] == 0 {
			slots[at] = h
			continue
		}
		for i := range j {
			if hs[i]|1 == h && s.sameKeys(obj, i, j) {
				return j
			}
		}
		return s.exactRepeat(obj) // two distinct keys share a hash
	}
	return -1
}

// exactRepeat is repeated by exact comparison of the keys' text, for an
// object where two distinct keys share a hash (astronomically rare; it
// allocates).
func (s *scanner) exactRepeat(obj int) int {
	seen := map[string]struct{}{}
	dup := -1
	eachKey(s.b, obj, func(n int, raw span, escaped bool) bool {
		t := string(unescapeJSON(nil, s.b[raw.start:raw.end]))
		if _, ok := seen[t]; ok {
			dup = n
			return false
		}
		seen[t] = struct{}{}
		return true
	})
	return dup
}

// sameKeys compares the text of the object's keys i and j.
func (s *scanner) sameKeys(obj, i, j int) bool {
	return bytes.Equal(s.keyText(obj, i), s.keyText(obj, j))
}

// keyText is the text of the object's n-th key (it allocates).
func (s *scanner) keyText(obj, n int) []byte {
	var t []byte
	eachKey(s.b, obj, func(m int, raw span, _ bool) bool {
		if m < n {
			return true
		}
		t = unescapeJSON(nil, s.b[raw.start:raw.end])
		return false
	})
	return t
}

// eachKey calls fn with each key of the (valid) object at b[obj], in order,
// until fn returns false.
func eachKey(b []byte, obj int, fn func(n int, raw span, escaped bool) bool) {
	i := skipSpace(b, obj+1)
	for n := 0; i < len(b) && b[i] == '"'; n++ {
		end, esc, _ := scanString(b, i)
		if !fn(n, span{i + 1, end - 1}, esc) {
			return
		}
		i = skipSpace(b, end) + 1 // past ':'
		i = skipSpace(b, skipValue(b, skipSpace(b, i)))
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
}

// skipValue returns the index past the (valid) value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _, _ = scanString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) { // a number, true, false or null
		switch b[i] {
		case ',', '}', ']', ' ', '\n', '\r', '\t':
			return i
		}
		i++
	}
	return i
}

// duplicate is the refusal of the object's j-th key, given twice in the
// innermost open object; it names the key's path
// ("stream_options.include_usage", "messages[2].content").
func (s *scanner) duplicate(obj, j int) error {
	var sb strings.Builder
	for _, f := range s.frames[1:] {
		if f.index >= 0 {
			sb.WriteString("[" + strconv.Itoa(f.index) + "]")
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(keyName(unescapeJSON(nil, s.b[f.at.start:f.at.end])))
	}
	if sb.Len() > 0 {
		sb.WriteByte('.')
	}
	sb.WriteString(keyName(s.keyText(obj, j)))
	p := sb.String()
	return invalid(p, "'%s' is given more than once; JSON parsers disagree on which value counts, so the gateway refuses it.", p)
}

// maxParamPath bounds a key quoted back to the client.
const maxParamPath = 128

// keyName is a key as a path element ("" spelled out, long keys cut).
func keyName(k []byte) string {
	if len(k) == 0 {
		return `""`
	}
	if len(k) > maxParamPath {
		cut := maxParamPath
		for cut > 0 && !utf8.RuneStart(k[cut]) {
			cut--
		}
		return string(k[:cut]) + "…"
	}
	return string(k)
}

// scanString validates the string starting at b[i] ('"') and returns the
// index past its closing quote and whether it holds escapes. The next quote
// is searched once per quote, not once per escape: linear even for a long
// string of many escapes.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	i++
	q := -1 // the next quote at or after i
	for {
		if q < i {
			n := bytes.IndexByte(b[i:], '"')
			if n < 0 {
				return 0, false, false
			}
			q = i + n
		}
		seg := b[i:q]
		bs := bytes.IndexByte(seg, '\\')
		if bs < 0 {
			return q + 1, escaped, noControl(seg)
		}
		if !noControl(seg[:bs]) {
			return 0, false, false
		}
		escaped = true
		j := i + bs + 1 // the escaped character
		if j >= len(b) {
			return 0, false, false
		}
		switch b[j] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i = j + 1
		case 'u':
			if j+5 > len(b) || !isHex4(b[j+1:j+5]) {
				return 0, false, false
			}
			i = j + 5
		default:
			return 0, false, false
		}
	}
}

// noControl: no raw control character (JSON strings must escape them).
func noControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return false
		}
	}
	return true
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// scanNumber validates the number at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// parseInt reads a JSON number as an int64; false when it has a fraction or
// exponent, or does not fit.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return -int64(n), true // -(1<<63) wraps to itself: MinInt64
	case !neg && n < 1<<63:
		return int64(n), true
	}
	return 0, false
}
