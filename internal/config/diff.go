package config

import (
	"reflect"
	"sort"
	"strings"
)

// Changed returns the YAML paths of the settings that differ between a and b,
// sorted: a struct is compared field by field, anything else (a map, a list,
// a scalar) as a whole. A reload uses it to tell what it applied from what
// needs a restart.
func Changed(a, b *Config) []string {
	var out []string
	diff("", reflect.ValueOf(*a), reflect.ValueOf(*b), &out)
	sort.Strings(out)
	return out
}

func diff(path string, a, b reflect.Value, out *[]string) {
	if a.Kind() != reflect.Struct {
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
		return
	}
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			name = strings.ToLower(f.Name)
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		diff(p, a.Field(i), b.Field(i), out)
	}
}

// Under reports whether path is prefix or lies below it ("log.level" is
// under "log" and under "log.level", not under "lo").
func Under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+".")
}
