package executor

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
)

// payload is what stagehand reads of the job as GitLab sent it, which
// gitlab-runner writes to JOB_RESPONSE_FILE before the first hook. Job
// variables reach the hooks as CUSTOM_ENV_*, where a job variable of a
// predefined name wins over GitLab's value; the payload's own fields, and
// the first entry of each predefined variable (GitLab lists its own before
// the job's), cannot be changed by a job.
type payload struct {
	ID      int64 `json:"id"`
	JobInfo struct {
		Name            string `json:"name"`
		Stage           string `json:"stage"`
		PipelineID      int64  `json:"pipeline_id"`
		ProjectID       int64  `json:"project_id"`
		ProjectFullPath string `json:"project_full_path"`
	} `json:"job_info"`
	GitInfo struct {
		RepoURL string `json:"repo_url"`
		Ref     string `json:"ref"`
		Sha     string `json:"sha"`
		RefType string `json:"ref_type"`
	} `json:"git_info"`
	Variables []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"variables"`
	Image *struct {
		Name string `json:"name"`
		// Entrypoint is `image: entrypoint:` (nil: the image's own).
		Entrypoint []string `json:"entrypoint"`
		PullPolicy []string `json:"pull_policy"`
	} `json:"image"`
	Services []payloadService `json:"services"`
}

// payloadService is one of the job's `services:`.
type payloadService struct {
	Name       string   `json:"name"`
	Alias      string   `json:"alias"`
	Entrypoint []string `json:"entrypoint"`
	Command    []string `json:"command"`
	Variables  []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"variables"`
	PullPolicy []string `json:"pull_policy"`
}

// readPayload reads JOB_RESPONSE_FILE; nil when the runner gives none
// (gitlab-runner before 15.x).
func readPayload(path string) (*payload, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the job payload (JOB_RESPONSE_FILE): %w", err)
	}
	var p payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("read the job payload (JOB_RESPONSE_FILE): %w", err)
	}
	return &p, nil
}

// decisiveVars decide what stagehand touches: which project's names,
// locks and namespaces, which commit, which action. A job variable that
// gives one of them another value than GitLab's is refused.
var decisiveVars = []string{
	"CI_PROJECT_ID", "CI_PROJECT_PATH", "CI_PROJECT_PATH_SLUG", "CI_PIPELINE_SOURCE", "CI_JOB_ID",
	"CI_COMMIT_SHA", "CI_COMMIT_REF_NAME", "CI_COMMIT_TAG", "CI_COMMIT_BRANCH",
	"CI_ENVIRONMENT_NAME", "CI_ENVIRONMENT_ACTION", "CI_JOB_NAME", "CI_JOB_STAGE", "CI_JOB_IMAGE",
}

// firstEntryVars are predefined variables whose first entry in the
// payload is GitLab's: a job variable of the same name comes later.
var firstEntryVars = []string{
	"CI_PROJECT_NAME", "CI_PROJECT_NAMESPACE", "CI_PROJECT_URL", "CI_PROJECT_PATH_SLUG",
	"CI_PIPELINE_SOURCE", "CI_PIPELINE_URL", "CI_JOB_URL", "CI_JOB_TOKEN",
	"CI_SERVER_HOST", "CI_SERVER_URL", "CI_API_V4_URL", "CI_REGISTRY", "CI_REGISTRY_IMAGE",
	"CI_COMMIT_REF_NAME", "CI_COMMIT_BRANCH", "CI_COMMIT_TIMESTAMP",
	"CI_ENVIRONMENT_NAME", "CI_ENVIRONMENT_ACTION",
}

// trusted are the variables as GitLab set them for the job. A key with
// "" is one GitLab did not set (CI_COMMIT_TAG of a branch pipeline).
func (p *payload) trusted() map[string]string {
	t := map[string]string{}
	seen := map[string]bool{}
	for _, v := range p.Variables {
		if seen[v.Key] {
			continue
		}
		seen[v.Key] = true
		for _, k := range firstEntryVars {
			if v.Key == k {
				t[k] = v.Value
			}
		}
	}
	if p.ID != 0 {
		t["CI_JOB_ID"] = strconv.FormatInt(p.ID, 10)
	}
	if p.JobInfo.ProjectID != 0 {
		t["CI_PROJECT_ID"] = strconv.FormatInt(p.JobInfo.ProjectID, 10)
	}
	switch {
	case p.JobInfo.ProjectFullPath != "":
		t["CI_PROJECT_PATH"] = p.JobInfo.ProjectFullPath
	case p.GitInfo.RepoURL != "":
		// Older GitLab: the project's path is the clone URL's.
		if u, err := url.Parse(p.GitInfo.RepoURL); err == nil && u.Path != "" {
			t["CI_PROJECT_PATH"] = strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), ".git")
		}
	}
	if p.JobInfo.Name != "" {
		t["CI_JOB_NAME"] = p.JobInfo.Name
	}
	if p.JobInfo.Stage != "" {
		t["CI_JOB_STAGE"] = p.JobInfo.Stage
	}
	if p.GitInfo.Sha != "" {
		t["CI_COMMIT_SHA"] = p.GitInfo.Sha
	}
	if p.GitInfo.RefType != "" {
		if p.GitInfo.RefType == "tag" {
			t["CI_COMMIT_TAG"] = p.GitInfo.Ref
		} else {
			t["CI_COMMIT_TAG"] = ""
		}
	}
	if p.Image != nil {
		t["CI_JOB_IMAGE"] = p.Image.Name
	} else {
		t["CI_JOB_IMAGE"] = ""
	}
	return t
}

// applyTrusted sets the job's variables to GitLab's values where a job
// variable changed them, and answers the decisive ones a job variable
// changed (sorted), which prepare refuses.
func applyTrusted(vars map[string]string, trusted map[string]string) []string {
	var forged []string
	for k, want := range trusted {
		got, ok := vars[k]
		if !ok && want == "" || got == want {
			continue
		}
		for _, d := range decisiveVars {
			if d == k && ok {
				forged = append(forged, k)
			}
		}
		if want == "" {
			delete(vars, k)
		} else {
			vars[k] = want
		}
	}
	sort.Strings(forged)
	return forged
}
