// Package e2e runs jobs through the real gitlab-runner (run-single, custom
// executor configured from config.toml.example) and stagehand, against the
// real Docker Engine and registry started by scripts/harness.sh.
package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
		if leaks := scanSuiteForSecrets(); len(leaks) > 0 {
			for _, l := range leaks {
				fmt.Fprintln(os.Stderr, "e2e: a secret value appears in", l)
			}
			code = 1
		}
	}
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
	checkJob(t, r, run, job)
	return run
}

// runCancelled runs job and cancels it as soon as its trace shows marker
// (within limit); it answers the run and how long after the cancel the
// job ended. A job whose trace never showed marker fails the test.
func runCancelled(t *testing.T, r *harness.Runner, job coordinator.Job, marker string, limit time.Duration) (*harness.JobRun, time.Duration) {
	t.Helper()
	cancelled := make(chan time.Time, 1)
	run := runOn(t, r, job, func(id int64) {
		waitForTrace(id, marker, limit)
		if strings.Contains(h.Coordinator.Trace(id), marker) {
			cancelled <- time.Now()
			h.Coordinator.Cancel(id)
		}
	})
	var at time.Time
	select {
	case at = <-cancelled:
	default:
		t.Fatalf("the job's trace never showed %q:\n%s", marker, run.Result.Trace)
	}
	if run.Result.State != "canceled" && run.Result.State != "failed" {
		t.Fatalf("state %q after cancel\n%s", run.Result.State, run.Result.Trace)
	}
	return run, time.Since(at)
}

// checkJob checks what every job must satisfy: no secret in its trace,
// the runner's log or a file left behind, and no stagehand state (the
// job's DOCKER_CONFIG and kubeconfig) left after cleanup, even when it
// was cancelled; and remembers its secrets and trace for the suite's scan.
func checkJob(t *testing.T, r *harness.Runner, run *harness.JobRun, job coordinator.Job) {
	t.Helper()
	assertNoSecrets(t, r, run, jobSecrets(run, job))
	assertNoStagehandState(t, r)
	rememberSecrets(jobSecrets(run, job)...)
	rememberTrace(fmt.Sprintf("the trace of job %d (%s)", run.ID, t.Name()), run.Result.Trace)
}

// suite holds every secret value the suite handed to a job or a command
// and every trace it saw, so that TestMain can check, once every test
// ran, that none of the values appears in any trace or in any file the
// suite and the components wrote: runner logs, job directories, the
// registry's, the Docker Engines' and the API server's logs.
var suite struct {
	sync.Mutex
	secrets map[string]bool
	traces  map[string]string
}

func rememberSecrets(values ...string) {
	suite.Lock()
	defer suite.Unlock()
	if suite.secrets == nil {
		suite.secrets = map[string]bool{}
	}
	for _, v := range values {
		// Short values would match by chance; every test secret is longer.
		if len(v) >= 8 {
			suite.secrets[v] = true
		}
	}
}

func rememberTrace(what, trace string) {
	suite.Lock()
	defer suite.Unlock()
	if suite.traces == nil {
		suite.traces = map[string]string{}
	}
	suite.traces[what] += trace
}

// scanSuiteForSecrets answers where a remembered secret appears.
func scanSuiteForSecrets() []string {
	suite.Lock()
	defer suite.Unlock()
	var secrets []string
	for s := range suite.secrets {
		// Also as a docker config keeps a login.
		secrets = append(secrets, s, base64.StdEncoding.EncodeToString([]byte("gitlab-ci-token:"+s)))
	}
	if len(secrets) == 0 {
		// Only tests without jobs ran (a -run or -bench selection).
		fmt.Println("e2e: no job ran, so no trace or file was scanned for secrets")
		return nil
	}
	var leaks []string
	check := func(where, text string) {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				leaks = append(leaks, where)
				return
			}
		}
	}
	for what, trace := range suite.traces {
		check(what, trace)
	}
	// Everything under the suite's root; the components' logs (not their
	// databases: etcd keeps the Secrets deploys create, as it must).
	roots := map[string]bool{h.Root: false, h.RegistryLog: true, filepath.Dir(h.Kubeconfig): true}
	for _, e := range h.Engines {
		roots[filepath.Dir(strings.TrimPrefix(e.Host, "unix://"))] = true
	}
	files := 0
	for root, onlyLogs := range roots {
		if root == "" || root == "." {
			continue
		}
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !d.Type().IsRegular() || (onlyLogs && !strings.HasSuffix(path, ".log")) {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			files++
			check(path, string(b))
			return nil
		})
	}
	fmt.Printf("e2e: scanned %d traces and %d files for %d secret values\n", len(suite.traces), files, len(suite.secrets))
	return leaks
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
