package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
)

// TestImageEntrypointAndPullPolicies: an image job runs the image's own
// entrypoint (which sets up the environment and execs the shell), as the
// docker executor does, unless `image: entrypoint: [""]` clears it; a
// job's `image: pull_policy:` is honoured when the runner allows it, and
// refused, naming the runner's list, when it does not.
func TestImageEntrypointAndPullPolicies(t *testing.T) {
	ctx := t.TempDir()
	dockerfile := "FROM " + h.BaseImage + "\n" +
		"RUN printf '#!/bin/sh\\nexport FROM_ENTRYPOINT=yes\\nexec \"$@\"\\n' > /entry.sh && chmod +x /entry.sh\n" +
		"ENTRYPOINT [\"/entry.sh\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	img := fmt.Sprintf("%s/stagehand/entrypoint:%d", h.Registry, time.Now().UnixNano())
	dockerCLI(t, h.DockerHost, "build", "-q", "-t", img, ctx)
	dockerCLI(t, h.DockerHost, "push", "-q", img)

	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	job := func(entrypoint, policy []string) coordinator.Job {
		return coordinator.Job{Image: img, ImageEntrypoint: entrypoint, ImagePullPolicy: policy, Registry: h.Registry,
			Script: []string{`echo "entrypoint=[$FROM_ENTRYPOINT]"`}}
	}
	run := runOn(t, r, job(nil, nil), nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "entrypoint=[yes]")

	run = runOn(t, r, job([]string{""}, nil), nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "entrypoint=[]")

	// The runner allows only its own policy (if-not-present) by default.
	run = runOn(t, r, job(nil, []string{"always"}), nil)
	wantState(t, run, "failed", "script_failure")
	wantTrace(t, run, "the job's pull_policy [always] is not allowed on this runner: it allows [if-not-present] (--allowed-pull-policies)")

	allowing, err := h.NewRunner(t.Name() + "-allowing")
	if err != nil {
		t.Fatal(err)
	}
	allowing.Env = append(allowing.Env, "STAGEHAND_ALLOWED_PULL_POLICIES=always,if-not-present")
	run = runOn(t, allowing, job(nil, []string{"always"}), nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Pulling image "+img, "entrypoint=[yes]")
	assertNoJobContainers(t)
}
