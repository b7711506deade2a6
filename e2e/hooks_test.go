package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/gitserver"
	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/internal/proctest"
)

func TestPlainScriptJobSeesDerivedEnvironment(t *testing.T) {
	run := runJob(t, coordinator.Job{
		Registry:    h.Registry,
		Environment: &coordinator.Environment{Name: "review/feature-x", URL: "https://feature-x.example.com"},
		Variables: []coordinator.Variable{
			{Key: "STAGEHAND_ACTION", Value: "none"},
			{Key: "MY_SECRET", Value: "s3cr3t-value-never-printed", Masked: true},
		},
		Script: []string{
			`echo "namespace=$STAGEHAND_NAMESPACE"`,
			`echo "storage=$STAGEHAND_STAGES_STORAGE"`,
			`echo "strategy=$STAGEHAND_TAG_STRATEGY"`,
			`test -n "$MY_SECRET" && echo "secret is set"`,
			`test "$(stat -c %a "$DOCKER_CONFIG")" = 700 && echo "docker config is private"`,
			`grep -q '"auths"' "$DOCKER_CONFIG/config.json" && echo "logged in"`,
		},
	})
	wantState(t, run, "success", "")
	wantTrace(t, run,
		"namespace=sample-review-feature-x",
		"storage="+h.Registry+"/stagehand/sample/stages",
		"strategy=stages-signature",
		"secret is set",
		"docker config is private",
		"logged in",
		"Action: none",
	)
}

func TestFailingScriptReportsItsExitCode(t *testing.T) {
	run := runJob(t, coordinator.Job{
		Script:      []string{"echo before-failure", "exit 3", "echo never-here"},
		AfterScript: []string{"echo after-script-ran"},
	})
	wantState(t, run, "failed", "script_failure")
	if run.Result.ExitCode != 3 {
		t.Errorf("exit_code = %d, want 3", run.Result.ExitCode)
	}
	wantTrace(t, run, "before-failure", "after-script-ran")
	if strings.Contains(run.Result.Trace, "never-here") {
		t.Error("the script went on after exit 3")
	}
}

func TestUnreachableDockerIsSystemFailure(t *testing.T) {
	run := runJob(t, coordinator.Job{Image: h.BaseImage, Script: []string{"echo hi"}},
		func(r *harness.Runner) {
			r.Env = append(r.Env, "STAGEHAND_DOCKER_HOST=unix:///nonexistent/docker.sock")
		})
	wantState(t, run, "failed", "runner_system_failure")
	wantTrace(t, run, "Docker Engine at unix:///nonexistent/docker.sock is unreachable")
}

// A job the executor cannot serve fails in prepare, as the job's fault,
// with a line that names what to fix; its script never runs.
func TestBadJobFailsEarlyNamingTheCause(t *testing.T) {
	tests := []struct {
		name string
		job  coordinator.Job
		want string
	}{
		{"bad variable", coordinator.Job{
			Variables: []coordinator.Variable{{Key: "STAGEHAND_TAG_STRATEGY", Value: "latest"}},
			Script:    []string{"echo script-ran"},
		}, "variable STAGEHAND_TAG_STRATEGY: \"latest\" is not a tag strategy"},
		{"missing image", coordinator.Job{
			Image:    h.Registry + "/stagehand/no-such-image:1",
			Registry: h.Registry,
			Script:   []string{"echo script-ran"},
		}, "pull image " + h.Registry + "/stagehand/no-such-image:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := runJob(t, tt.job)
			wantState(t, run, "failed", "script_failure")
			wantTrace(t, run, tt.want, "(job failure)")
			if strings.Contains(run.Result.Trace, "script-ran") {
				t.Error("the script ran after prepare failed")
			}
		})
	}
}

