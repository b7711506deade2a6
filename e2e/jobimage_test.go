package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// serviceImage builds a small image into the harness registry: busybox's
// httpd serving a page on port (EXPOSE port), or cmd instead.
func serviceImage(t *testing.T, name string, port int, cmd string) string {
	t.Helper()
	ctx := t.TempDir()
	dockerfile := "FROM " + h.BaseImage + "\n" +
		"RUN mkdir -p /www && echo hello from the service > /www/index.html\n" +
		fmt.Sprintf("EXPOSE %d\n", port) + cmd + "\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	img := fmt.Sprintf("%s/stagehand/%s:%d", h.Registry, name, time.Now().UnixNano())
	dockerCLI(t, h.DockerHost, "build", "-q", "-t", img, ctx)
	dockerCLI(t, h.DockerHost, "push", "-q", img)
	return img
}

// TestServicesBesideTheJob: a job's two services run beside its
// container, reachable by their aliases on their exposed ports once they
// listen (the trace says whom it waits for), one with a variable of its
// own, one with a command of the job's; a service that exits fails the
// job as its fault with its last output; a cancelled job leaves no
// service; ten jobs with services at once on one engine each see their
// own.
func TestServicesBesideTheJob(t *testing.T) {
	web := serviceImage(t, "svc-web", 8080, `CMD ["sh", "-c", "sleep 1; echo \"page of $SERVICE_NAME\" > /www/index.html; exec httpd -f -p 8080 -h /www"]`)
	api := serviceImage(t, "svc-api", 9090, `CMD ["httpd", "-f", "-p", "9090", "-h", "/www"]`)
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	run := runOn(t, r, coordinator.Job{
		Image: h.BaseImage, Registry: h.Registry,
		Services: []coordinator.Service{
			{Name: web, Alias: "web", Variables: []coordinator.ServiceVariable{{Key: "SERVICE_NAME", Value: "the web service"}}},
			{Name: api, Alias: "api backend", Command: []string{"sh", "-c", "echo from the custom command > /www/index.html; exec httpd -f -p 9090 -h /www"}},
		},
		Script: []string{`wget -q -O - http://web:8080/`, `wget -q -O - http://api:9090/`, `wget -q -O - http://backend:9090/`},
	}, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Waiting for service "+web+" to listen on port 8080", "Waiting for service "+api+" to listen on port 9090",
		"page of the web service", "from the custom command")
	if n := strings.Count(run.Result.Trace, "from the custom command\n"); n < 2 {
		t.Errorf("the service with a custom command answered %d times by its two aliases, want 2", n)
	}
	assertNoJobContainers(t)

	t.Run("a service that exits", func(t *testing.T) {
		broken := serviceImage(t, "svc-broken", 5432, `CMD ["sh", "-c", "echo cannot read the config file; exit 3"]`)
		run := runOn(t, r, coordinator.Job{
			Image: h.BaseImage, Registry: h.Registry,
			Services: []coordinator.Service{{Name: broken, Alias: "db"}},
			Script:   []string{`echo never-runs`},
		}, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "service "+broken+" (db) exited with code 3; its last output:", "| cannot read the config file")
		if strings.Contains(run.Result.Trace, "never-runs\n") {
			t.Error("the script ran although its service failed")
		}
		assertNoJobContainers(t)
	})

	t.Run("a cancelled job", func(t *testing.T) {
		run := runOn(t, r, coordinator.Job{
			Image: h.BaseImage, Registry: h.Registry,
			Services: []coordinator.Service{{Name: web, Alias: "web"}},
			Script:   []string{`while true; do echo job-is-running; sleep 1; done`},
		}, func(id int64) {
			waitForTrace(id, "job-is-running", time.Minute)
			h.Coordinator.Cancel(id)
		})
		if run.Result.State != "canceled" && run.Result.State != "failed" {
			t.Fatalf("state %q after cancel", run.Result.State)
		}
		assertNoJobContainers(t)
	})

	t.Run("ten jobs at once", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 10)
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ri, err := h.NewRunner(fmt.Sprintf("%s-%d", t.Name(), i))
				if err != nil {
					errs <- err.Error()
					return
				}
				mark := fmt.Sprintf("job-%d-of-ten", i)
				run := runOn(t, ri, coordinator.Job{
					Image: h.BaseImage, Registry: h.Registry,
					Services: []coordinator.Service{{Name: web, Alias: "web", Variables: []coordinator.ServiceVariable{{Key: "SERVICE_NAME", Value: mark}}}},
					Script:   []string{`wget -q -O - http://web:8080/`},
				}, nil)
				if run.Result.State != "success" || !strings.Contains(run.Result.Trace, "page of "+mark+"\n") {
					errs <- fmt.Sprintf("job %d: %s, its service's page is not its own:\n%s", i, run.Result.State, run.Result.Trace)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		assertNoJobContainers(t)
	})
}

// TestPullPolicyNeverWithAMissingImage: `pull_policy: never` (allowed by
// the runner) with an image the host does not have fails clearly.
func TestPullPolicyNeverWithAMissingImage(t *testing.T) {
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	r.Env = append(r.Env, "STAGEHAND_ALLOWED_PULL_POLICIES=never,if-not-present")
	img := fmt.Sprintf("%s/stagehand/absent:%d", h.Registry, time.Now().UnixNano())
	run := runOn(t, r, coordinator.Job{Image: img, ImagePullPolicy: []string{"never"}, Registry: h.Registry, Script: []string{"echo never-runs"}}, nil)
	wantState(t, run, "failed", "script_failure")
	wantTrace(t, run, "image "+img+` is not on this runner host and the pull policy is "never"`)
}

// TestDotenvReportReachesLaterJobs: a build job that declares
// `artifacts: reports: dotenv: stagehand.env` uploads stagehand's report
// through the real gitlab-runner; the variables GitLab would pass on are
// the published images, and a later job sees them.
func TestDotenvReportReachesLaterJobs(t *testing.T) {
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	build := p.job(p.repo)
	build.Artifacts = []coordinator.Artifact{{Type: "dotenv", Paths: []string{"stagehand.env"}}}
	run := runOn(t, r, build, nil)
	wantState(t, run, "success", "")
	vars, err := coordinator.DotenvVariables(h.Coordinator.Artifacts(run.ID))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range vars {
		got[v.Key] = v.Value
	}
	images := published(t, run)
	if got["STAGEHAND_IMAGE_BACKEND"] != images["backend"][0] || got["STAGEHAND_IMAGE_BACKEND_DIGEST"] != images["backend"][1] {
		t.Fatalf("the dotenv report gives %v (%d files uploaded), the build published %v\n%s", got, len(h.Coordinator.Artifacts(run.ID)), images, run.Result.Trace)
	}
	later := coordinator.Job{Name: "uses-build", Stage: "test", Project: p.project, Variables: vars,
		Script: []string{`echo "later job sees $STAGEHAND_IMAGE_BACKEND"`}}
	run = runOn(t, r, later, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "later job sees "+images["backend"][0])
}
