package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// UnknownFieldError is a key of the file that the config has no field for:
// usually a typo, which strict decoding would otherwise report in Go's
// terms ("field timout not found in type config.Profile").
type UnknownFieldError struct {
	// Line is the key's line in the file (1-based).
	Line int
	// Path is where the key is, in the file's terms: "settings",
	// "persistence_profiles[0] (sticky)", "pools[1] (web).members[0] (web1)";
	// empty for a top-level key.
	Path string
	// Field is the unknown key.
	Field string
	// Suggestion is the known key it is closest to, or empty.
	Suggestion string
}

func (e *UnknownFieldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "line %d: ", e.Line)
	if e.Path == "" {
		fmt.Fprintf(&b, "unknown section %q", e.Field)
	} else {
		fmt.Fprintf(&b, "%s: unknown field %q", e.Path, e.Field)
	}
	if e.Suggestion != "" {
		fmt.Fprintf(&b, " (did you mean %q?)", e.Suggestion)
	}
	return b.String()
}

// unknownFields walks a parsed document against the Config type and returns
// an UnknownFieldError for every key that has no field, in file order.
func unknownFields(doc *yaml.Node) error {
	var errs []error
	walkFields(doc, reflect.TypeOf(Config{}), "", &errs)
	sort.SliceStable(errs, func(i, j int) bool {
		return errs[i].(*UnknownFieldError).Line < errs[j].(*UnknownFieldError).Line
	})
	return errors.Join(errs...)
}

func walkFields(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	if n == nil {
		return
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			walkFields(c, t, path, errs)
		}
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // a type error, which decoding reports
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				// A merge key inlines the mapping (or mappings) it names.
				walkFields(v, t, path, errs)
				if v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						walkFields(m, t, path, errs)
					}
				}
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, &UnknownFieldError{Line: k.Line, Path: path, Field: k.Value, Suggestion: closest(k.Value, fields)})
				continue
			}
			walkFields(v, ft, join(path, k.Value), errs)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			walkFields(item, t.Elem(), itemPath(path, i, item), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkFields(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// itemPath names the i-th item of a list the way a user finds it: its
// index, and its name when it has one.
func itemPath(path string, i int, item *yaml.Node) string {
	p := fmt.Sprintf("%s[%d]", path, i)
	for item.Kind == yaml.AliasNode && item.Alias != nil {
		item = item.Alias
	}
	if item.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(item.Content); j += 2 {
			if k, v := item.Content[j], item.Content[j+1]; k.Value == "name" && v.Kind == yaml.ScalarNode && v.Value != "" {
				return p + " (" + v.Value + ")"
			}
		}
	}
	return p
}

// yamlFields maps the YAML keys of a struct to their types, with the
// fields of ",inline" structs lifted into it as the decoder does.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range yamlFields(ft) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // the decoder's default
		}
		out[name] = f.Type
	}
	return out
}

// closest returns the known key nearest to key, if it is near enough to be
// a typo of it: a few letters wrong, missing or swapped.
func closest(key string, fields map[string]reflect.Type) string {
	best, bestD := "", -1
	for k := range fields {
		d := editDistance(strings.ToLower(key), k)
		if bestD < 0 || d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if bestD < 0 || bestD > max(2, len(key)/4) || bestD >= len(key) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of adjacent letters each cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
