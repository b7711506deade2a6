package request

import (
	"fmt"
	"strings"
)

// PullPolicies are the pull policies a job's image is made available
// with, tried in order, as the docker executor does: the job's
// `image: pull_policy:` (GitLab's job payload), else the runner's
// default. Each must be one the runner allows (gitlab-runner's
// allowed_pull_policies; when the runner names none, only its default).
// A refusal names the policy and the runner's list: it is the job's.
func PullPolicies(job []string, runnerDefault string, allowed []string) ([]string, error) {
	if len(allowed) == 0 {
		allowed = []string{runnerDefault}
	}
	want := job
	from := "the job's pull_policy"
	if len(want) == 0 {
		want, from = []string{runnerDefault}, "the runner's --pull-policy"
	}
	var out []string
	for _, p := range want {
		switch p {
		case PullIfNotPresent, PullAlways, PullNever:
		default:
			return nil, fmt.Errorf("%s %q is not a pull policy: use %s, %s or %s", from, p, PullAlways, PullIfNotPresent, PullNever)
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == p
		}
		if !ok {
			return nil, fmt.Errorf("%s [%s] is not allowed on this runner: it allows [%s] (--allowed-pull-policies)", from, strings.Join(want, ", "), strings.Join(allowed, ", "))
		}
		out = append(out, p)
	}
	return out, nil
}
