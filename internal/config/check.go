package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	durationType      = reflect.TypeOf(Duration(0))
	textUnmarshalType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// check walks the YAML document n against the Go type t and reports every
// problem it finds — an unknown key, a scalar that does not fit its field, a
// bad duration — each with its YAML path and line, so that one run of the
// loader lists them all (yaml.v3's strict decoding stops at a custom type's
// first error and names Go types).
func check(path string, n *yaml.Node, t reflect.Type, out *[]error) {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return
		}
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value: the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(format string, args ...any) {
		p := path
		if p == "" {
			p = "(top level)"
		}
		*out = append(*out, fmt.Errorf("%s (line %d): %s", p, n.Line, fmt.Sprintf(format, args...)))
	}
	if t == durationType {
		if n.Kind != yaml.ScalarNode {
			bad("must be a duration such as \"30s\"")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			bad("%q is not a duration (e.g. \"30s\", \"1m30s\")", n.Value)
		}
		return
	}
	if reflect.PointerTo(t).Implements(textUnmarshalType) {
		// A scalar type of its own (a pricing.Rate): it reads its text itself.
		if n.Kind != yaml.ScalarNode {
			bad("must be a single value")
		} else if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			bad("%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping of keys")
			return
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if f.IsExported() && name != "-" {
				if name == "" {
					name = strings.ToLower(f.Name)
				}
				fields[name] = f
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				msg := "unknown key"
				if s := suggest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				*out = append(*out, fmt.Errorf("%s (line %d): %s", p, k.Line, msg))
				continue
			}
			check(p, v, f.Type, out)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			check(join(path, n.Content[i].Value), n.Content[i+1], t.Elem(), out)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("must be a list")
			return
		}
		for i, c := range n.Content {
			check(path+"["+strconv.Itoa(i)+"]", c, t.Elem(), out)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			bad("must be a single value (%s)", kindName(t))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad("%q is not %s", n.Value, kindName(t))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number ≥ 0"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a " + t.Kind().String()
}

// suggest is the known key closest to a misspelt one (edit distance ≤ 2).
func suggest(key string, fields map[string]reflect.StructField) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, k := range names {
		if d := distance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
