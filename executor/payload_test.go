package executor

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// A payload as gitlab-runner writes it: GitLab's predefined variables
// first, the job's after them (a job variable of a predefined name is a
// later duplicate).
const testPayload = `{"id":77,"token":"glcbt-secret",
"job_info":{"name":"deploy","stage":"deploy","pipeline_id":9,"project_id":42,"project_name":"Shop","project_full_path":"group/shop"},
"git_info":{"repo_url":"https://gitlab-ci-token:glcbt-secret@gitlab.example.com/group/shop.git","ref":"main","sha":"0123456789abcdef0123456789abcdef01234567","ref_type":"branch"},
"variables":[
 {"key":"CI_JOB_ID","value":"77"},{"key":"CI_JOB_NAME","value":"deploy"},{"key":"CI_ENVIRONMENT_NAME","value":"review/x"},
 {"key":"CI_SERVER_URL","value":"https://gitlab.example.com"},{"key":"CI_PROJECT_ID","value":"42"},{"key":"CI_PROJECT_PATH","value":"group/shop"},
 {"key":"CI_PROJECT_PATH_SLUG","value":"group-shop"},{"key":"CI_REGISTRY_IMAGE","value":"registry.example.com/group/shop"},
 {"key":"CI_PIPELINE_SOURCE","value":"push"},{"key":"CI_COMMIT_REF_NAME","value":"main"},{"key":"CI_COMMIT_BRANCH","value":"main"},
 {"key":"MY_VAR","value":"x"},
 {"key":"CI_PROJECT_ID","value":"7"},{"key":"CI_PIPELINE_SOURCE","value":"schedule"},{"key":"CI_REGISTRY_IMAGE","value":"registry.example.com/other/project"}
],
"image":{"name":"alpine:3.20"}}`

func TestTrustedVariablesComeFromThePayload(t *testing.T) {
	dir := t.TempDir()
	resp := filepath.Join(dir, "response.json")
	if err := os.WriteFile(resp, []byte(testPayload), 0o600); err != nil {
		t.Fatal(err)
	}
	// The runner's CUSTOM_ENV_: the last entry of each key, job variables
	// included (and one the payload does not have at all).
	environ := []string{
		"TMPDIR=" + dir, "JOB_RESPONSE_FILE=" + resp,
		"CUSTOM_ENV_CI_JOB_ID=77", "CUSTOM_ENV_CI_PROJECT_ID=7", "CUSTOM_ENV_CI_PROJECT_PATH=group/shop",
		"CUSTOM_ENV_CI_PIPELINE_SOURCE=schedule", "CUSTOM_ENV_CI_REGISTRY_IMAGE=registry.example.com/other/project",
		"CUSTOM_ENV_CI_COMMIT_SHA=0123456789abcdef0123456789abcdef01234567", "CUSTOM_ENV_CI_COMMIT_TAG=v9.9.9",
		"CUSTOM_ENV_CI_JOB_IMAGE=alpine:3.20", "CUSTOM_ENV_CI_ENVIRONMENT_NAME=review/x", "CUSTOM_ENV_MY_VAR=x",
	}
	j, err := LoadJob(environ)
	if err != nil {
		t.Fatal(err)
	}
	if !j.Trusted {
		t.Fatal("the payload was not read")
	}
	for k, want := range map[string]string{
		"CI_PROJECT_ID": "42", "CI_PIPELINE_SOURCE": "push", "CI_REGISTRY_IMAGE": "registry.example.com/group/shop",
		"CI_PROJECT_PATH": "group/shop", "CI_JOB_IMAGE": "alpine:3.20", "CI_ENVIRONMENT_NAME": "review/x", "MY_VAR": "x",
		"CI_JOB_STAGE": "deploy",
	} {
		if got := j.Vars[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if v, ok := j.Vars["CI_COMMIT_TAG"]; ok {
		t.Errorf("CI_COMMIT_TAG = %q in a branch pipeline", v)
	}
	// The decisive ones a job variable changed; CI_REGISTRY_IMAGE is put
	// back to GitLab's without refusing the job.
	if want := []string{"CI_COMMIT_TAG", "CI_PIPELINE_SOURCE", "CI_PROJECT_ID"}; !reflect.DeepEqual(j.Forged, want) {
		t.Errorf("forged %v, want %v", j.Forged, want)
	}

	// Without a payload (an older runner), the variables are as given.
	j, err = LoadJob([]string{"TMPDIR=" + dir, "CUSTOM_ENV_CI_PROJECT_ID=7"})
	if err != nil || j.Trusted || j.Vars["CI_PROJECT_ID"] != "7" || len(j.Forged) != 0 {
		t.Errorf("no payload: %+v %v", j, err)
	}
	// A payload that does not read is the runner's fault.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o600)
	if _, err := LoadJob([]string{"TMPDIR=" + dir, "JOB_RESPONSE_FILE=" + bad}); err == nil {
		t.Error("a broken payload was taken")
	}
}

func TestTrustedProjectPathFromTheCloneURL(t *testing.T) {
	var p payload
	p.GitInfo.RepoURL = "https://gitlab-ci-token:x@gitlab.example.com/group/sub/shop.git"
	if got := p.trusted()["CI_PROJECT_PATH"]; got != "group/sub/shop" {
		t.Errorf("CI_PROJECT_PATH = %q", got)
	}
}

// TestImageEntrypointAndPullPolicyFromThePayload: `image: entrypoint:`
// and `image: pull_policy:` come from the job payload; without them the
// image's own entrypoint runs.
func TestImageEntrypointAndPullPolicyFromThePayload(t *testing.T) {
	for _, c := range []struct {
		image      string
		entrypoint []string
		set        bool
		policies   []string
	}{
		{`{"name":"alpine"}`, nil, false, nil},
		{`{"name":"alpine","entrypoint":[""],"pull_policy":["always","if-not-present"]}`, []string{""}, true, []string{"always", "if-not-present"}},
		{`{"name":"alpine","entrypoint":["/init","--"]}`, []string{"/init", "--"}, true, nil},
	} {
		dir := t.TempDir()
		resp := filepath.Join(dir, "response.json")
		os.WriteFile(resp, []byte(`{"id":1,"job_info":{"project_id":1},"image":`+c.image+`}`), 0o600)
		j, err := LoadJob([]string{"TMPDIR=" + dir, "JOB_RESPONSE_FILE=" + resp})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(j.ImageEntrypoint, c.entrypoint) || j.ImageEntrypointSet != c.set || !reflect.DeepEqual(j.ImagePullPolicies, c.policies) {
			t.Errorf("%s: entrypoint %q (set %v), pull policies %v", c.image, j.ImageEntrypoint, j.ImageEntrypointSet, j.ImagePullPolicies)
		}
	}
}
