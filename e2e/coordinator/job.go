package coordinator

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Variable is a job variable as GitLab sends it in the job payload.
type Variable struct {
	Key, Value string
	Public     bool
	Masked     bool
	File       bool
	Raw        bool
}

// Environment is the job's deployment environment (`environment:` in
// .gitlab-ci.yml).
type Environment struct {
	Name, URL string
	// Action is "start" (the default when empty), "stop", "prepare", ...
	Action string
}

// Repo is the commit a job builds. The gitserver package gives these values.
type Repo struct {
	// URL is the clone URL without credentials; the coordinator adds
	// gitlab-ci-token:<job token>@ like GitLab does in git_info.repo_url.
	URL string
	// Ref is the branch (default "main") or, with Tag, the tag name.
	Ref string
	SHA string
	// Depth is git_info.depth (0 = full clone).
	Depth int
	Tag   bool
}

// Artifact is one entry of the job's `artifacts:`.
type Artifact struct {
	Name     string
	Paths    []string
	When     string // default "on_success"
	ExpireIn string // default "1 day"
	// Type is "archive" (default) or a report's, e.g. "dotenv"
	// (`artifacts: reports: dotenv:`), which GitLab sends gzipped.
	Type string
}

// Cache is one entry of the job's `cache:`.
type Cache struct {
	Key    string
	Paths  []string
	Policy string // default "pull-push"
	When   string // default "on_success"
}

// CommitTimestamp is CI_COMMIT_TIMESTAMP of every job: the git server's
// commits have fixed dates too.
const CommitTimestamp = "2026-01-01T00:00:00+00:00"

// Job describes a job to hand out. Zero values get GitLab-like defaults.
type Job struct {
	Name, Stage         string // default "test", "test"
	Script, AfterScript []string
	// Variables are user variables; they follow the predefined ones.
	Variables []Variable
	// Image is image:name ("" = none); it also sets CI_JOB_IMAGE.
	// ImageEntrypoint and ImagePullPolicy are image:entrypoint and
	// image:pull_policy.
	Image           string
	ImageEntrypoint []string
	ImagePullPolicy []string
	// Services are `services:`, as GitLab sends them.
	Services    []Service
	Environment *Environment
	// PipelineSource is CI_PIPELINE_SOURCE, default "push".
	PipelineSource string
	// Repo is the commit to fetch; nil means GIT_STRATEGY=none and a fixed
	// fake commit.
	Repo *Repo
	// Timeout is runner_info.timeout, default 10m.
	Timeout time.Duration
	// Project is the project path "group/name", default "stagehand/sample".
	Project string
	// Registry ("host:port") sets CI_REGISTRY*, and registry credentials as
	// GitLab does for its own container registry.
	Registry  string
	Artifacts []Artifact
	Cache     []Cache
	// APIURL is CI_API_V4_URL, default the coordinator's own: a test's
	// fake GitLab API stands for the instance's API, whose URL GitLab
	// itself gives the job.
	APIURL string
}

// FakeSHA is the commit used when a job has no Repo.
const FakeSHA = "5ca1ab1e0ddba11c0ffeec0de5eed1e5bad1dea5"

// ZeroSHA is what GitLab sends as before_sha for a new ref.
const ZeroSHA = "0000000000000000000000000000000000000000"

// DefaultFailureReasons is the failure_reasons list sent in features, as
// recent GitLab versions send it. Reasons the runner knows but that are not
// listed (job_canceled, image_pull_failure) are mapped by the runner, to
// unknown_failure and runner_system_failure.
var DefaultFailureReasons = []string{
	"unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
	"runner_system_failure", "missing_dependency_failure", "runner_unsupported",
	"stale_schedule", "job_execution_timeout", "archived_failure",
	"unmet_prerequisites", "scheduler_failure", "data_integrity_failure",
	"trace_size_exceeded", "runner_configuration_error",
	"runner_external_dependency_failure", "runner_interrupted",
}

// tokenMaskPrefixes are the token prefixes GitLab asks the runner to mask.
var tokenMaskPrefixes = []string{"glpat-", "gloas-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-", "glimt-", "glagent-", "glsoat-", "glffct-"}

