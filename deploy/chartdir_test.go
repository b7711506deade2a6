package deploy

import (
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/request"
)

func TestChartDirStaysInTheCheckout(t *testing.T) {
	for _, c := range []struct{ dir, want, err string }{
		{"", "/builds/p/.helm", ""},
		{"infra/helm", "/builds/p/infra/helm", ""},
		{"./infra/prod/helm/", "/builds/p/infra/prod/helm", ""},
		{"charts/../helm", "/builds/p/helm", ""},
		{"/etc", "", "within the repository"},
		{"../other-project/.helm", "", "within the repository"},
		{"..", "", "within the repository"},
	} {
		got, err := ChartDir(request.Deploy{Build: request.Build{Dir: "/builds/p"}, ChartDir: c.dir})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %q, %v; want an error %q", c.dir, got, err, c.err)
			}
		} else if err != nil || got != c.want {
			t.Errorf("%q: %q, %v; want %q", c.dir, got, err, c.want)
		}
	}
}
