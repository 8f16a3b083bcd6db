package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	yamlNodeType    = reflect.TypeOf(yaml.Node{})
	yamlUnmarshaler = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// CheckKeys walks a YAML node against the Go type it will be decoded into
// and returns one error per unknown key, naming line, key and section:
//
//	line 12: unknown key "bogus" in detectors.dictionary (known: enabled, mode, threshold, window)
//
// path is the section of n ("" for the top level). yaml.v3's own
// KnownFields error names the Go type, not the section; this one is for
// people.
func CheckKeys(n *yaml.Node, t reflect.Type, path string) []error {
	for n != nil && (n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	if n == nil || t == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == yamlNodeType || t.Kind() == reflect.Interface ||
		reflect.PointerTo(t).Implements(yamlUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil
	}
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // a type error; the decoder reports it
		}
		fields := map[string]reflect.Type{}
		structKeys(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				errs = append(errs, unknownKey(k, path, fields))
				continue
			}
			errs = append(errs, CheckKeys(v, ft, join(path, k.Value))...)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, CheckKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			errs = append(errs, CheckKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// structKeys collects the YAML keys of a struct, following ",inline".
func structKeys(t reflect.Type, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				structKeys(ft, out)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
}

func unknownKey(k *yaml.Node, path string, fields map[string]reflect.Type) error {
	where := "at the top level"
	if path != "" {
		where = "in " + path
	}
	known := make([]string, 0, len(fields))
	for name := range fields {
		known = append(known, name)
	}
	sort.Strings(known)
	hint := ""
	best, bestD := "", 3
	for _, name := range known {
		if d := distance(k.Value, name); d < bestD {
			best, bestD = name, d
		}
	}
	if best != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", best)
	} else {
		hint = " (known: " + strings.Join(known, ", ") + ")"
	}
	return fmt.Errorf("line %d: unknown key %q %s%s", k.Line, k.Value, where, hint)
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
