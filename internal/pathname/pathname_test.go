package pathname

import (
	"strings"
	"testing"
)

func TestDirNamesDiffer(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"a/b_c", "a_b/c", "a/b/c", "a b/c", "/var/cache/apt", "var/cache/apt", "", ".", "..", "https://gitlab.example.com/group/lib.git", strings.Repeat("x", 300)} {
		d := Dir(name)
		if strings.ContainsAny(d, "/ ") || d == "" || d[0] == '.' || len(d) > 100 {
			t.Errorf("Dir(%q) = %q: not one plain path element", name, d)
		}
		if other, ok := seen[d]; ok {
			t.Errorf("Dir(%q) = Dir(%q) = %q", name, other, d)
		}
		seen[d] = name
	}
	if got := Dir("group/project"); !strings.HasPrefix(got, "group_project-") {
		t.Errorf("Dir(group/project) = %q, want it readable", got)
	}
}