// Payload types: the subset of the runner's spec.Job that GitLab fills,
// with the same json names.
type (
	payload struct {
		ID            int64        `json:"id"`
		Token         string       `json:"token"`
		AllowGitFetch bool         `json:"allow_git_fetch"`
		JobInfo       jobInfo      `json:"job_info"`
		GitInfo       gitInfo      `json:"git_info"`
		RunnerInfo    runnerInfo   `json:"runner_info"`
		Variables     []variable   `json:"variables"`
		Steps         []step       `json:"steps"`
		Image         *image       `json:"image,omitempty"`
		Services      []Service    `json:"services"`
		Artifacts     []artifact   `json:"artifacts"`
		Cache         []cache      `json:"cache"`
		Credentials   []credential `json:"credentials"`
		Dependencies  []any        `json:"dependencies"`
		Features      features     `json:"features"`
	}
	jobInfo struct {
		Name            string `json:"name"`
		Stage           string `json:"stage"`
		PipelineID      int64  `json:"pipeline_id"`
		ProjectID       int64  `json:"project_id"`
		ProjectName     string `json:"project_name"`
		ProjectFullPath string `json:"project_full_path"`
	}
	gitInfo struct {
		RepoURL          string   `json:"repo_url"`
		RepoObjectFormat string   `json:"repo_object_format"`
		Ref              string   `json:"ref"`
		Sha              string   `json:"sha"`
		BeforeSha        string   `json:"before_sha"`
		RefType          string   `json:"ref_type"`
		Refspecs         []string `json:"refspecs"`
		Depth            int      `json:"depth"`
	}
	runnerInfo struct {
		Timeout int `json:"timeout"`
	}
	variable struct {
		Key    string `json:"key"`
		Value  string `json:"value"`
		Public bool   `json:"public"`
		File   bool   `json:"file"`
		Masked bool   `json:"masked"`
		Raw    bool   `json:"raw"`
	}
	step struct {
		Name         string   `json:"name"`
		Script       []string `json:"script"`
		Timeout      int      `json:"timeout"`
		When         string   `json:"when"`
		AllowFailure bool     `json:"allow_failure"`
	}
	image struct {
		Name       string   `json:"name"`
		Entrypoint []string `json:"entrypoint,omitempty"`
		PullPolicy []string `json:"pull_policy,omitempty"`
	}
	artifact struct {
		Name      string   `json:"name"`
		Untracked bool     `json:"untracked"`
		Paths     []string `json:"paths"`
		When      string   `json:"when"`
		Type      string   `json:"artifact_type"`
		Format    string   `json:"artifact_format"`
		ExpireIn  string   `json:"expire_in"`
	}
	cache struct {
		Key       string   `json:"key"`
		Untracked bool     `json:"untracked"`
		Policy    string   `json:"policy"`
		Paths     []string `json:"paths"`
		When      string   `json:"when"`
	}
	credential struct {
		Type     string `json:"type"`
		URL      string `json:"url"`
		Username string `json:"username"`
		Password string `json:"password"`
	}
	features struct {
		TraceSections     bool     `json:"trace_sections"`
		TokenMaskPrefixes []string `json:"token_mask_prefixes"`
		FailureReasons    []string `json:"failure_reasons"`
	}
)

// ids are the numbers GitLab would have assigned for one job.
type ids struct {
	job, pipeline, project int64
}

