package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/fault"
)

const testToken = "glcbt-secret-token-value"

// newTestExecutor is an executor for a job as gitlab-runner would describe
// it to the hooks, with vars overriding the job's variables ("" removes).
func newTestExecutor(t *testing.T, vars map[string]string) (*Executor, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	tmp := t.TempDir()
	job := map[string]string{
		"CI_PROJECT_NAME":          "sample",
		"CI_PROJECT_URL":           "https://gitlab.example.com/group/sample",
		"CI_COMMIT_SHA":            "0123456789abcdef0123456789abcdef01234567",
		"CI_COMMIT_REF_NAME":       "main",
		"CI_PIPELINE_ID":           "7",
		"CI_JOB_ID":                "42",
		"CI_SERVER_HOST":           "gitlab.example.com",
		"CI_REGISTRY":              "registry.example.com",
		"CI_REGISTRY_IMAGE":        "registry.example.com/group/sample",
		"CI_JOB_TOKEN":             testToken,
		"CI_RUNNER_SHORT_TOKEN":    "abc123",
		"CI_CONCURRENT_PROJECT_ID": "1",
	}
	for k, v := range vars {
		if v == "" {
			delete(job, k)
		} else {
			job[k] = v
		}
	}
	environ := []string{
		"TMPDIR=" + tmp, "PATH=" + os.Getenv("PATH"),
		"BUILD_FAILURE_EXIT_CODE=11", "SYSTEM_FAILURE_EXIT_CODE=12",
		"BUILD_EXIT_CODE_FILE=" + filepath.Join(tmp, "build_exit_code"),
	}
	for k, v := range job {
		environ = append(environ, customEnvPrefix+k+"="+v)
	}
	settings := DefaultSettings()
	settings.BuildsRoot = filepath.Join(tmp, "builds")
	settings.CacheRoot = filepath.Join(tmp, "cache")
	settings.StopTimeout = time.Second
	var stdout, trace bytes.Buffer
	e, err := New(settings, "test", environ, &stdout, &trace)
	if err != nil {
		t.Fatal(err)
	}
	return e, &stdout, &trace
}

func TestConfigPrintsRunnerConfiguration(t *testing.T) {
	e, stdout, _ := newTestExecutor(t, map[string]string{"CI_ENVIRONMENT_SLUG": "review-x"})
	if err := e.Config(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out struct {
		BuildsDir         string            `json:"builds_dir"`
		CacheDir          string            `json:"cache_dir"`
		BuildsDirIsShared *bool             `json:"builds_dir_is_shared"`
		Hostname          string            `json:"hostname"`
		Driver            map[string]string `json:"driver"`
		JobEnv            map[string]string `json:"job_env"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("config output %q: %v", stdout, err)
	}
	if want := filepath.Join(e.Settings.BuildsRoot, "abc123", "1"); out.BuildsDir != want {
		t.Errorf("builds_dir %q, want %q", out.BuildsDir, want)
	}
	if out.CacheDir != e.Settings.CacheRoot || out.BuildsDirIsShared == nil || *out.BuildsDirIsShared || out.Hostname == "" {
		t.Errorf("config %+v", out)
	}
	if out.Driver["name"] != DriverName || out.Driver["version"] != "test" {
		t.Errorf("driver %v", out.Driver)
	}
	for k, want := range map[string]string{
		"STAGEHAND_NAMESPACE":      "sample-review-x",
		"STAGEHAND_STAGES_STORAGE": "registry.example.com/group/sample/stages",
		"DOCKER_CONFIG":            e.Job.DockerConfigDir(),
	} {
		if out.JobEnv[k] != want {
			t.Errorf("job_env[%s] = %q, want %q", k, out.JobEnv[k], want)
		}
	}
	if strings.Contains(stdout.String(), testToken) {
		t.Error("the job token is in the config output")
	}
}

func TestPrepareWritesPrivateDockerConfig(t *testing.T) {
	e, _, trace := newTestExecutor(t, nil)
	if err := e.Prepare(context.Background()); err != nil {
		t.Fatalf("prepare: %v\n%s", err, trace)
	}
	dir := e.Job.DockerConfigDir()
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("DOCKER_CONFIG %s: %v %v", dir, st, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil || !strings.Contains(string(b), `"registry.example.com"`) {
		t.Errorf("config.json %q: %v", b, err)
	}
	for _, want := range []string{"Action: none", "logged in to registry.example.com as gitlab-ci-token", "Prepared in"} {
		if !strings.Contains(trace.String(), want) {
			t.Errorf("trace lacks %q:\n%s", want, trace)
		}
	}
	if strings.Contains(trace.String(), testToken) {
		t.Error("the job token is in the trace")
	}
}

func TestPrepareFailsEarlyAsTheJobsFault(t *testing.T) {
	tests := []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"STAGEHAND_TAG_STRATEGY": "latest"}, "STAGEHAND_TAG_STRATEGY"},
		{map[string]string{"CI_COMMIT_SHA": "abc"}, "CI_COMMIT_SHA"},
		{map[string]string{"STAGEHAND_ACTION": "explode"}, "STAGEHAND_ACTION"},
		// an action this build does not provide
		{map[string]string{"STAGEHAND_ACTION": "cleanup"}, "STAGEHAND_ACTION=none"},
	}
	for _, tt := range tests {
		e, _, _ := newTestExecutor(t, tt.vars)
		err := e.Prepare(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err %v, want it to name %s", tt.vars, err, tt.want)
			continue
		}
		if fault.KindOf(err) != fault.KindJob || e.ExitCode(err) != 11 {
			t.Errorf("%v: %v is a %v (exit %d), want the job's fault", tt.vars, err, fault.KindOf(err), e.ExitCode(err))
		}
	}
}

func TestRunReportsScriptExitAndExports(t *testing.T) {
	e, _, trace := newTestExecutor(t, nil)
	script := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(script, []byte("echo \"ns=$STAGEHAND_TAG_STRATEGY\"\nexit 5\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := e.Run(context.Background(), script, "build_script")
	var se *ScriptExit
	if !errors.As(err, &se) || se.Code != 5 || e.ExitCode(err) != 11 {
		t.Fatalf("err %v (exit %d)", err, e.ExitCode(err))
	}
	if b, _ := os.ReadFile(e.Job.BuildExitCodeFile); string(b) != "5" {
		t.Errorf("BUILD_EXIT_CODE_FILE holds %q, want 5", b)
	}
	if !strings.Contains(trace.String(), "ns=stages-signature") {
		t.Errorf("the script did not see the derived environment:\n%s", trace)
	}
}

func TestCleanupRemovesStateAndIsIdempotent(t *testing.T) {
	e, _, trace := newTestExecutor(t, nil)
	if err := e.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		e.Cleanup(context.Background())
		if _, err := os.Stat(e.Job.StateDir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cleanup %d left %s", i+1, e.Job.StateDir())
		}
	}
	if strings.Contains(trace.String(), "cleanup:") {
		t.Errorf("cleanup reported problems:\n%s", trace)
	}
}
