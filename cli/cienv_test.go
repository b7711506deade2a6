package cli

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func setJobEnv(t *testing.T) {
	for k, v := range map[string]string{
		"CI_PROJECT_NAME":     "sample",
		"CI_PROJECT_URL":      "https://gitlab.example.com/group/sample",
		"CI_COMMIT_SHA":       "0123456789abcdef0123456789abcdef01234567",
		"CI_COMMIT_REF_NAME":  "main",
		"CI_PIPELINE_ID":      "7",
		"CI_JOB_ID":           "42",
		"CI_REGISTRY_IMAGE":   "registry.example.com/group/sample",
		"CI_ENVIRONMENT_SLUG": "review-x",
		"APP_NAMESPACE":       "",
		"STAGEHAND_NAMESPACE": "",
	} {
		t.Setenv(k, v)
	}
}

// The printed lines are evaluated by bash, as an operator's
// `eval "$(stagehand ci-env)"` would.
func TestCIEnvCommandPrintsEvaluableExports(t *testing.T) {
	setJobEnv(t)
	var out bytes.Buffer
	cmd := ciEnvCommand()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--docker-config", "/tmp/job docker"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command("bash", "-c", out.String()+`printf '%s|%s|%s' "$STAGEHAND_NAMESPACE" "$STAGEHAND_STAGES_STORAGE" "$DOCKER_CONFIG"`).Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out.String())
	}
	if want := "sample-review-x|registry.example.com/group/sample/stages|/tmp/job docker"; string(got) != want {
		t.Errorf("bash saw %q, want %q", got, want)
	}
}

func TestCIEnvCommandNamesAMissingVariable(t *testing.T) {
	setJobEnv(t)
	t.Setenv("CI_PIPELINE_ID", "")
	cmd := ciEnvCommand()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs(nil)
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "CI_PIPELINE_ID") {
		t.Errorf("err %v, want it to name CI_PIPELINE_ID", err)
	}
}