// buildPayload turns a Job into the JSON GitLab sends from jobs/request.
func buildPayload(base string, j Job, n ids, token string, reasons []string) (payload, error) {
	if j.Name == "" {
		j.Name = "test"
	}
	if j.Stage == "" {
		j.Stage = "test"
	}
	if j.Project == "" {
		j.Project = "stagehand/sample"
	}
	if j.PipelineSource == "" {
		j.PipelineSource = "push"
	}
	if j.Timeout <= 0 {
		j.Timeout = 10 * time.Minute
	}
	timeout := int(j.Timeout / time.Second)
	namespace, projectName := "", j.Project
	if i := strings.LastIndex(j.Project, "/"); i >= 0 {
		namespace, projectName = j.Project[:i], j.Project[i+1:]
	}
	server, err := url.Parse(base)
	if err != nil {
		return payload{}, err
	}
	projectURL := base + "/" + j.Project

	ref, sha, refType, depth := "main", FakeSHA, "branch", 0
	repoURL := projectURL + ".git"
	if j.Repo != nil {
		if j.Repo.Ref != "" {
			ref = j.Repo.Ref
		}
		if j.Repo.SHA == "" {
			return payload{}, fmt.Errorf("coordinator: Repo.SHA is empty")
		}
		sha = j.Repo.SHA
		if j.Repo.Tag {
			refType = "tag"
		}
		depth = j.Repo.Depth
		repoURL = j.Repo.URL
	}
	authURL, err := withJobToken(repoURL, token)
	if err != nil {
		return payload{}, err
	}
	refspec := "+refs/heads/" + ref + ":refs/remotes/origin/" + ref
	if refType == "tag" {
		refspec = "+refs/tags/" + ref + ":refs/tags/" + ref
	}

	p := payload{
		ID:            n.job,
		Token:         token,
		AllowGitFetch: true,
		JobInfo: jobInfo{
			Name: j.Name, Stage: j.Stage, PipelineID: n.pipeline,
			ProjectID: n.project, ProjectName: projectName, ProjectFullPath: j.Project,
		},
		GitInfo: gitInfo{
			RepoURL: authURL, RepoObjectFormat: "sha1", Ref: ref, Sha: sha, BeforeSha: ZeroSHA,
			RefType: refType, Refspecs: []string{refspec}, Depth: depth,
		},
		RunnerInfo:   runnerInfo{Timeout: timeout},
		Services:     append([]Service{}, j.Services...),
		Artifacts:    []artifact{},
		Cache:        []cache{},
		Credentials:  []credential{},
		Dependencies: []any{},
		Features: features{
			TraceSections:     true,
			TokenMaskPrefixes: tokenMaskPrefixes,
			FailureReasons:    reasons,
		},
	}

	script := j.Script
	if script == nil {
		script = []string{}
	}
	p.Steps = append(p.Steps, step{Name: "script", Script: script, Timeout: timeout, When: "on_success"})
	if len(j.AfterScript) > 0 {
		p.Steps = append(p.Steps, step{Name: "after_script", Script: j.AfterScript, Timeout: timeout, When: "always", AllowFailure: true})
	}
	if j.Image != "" {
		p.Image = &image{Name: j.Image, Entrypoint: j.ImageEntrypoint, PullPolicy: j.ImagePullPolicy}
	}
	for _, a := range j.Artifacts {
		format := "zip"
		if a.Type != "" && a.Type != "archive" {
			format = "gzip"
		}
		p.Artifacts = append(p.Artifacts, artifact{
			Name: a.Name, Paths: a.Paths, When: def(a.When, "on_success"),
			Type: def(a.Type, "archive"), Format: format, ExpireIn: def(a.ExpireIn, "1 day"),
		})
	}
	for _, c := range j.Cache {
		p.Cache = append(p.Cache, cache{
			Key: def(c.Key, "default"), Paths: c.Paths,
			Policy: def(c.Policy, "pull-push"), When: def(c.When, "on_success"),
		})
	}

	jobURL := fmt.Sprintf("%s/-/jobs/%d", projectURL, n.job)
	pipelineURL := fmt.Sprintf("%s/-/pipelines/%d", projectURL, n.pipeline)
	port := server.Port()
	if port == "" {
		port = "80"
		if server.Scheme == "https" {
			port = "443"
		}
	}
	v := &vars{}
	v.pub("CI", "true")
	v.pub("GITLAB_CI", "true")
	v.pub("CI_SERVER", "yes")
	v.pub("CI_SERVER_NAME", "GitLab")
	v.pub("CI_SERVER_URL", base)
	v.pub("CI_SERVER_HOST", server.Hostname())
	v.pub("CI_SERVER_PORT", port)
	v.pub("CI_SERVER_PROTOCOL", server.Scheme)
	v.pub("CI_API_V4_URL", def(j.APIURL, base+"/api/v4"))
	v.pub("CI_JOB_ID", strconv.FormatInt(n.job, 10))
	v.pub("CI_JOB_NAME", j.Name)
	v.pub("CI_JOB_NAME_SLUG", slug(j.Name, 63))
	v.pub("CI_JOB_STAGE", j.Stage)
	v.add(Variable{Key: "CI_JOB_TOKEN", Value: token, Masked: true})
	v.pub("CI_JOB_URL", jobURL)
	v.pub("CI_JOB_TIMEOUT", strconv.Itoa(timeout))
	if j.Image != "" {
		v.pub("CI_JOB_IMAGE", j.Image)
	}
	v.pub("CI_NODE_TOTAL", "1")
	v.pub("CI_PIPELINE_ID", strconv.FormatInt(n.pipeline, 10))
	v.pub("CI_PIPELINE_IID", strconv.FormatInt(n.pipeline, 10))
	v.pub("CI_PIPELINE_SOURCE", j.PipelineSource)
	v.pub("CI_PIPELINE_URL", pipelineURL)
	v.pub("CI_PROJECT_ID", strconv.FormatInt(n.project, 10))
	v.pub("CI_PROJECT_NAME", projectName)
	v.pub("CI_PROJECT_TITLE", projectName)
	v.pub("CI_PROJECT_PATH", j.Project)
	v.pub("CI_PROJECT_PATH_SLUG", slug(j.Project, 63))
	v.pub("CI_PROJECT_NAMESPACE", namespace)
	v.pub("CI_PROJECT_ROOT_NAMESPACE", strings.Split(j.Project, "/")[0])
	v.pub("CI_PROJECT_URL", projectURL)
	v.pub("CI_PROJECT_VISIBILITY", "private")
	v.pub("CI_DEFAULT_BRANCH", "main")
	v.add(Variable{Key: "CI_REPOSITORY_URL", Value: authURL})
	v.pub("CI_COMMIT_SHA", sha)
	v.pub("CI_COMMIT_SHORT_SHA", sha[:min(8, len(sha))])
	v.pub("CI_COMMIT_BEFORE_SHA", ZeroSHA)
	v.pub("CI_COMMIT_TIMESTAMP", CommitTimestamp)
	v.pub("CI_COMMIT_REF_NAME", ref)
	v.pub("CI_COMMIT_REF_SLUG", slug(ref, 63))
	if refType == "tag" {
		v.pub("CI_COMMIT_TAG", ref)
	} else {
		v.pub("CI_COMMIT_BRANCH", ref)
	}
	v.pub("GITLAB_USER_ID", "1")
	v.pub("GITLAB_USER_LOGIN", "stagehand")
	v.pub("GITLAB_USER_NAME", "Stagehand Tests")
	v.pub("GITLAB_USER_EMAIL", "stagehand@example.com")
	if j.Registry != "" {
		v.pub("CI_REGISTRY", j.Registry)
		v.pub("CI_REGISTRY_IMAGE", j.Registry+"/"+strings.ToLower(j.Project))
		v.pub("CI_REGISTRY_USER", "gitlab-ci-token")
		v.add(Variable{Key: "CI_REGISTRY_PASSWORD", Value: token, Masked: true})
		p.Credentials = append(p.Credentials, credential{
			Type: "registry", URL: j.Registry, Username: "gitlab-ci-token", Password: token,
		})
	}
	if e := j.Environment; e != nil {
		v.pub("CI_ENVIRONMENT_NAME", e.Name)
		v.pub("CI_ENVIRONMENT_SLUG", EnvironmentSlug(e.Name))
		if e.URL != "" {
			v.pub("CI_ENVIRONMENT_URL", e.URL)
		}
		v.pub("CI_ENVIRONMENT_ACTION", def(e.Action, "start"))
		v.pub("CI_ENVIRONMENT_TIER", "other")
	}
	if j.Repo == nil {
		v.pub("GIT_STRATEGY", "none")
	}
	for _, uv := range j.Variables {
		v.add(uv)
	}
	p.Variables = v.list
	return p, nil
}

