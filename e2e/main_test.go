// Package e2e runs jobs through the real gitlab-runner (run-single, custom
// executor configured from config.toml.example) and stagehand, against the
// real Docker Engine and registry started by scripts/harness.sh.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/harness"
)

var h *harness.Harness

func TestMain(m *testing.M) {
	root, err := os.MkdirTemp("", "stagehand-e2e-")
	if err != nil {
		panic(err)
	}
	h, err = harness.Load(root)
	if err != nil {
		// In CI a missing component is an error, never a skip.
		if errors.Is(err, harness.ErrNotStarted) && os.Getenv("CI") == "" {
			fmt.Println("e2e: skipping:", err)
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	h.Close()
	if code == 0 {
		_ = os.RemoveAll(root)
	} else {
		fmt.Fprintln(os.Stderr, "e2e: left", root, "for inspection")
	}
	os.Exit(code)
}

// runJob runs one job on a fresh runner directory and checks what every
// job must satisfy: no secret in the trace, the runner's log or any file it
// left behind, and no stagehand state left after cleanup.
func runJob(t *testing.T, job coordinator.Job, opts ...func(*harness.Runner)) *harness.JobRun {
	t.Helper()
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(r)
	}
	return runOn(t, r, job, nil)
}

func runOn(t *testing.T, r *harness.Runner, job coordinator.Job, onStart func(id int64)) *harness.JobRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run, err := r.Run(ctx, job, onStart)
	if err != nil {
		if run != nil {
			t.Logf("trace:\n%s", run.Result.Trace)
		}
		t.Fatal(err)
	}
	assertNoSecrets(t, r, run, jobSecrets(run, job))
	assertNoStagehandState(t, r)
	return run
}

// jobSecrets are a job's token and masked variables.
func jobSecrets(run *harness.JobRun, job coordinator.Job) []string {
	secrets := []string{run.Token}
	for _, v := range job.Variables {
		if v.Masked {
			secrets = append(secrets, v.Value)
		}
	}
	return secrets
}

func assertNoSecrets(t *testing.T, r *harness.Runner, run *harness.JobRun, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(run.Result.Trace, s) {
			t.Errorf("a secret value appears in the job trace")
		}
		if strings.Contains(run.RunnerLog, s) {
			t.Errorf("a secret value appears in gitlab-runner's log")
		}
	}
	_ = filepath.WalkDir(r.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() || filepath.Base(path) == "config.toml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(string(b), s) {
				t.Errorf("a secret value was left behind in %s", path)
			}
		}
		return nil
	})
}

// assertNoStagehandState: cleanup removed the per-job state (DOCKER_CONFIG
// with the registry login) from the runner's temp dir.
func assertNoStagehandState(t *testing.T, r *harness.Runner) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(r.TempDir(), "*", "stagehand"))
	for _, m := range matches {
		t.Errorf("job state left after cleanup: %s", m)
	}
}

func wantState(t *testing.T, run *harness.JobRun, state, reason string) {
	t.Helper()
	if run.Result.State != state || run.Result.FailureReason != reason {
		t.Fatalf("job ended %s/%q, want %s/%q\ntrace:\n%s", run.Result.State, run.Result.FailureReason, state, reason, run.Result.Trace)
	}
}

func wantTrace(t *testing.T, run *harness.JobRun, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(run.Result.Trace, s) {
			t.Errorf("trace lacks %q\ntrace:\n%s", s, run.Result.Trace)
		}
	}
}
