package config

import (
	"path"
	"strings"
)

// Selection is what an add:/includePaths/excludePaths triple selects, for
// git mappings (paths of the project) and imports (paths of an image).
type Selection struct {
	Add              string
	Include, Exclude []string
}

func (m GitMapping) Selection() Selection { return Selection{m.Add, m.IncludePaths, m.ExcludePaths} }
func (im Import) Selection() Selection    { return Selection{im.Add, im.IncludePaths, im.ExcludePaths} }

// Match tells whether the path p (slash-separated; a leading slash or
// none) is selected, and answers it relative to add: ("" when p is add:
// itself, a single file or the directory). Globs match the relative path.
func (sel Selection) Match(p string) (rel string, ok bool) {
	add := strings.Trim(path.Clean("/"+sel.Add), "/")
	p = strings.Trim(path.Clean("/"+p), "/")
	switch {
	case add == "":
		rel = p
	case p == add:
		rel = ""
	case strings.HasPrefix(p, add+"/"):
		rel = p[len(add)+1:]
	default:
		return "", false
	}
	if rel != "" {
		if len(sel.Include) > 0 && !AnyGlob(sel.Include, rel) {
			return "", false
		}
		if AnyGlob(sel.Exclude, rel) {
			return "", false
		}
	}
	return rel, true
}

// globMatch tells whether a slash-separated path is selected by a werf-style
// glob: `*`, `?` and `[…]` within one path element, `**` across any number
// of elements, and a glob naming a directory selects everything under it
// ("src" selects "src/main.go").
func globMatch(pattern, p string) bool {
	pattern = strings.Trim(pattern, "/")
	if pattern == "" {
		return true
	}
	return matchElems(strings.Split(pattern, "/"), strings.Split(p, "/"))
}

// matchElems matches pattern elements against path elements; running out of
// pattern with path left over is a match (the pattern named a directory).
func matchElems(pat, elems []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(elems); i++ {
				if matchElems(rest, elems[i:]) {
					return true
				}
			}
			return false
		}
		if len(elems) == 0 {
			return false
		}
		if ok, err := path.Match(pat[0], elems[0]); err != nil || !ok {
			return false
		}
		pat, elems = pat[1:], elems[1:]
	}
	return true
}

// AnyGlob tells whether any of the globs selects p.
func AnyGlob(globs []string, p string) bool {
	for _, g := range globs {
		if globMatch(g, p) {
			return true
		}
	}
	return false
}

// validGlob reports a malformed pattern (an unclosed `[`).
func validGlob(pattern string) bool {
	for _, el := range strings.Split(strings.Trim(pattern, "/"), "/") {
		if _, err := path.Match(el, ""); err != nil {
			return false
		}
	}
	return true
}
