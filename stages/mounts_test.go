package stages

import (
	"strings"
	"testing"
)

func TestAllowedHostPath(t *testing.T) {
	allowed := []string{"/srv/cache", "/opt/tools/"}
	for _, c := range []struct {
		from, want, err string
	}{
		{"/srv/cache", "/srv/cache", ""},
		{"/srv/cache/go", "/srv/cache/go", ""},
		{"/opt/tools/bin/", "/opt/tools/bin", ""},
		{"/srv/cache/../../etc", "", "not among the host paths"},
		{"/srv/cachet", "", "not among the host paths"},
		{"/etc/shadow", "", "not among the host paths"},
		{"srv/cache", "", "must be an absolute path"},
		{"/", "", "not among the host paths"},
	} {
		got, err := allowedHostPath(c.from, allowed)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("allowedHostPath(%q) = %q, %v; want an error with %q", c.from, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("allowedHostPath(%q) = %q, %v; want %q", c.from, got, err, c.want)
		}
	}
	if _, err := allowedHostPath("/srv/cache", nil); err == nil || !strings.Contains(err.Error(), "--allowed-mount-paths: none") {
		t.Errorf("with nothing allowed: %v", err)
	}
}
