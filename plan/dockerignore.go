package plan

import (
	"path"
	"strings"
)

// DockerIgnore is a .dockerignore, as the docker CLI reads it: a pattern a
// line ('#' comments, blank lines skipped), `*`, `?`, `[...]` within a path
// element and `**` across them, a leading '!' re-including what an earlier
// pattern excluded, the last matching pattern deciding. A pattern that
// matches a directory excludes everything below it.
type DockerIgnore struct {
	patterns []ignorePattern
}

type ignorePattern struct {
	elems   []string
	exclude bool
}

// ParseDockerIgnore reads a .dockerignore's text.
func ParseDockerIgnore(text string) DockerIgnore {
	var d DockerIgnore
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := ignorePattern{exclude: true}
		if strings.HasPrefix(line, "!") {
			p.exclude = false
			line = strings.TrimSpace(line[1:])
		}
		line = strings.Trim(path.Clean("/"+line), "/")
		if line == "" {
			continue
		}
		p.elems = strings.Split(line, "/")
		d.patterns = append(d.patterns, p)
	}
	return d
}

// Excluded tells whether the context path rel (slash-separated) is left
// out of the build context.
func (d DockerIgnore) Excluded(rel string) bool {
	elems := strings.Split(rel, "/")
	excluded := false
	for _, p := range d.patterns {
		// The path or one of its parent directories matching the pattern.
		for n := 1; n <= len(elems); n++ {
			if matchPath(p.elems, elems[:n]) {
				excluded = p.exclude
				break
			}
		}
	}
	return excluded
}

// matchPath matches pattern elements against all of a path's elements,
// `**` standing for any number of them.
func matchPath(pat, elems []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(elems); i++ {
				if matchPath(pat[1:], elems[i:]) {
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
	return len(elems) == 0
}
