package plan

import "testing"

func TestDockerIgnore(t *testing.T) {
	d := ParseDockerIgnore(`
# comments and blank lines are skipped
node_modules
*.log
**/*.tmp
/build
docs/**
!docs/keep.md
tests/*/fixtures
`)
	for p, want := range map[string]bool{
		"node_modules/a/b.js":   true,
		"src/node_modules/x":    false, // a pattern is rooted at the context
		"app.log":               true,
		"logs/app.log":          false,
		"a/b/c.tmp":             true,
		"c.tmp":                 true,
		"build/out":             true,
		"builder/x":             false,
		"docs/index.md":         true,
		"docs/keep.md":          false,
		"tests/unit/fixtures/a": true,
		"tests/unit/other/a":    false,
		"Dockerfile":            false,
	} {
		if got := d.Excluded(p); got != want {
			t.Errorf("Excluded(%q) = %v, want %v", p, got, want)
		}
	}
}