func TestJobClonesRepository(t *testing.T) {
	gs, err := gitserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer gs.Close()
	repo, err := gs.CreateRepo("stagehand/sample", map[string]string{
		"README.md":   "sample project for stagehand e2e\n",
		"app/main.sh": "echo app\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	run := runJob(t, coordinator.Job{
		Repo:   &repo,
		Script: []string{`cat "$CI_PROJECT_DIR/README.md"`, `test -f app/main.sh && echo "app present"`, `echo "sha=$(git rev-parse HEAD)"`},
	})
	wantState(t, run, "success", "")
	wantTrace(t, run, "sample project for stagehand e2e", "app present", "sha="+repo.SHA)
}

func TestImageJobRunsInsideImage(t *testing.T) {
	if _, err := os.Stat("/etc/stagehand-base-image"); err == nil {
		t.Fatal("the host has /etc/stagehand-base-image: the test could not tell image from host")
	}
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	run := runOn(t, r, coordinator.Job{
		Image:       h.BaseImage,
		Registry:    h.Registry,
		Variables:   []coordinator.Variable{{Key: "GREETING", Value: "hello-from-variable"}},
		Script:      []string{`cat /etc/stagehand-base-image`, `echo "$GREETING in $(pwd)"`, `echo from-image > built.txt`},
		AfterScript: []string{`cat /etc/stagehand-base-image >/dev/null && echo after-in-image`},
	}, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "stagehand base image (busybox-static)", "hello-from-variable in /", "after-in-image")
	// The builds dir is shared with the host at the same path.
	found := false
	_ = filepath.Walk(r.BuildsDir(), func(p string, _ os.FileInfo, _ error) error {
		if filepath.Base(p) == "built.txt" {
			found = true
		}
		return nil
	})
	if !found {
		t.Error("built.txt written in the container is not in the host's builds dir")
	}
	assertNoJobContainers(t)
}

func TestCancelledJobStopsScriptAndCleansUp(t *testing.T) {
	for _, image := range []string{"", h.BaseImage} {
		name := "host"
		if image != "" {
			name = "image"
		}
		t.Run(name, func(t *testing.T) {
			r, err := h.NewRunner(t.Name())
			if err != nil {
				t.Fatal(err)
			}
			pidFile := filepath.Join(r.BuildsDir(), "child.pid")
			run := runOn(t, r, coordinator.Job{
				Image:    image,
				Registry: h.Registry,
				Script: []string{
					`sleep 300 & echo $! > "` + pidFile + `"`,
					// Output keeps the runner talking to the coordinator,
					// so it learns of the cancel within seconds.
					`while true; do echo job-is-running; sleep 1; done`,
				},
			}, func(id int64) {
				waitForTrace(id, "job-is-running", time.Minute)
				h.Coordinator.Cancel(id)
			})
			if run.Result.State != "canceled" && run.Result.State != "failed" {
				t.Fatalf("state %q after cancel\ntrace:\n%s", run.Result.State, run.Result.Trace)
			}
			if image == "" {
				assertProcessGone(t, pidFile)
			}
			assertNoJobContainers(t)
		})
	}
}

func TestTimedOutJobStopsScript(t *testing.T) {
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(r.BuildsDir(), "child.pid")
	run := runOn(t, r, coordinator.Job{
		Timeout: 5 * time.Second,
		Script:  []string{`sleep 300 & echo $! > "` + pidFile + `"`, `wait`},
	}, nil)
	wantState(t, run, "failed", "job_execution_timeout")
	assertProcessGone(t, pidFile)
}

func waitForTrace(id int64, s string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && !strings.Contains(h.Coordinator.Trace(id), s) {
		time.Sleep(100 * time.Millisecond)
	}
}

func assertProcessGone(t *testing.T, pidFile string) {
	t.Helper()
	if err := proctest.WaitGone(pidFile, 5*time.Second); err != nil {
		t.Error(err)
	}
}

// assertNoJobContainers: no container of any stagehand job is left on the
// engine.
func assertNoJobContainers(t *testing.T) {
	t.Helper()
	d, err := newDockerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, err := jobContainers(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) > 0 {
		t.Errorf("job containers left: %v", names)
	}
}