type vars struct{ list []variable }

func (v *vars) pub(k, val string) { v.add(Variable{Key: k, Value: val, Public: true}) }

func (v *vars) add(x Variable) {
	v.list = append(v.list, variable{Key: x.Key, Value: x.Value, Public: x.Public, File: x.File, Masked: x.Masked, Raw: x.Raw})
}

func def(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// withJobToken puts gitlab-ci-token:<token>@ into an http(s) URL, as GitLab
// does for git_info.repo_url and CI_REPOSITORY_URL.
func withJobToken(raw, token string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("coordinator: repo URL %q: %w", raw, err)
	}
	if (u.Scheme == "http" || u.Scheme == "https") && u.User == nil {
		u.User = url.UserPassword("gitlab-ci-token", token)
	}
	return u.String(), nil
}

// slug is GitLab's slugify: lowercase, every character outside [a-z0-9]
// becomes '-', cut to max characters, no leading or trailing '-'.
func slug(s string, max int) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	return strings.Trim(string(b), "-")
}

// EnvironmentSlug approximates GitLab's CI_ENVIRONMENT_SLUG: lowercase,
// runs of characters outside [a-z0-9] become one '-', it starts with a
// letter ("env-" is prepended otherwise), at most 24 characters, no trailing
// '-'. GitLab's random suffix for shortened or changed names is left out.
func EnvironmentSlug(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(name) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.TrimLeft(b.String(), "-")
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		s = "env-" + s
	}
	if len(s) > 24 {
		s = s[:24]
	}
	return strings.TrimRight(s, "-")
}

// Service is one of a job's `services:` in the payload's form.
type Service struct {
	Name       string            `json:"name"`
	Alias      string            `json:"alias,omitempty"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Command    []string          `json:"command,omitempty"`
	Variables  []ServiceVariable `json:"variables,omitempty"`
}

// ServiceVariable is a service's own variable.
type ServiceVariable struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}
