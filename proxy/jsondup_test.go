package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"unicode/utf8"
)

// An independent strict reading of a JSON document (encoding/json's token
// stream), to check what the gateway accepts and sends upstream.

// member is one object member of a document, in document order; duplicates
// are kept (encoding/json's Unmarshal would keep only the last).
type member struct {
	path  string // "stream_options.include_usage", "messages[0].role"
	value any    // the scalar token; json.Delim('{') or '[' for containers
}

// jsonMembers lists every object member of b at every depth.
func jsonMembers(b []byte) ([]member, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var ms []member
	if _, err := membersOf(d, "", &ms); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the document")
	}
	return ms, nil
}

// membersOf reads one value at path, appending its members to ms, and
// returns its token (json.Delim('{') or '[' for a container).
func membersOf(d *json.Decoder, path string, ms *[]member) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return nil, err
			}
			p := pathKey(kt.(string))
			if path != "" {
				p = path + "." + p
			}
			i := len(*ms)
			*ms = append(*ms, member{path: p})
			v, err := membersOf(d, p, ms)
			if err != nil {
				return nil, err
			}
			(*ms)[i].value = v
		}
	case json.Delim('['):
		for i := 0; d.More(); i++ {
			if _, err := membersOf(d, path+"["+strconv.Itoa(i)+"]", ms); err != nil {
				return nil, err
			}
		}
	default:
		return t, nil
	}
	_, err = d.Token() // the closing delimiter
	return t, err
}

// jsonDuplicate returns the path of the first member b gives twice in one
// object ("" when none).
func jsonDuplicate(b []byte) (string, error) {
	ms, err := jsonMembers(b)
	if err != nil {
		return "", err
	}
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		if seen[m.path] {
			return m.path, nil
		}
		seen[m.path] = true
	}
	return "", nil
}

// membersAt returns the values of every member at path, duplicates included.
func membersAt(b []byte, path string) ([]any, error) {
	ms, err := jsonMembers(b)
	if err != nil {
		return nil, err
	}
	var out []any
	for _, m := range ms {
		if m.path == path {
			out = append(out, m.value)
		}
	}
	return out, nil
}

// pathKey is a key as the gateway names it in a path: "" spelled out, and a
// key past 128 bytes cut there (at a rune boundary) with an ellipsis.
func pathKey(k string) string {
	if k == "" {
		return `""`
	}
	if len(k) > 128 {
		cut := 128
		for cut > 0 && !utf8.RuneStart(k[cut]) {
			cut--
		}
		return k[:cut] + "…"
	}
	return k
}
