package request

import (
	"reflect"
	"strings"
	"testing"
)

func TestPullPolicies(t *testing.T) {
	for _, c := range []struct {
		job     []string
		def     string
		allowed []string
		want    []string
		err     string
	}{
		{nil, PullIfNotPresent, nil, []string{PullIfNotPresent}, ""},
		{nil, PullAlways, []string{PullAlways, PullNever}, []string{PullAlways}, ""},
		// A job may only ask for what the runner allows; by default,
		// only the runner's own policy.
		{[]string{PullAlways}, PullIfNotPresent, nil, nil, "the job's pull_policy [always] is not allowed on this runner: it allows [if-not-present]"},
		{[]string{PullAlways}, PullIfNotPresent, []string{PullAlways, PullIfNotPresent}, []string{PullAlways}, ""},
		{[]string{PullAlways, PullIfNotPresent}, PullNever, []string{PullAlways, PullIfNotPresent}, []string{PullAlways, PullIfNotPresent}, ""},
		{[]string{PullAlways, PullNever}, PullNever, []string{PullAlways, PullIfNotPresent}, nil, "[always, never] is not allowed"},
		{[]string{"sometimes"}, PullNever, []string{PullAlways}, nil, `"sometimes" is not a pull policy`},
		{nil, PullAlways, []string{PullNever}, nil, "the runner's --pull-policy [always] is not allowed"},
	} {
		got, err := PullPolicies(c.job, c.def, c.allowed)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v %s %v: %v, want %q", c.job, c.def, c.allowed, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v %s %v: %v %v, want %v", c.job, c.def, c.allowed, got, err, c.want)
		}
	}
}
