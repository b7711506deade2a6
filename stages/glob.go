package stages

import (
	"path"
	"strings"
)

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

// anyGlob tells whether any of the globs selects p.
func anyGlob(globs []string, p string) bool {
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
