package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The runner's view of a job (common/spec.Job), with its json names.
type runnerJob struct {
	ID            int64  `json:"id"`
	Token         string `json:"token"`
	AllowGitFetch bool   `json:"allow_git_fetch"`
	JobInfo       struct {
		Name        string `json:"name"`
		Stage       string `json:"stage"`
		ProjectID   int64  `json:"project_id"`
		ProjectName string `json:"project_name"`
	} `json:"job_info"`
	GitInfo struct {
		RepoURL   string   `json:"repo_url"`
		Ref       string   `json:"ref"`
		Sha       string   `json:"sha"`
		BeforeSha string   `json:"before_sha"`
		RefType   string   `json:"ref_type"`
		Refspecs  []string `json:"refspecs"`
		Depth     int      `json:"depth"`
	} `json:"git_info"`
	RunnerInfo struct {
		Timeout int `json:"timeout"`
	} `json:"runner_info"`
	Variables []struct {
		Key    string `json:"key"`
		Value  string `json:"value"`
		Public bool   `json:"public"`
		File   bool   `json:"file"`
		Masked bool   `json:"masked"`
		Raw    bool   `json:"raw"`
	} `json:"variables"`
	Steps []struct {
		Name         string   `json:"name"`
		Script       []string `json:"script"`
		Timeout      int      `json:"timeout"`
		When         string   `json:"when"`
		AllowFailure bool     `json:"allow_failure"`
	} `json:"steps"`
	Image struct {
		Name string `json:"name"`
	} `json:"image"`
	Artifacts []struct {
		Name  string   `json:"name"`
		Paths []string `json:"paths"`
	} `json:"artifacts"`
	Credentials []struct {
		Type     string `json:"type"`
		URL      string `json:"url"`
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"credentials"`
	Features struct {
		TraceSections  bool     `json:"trace_sections"`
		FailureReasons []string `json:"failure_reasons"`
	} `json:"features"`
}

func (j *runnerJob) vars() map[string]string {
	m := map[string]string{}
	for _, v := range j.Variables {
		m[v.Key] = v.Value
	}
	return m
}

func newServer(t *testing.T) *Server {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func do(t *testing.T, method, url string, header map[string]string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func requestJob(t *testing.T, s *Server) (*http.Response, *runnerJob) {
	t.Helper()
	body := []byte(`{"info":{"name":"gitlab-runner","executor":"custom","shell":"bash","features":{"cancel_gracefully":true}},"token":"glrt-x","system_id":"s_0123"}`)
	resp := do(t, "POST", s.URL()+"/api/v4/jobs/request", map[string]string{"Content-Type": "application/json"}, body)
	if resp.StatusCode != http.StatusCreated {
		return resp, nil
	}
	var j runnerJob
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatal(err)
	}
	return resp, &j
}

func update(t *testing.T, s *Server, id int64, token, body string) *http.Response {
	t.Helper()
	return do(t, "PUT", fmt.Sprintf("%s/api/v4/jobs/%d", s.URL(), id),
		map[string]string{"Job-Token": token, "Content-Type": "application/json"}, []byte(body))
}

func patch(t *testing.T, s *Server, id int64, token string, start int, data string) *http.Response {
	t.Helper()
	return do(t, "PATCH", fmt.Sprintf("%s/api/v4/jobs/%d/trace?debug_trace=false", s.URL(), id),
		map[string]string{"Job-Token": token, "Content-Type": "text/plain",
			"Content-Range": fmt.Sprintf("%d-%d", start, start+len(data)-1)}, []byte(data))
}

func TestRequestWithoutJobs(t *testing.T) {
	s := newServer(t)
	resp, _ := requestJob(t, s)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d, want 204", resp.StatusCode)
	}
	resp = do(t, "POST", s.URL()+"/api/v4/jobs/request", nil, []byte(`{"info":{}}`))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("no token: status %d, want 403", resp.StatusCode)
	}
}

func TestJobPayload(t *testing.T) {
	s := newServer(t)
	id1, _ := s.Enqueue(Job{Script: []string{"true"}})
	id2, token := s.Enqueue(Job{
		Name: "build image", Stage: "build",
		Script:      []string{"echo one", "echo two"},
		AfterScript: []string{"echo after"},
		Variables:   []Variable{{Key: "MY_VAR", Value: "x"}, {Key: "SECRET", Value: "s3cr3t", Masked: true}},
		Image:       "alpine:3.20",
		Environment: &Environment{Name: "Review/Feature_Branch-with-a-very-long-name", URL: "https://x.example"},
		Repo:        &Repo{URL: "http://127.0.0.1:1/sample.git", Ref: "v1.0", SHA: strings.Repeat("ab", 20), Tag: true, Depth: 5},
		Timeout:     90 * time.Second,
		Project:     "grp/sub/My.Project",
		Registry:    "127.0.0.1:5000",
		Artifacts:   []Artifact{{Name: "out", Paths: []string{"out/"}}},
	})
	if id1 != 1 || id2 != 2 {
		t.Fatalf("ids %d, %d", id1, id2)
	}
	if !strings.HasPrefix(token, "glcbt-") {
		t.Fatalf("token %q", token)
	}

	_, j := requestJob(t, s) // FIFO: job 1 first
	if j == nil || j.ID != 1 {
		t.Fatalf("first job: %+v", j)
	}
	v := j.vars()
	if v["GIT_STRATEGY"] != "none" || v["CI_COMMIT_SHA"] != FakeSHA || len(v["CI_COMMIT_SHA"]) != 40 {
		t.Errorf("no-repo job: GIT_STRATEGY=%q CI_COMMIT_SHA=%q", v["GIT_STRATEGY"], v["CI_COMMIT_SHA"])
	}
	if v["CI_SERVER_URL"] != s.URL() || v["CI_PROJECT_PATH"] != "stagehand/sample" || v["CI_COMMIT_BRANCH"] != "main" {
		t.Errorf("defaults: %v", v)
	}
	if j.JobInfo.Name != "test" || j.JobInfo.Stage != "test" || j.RunnerInfo.Timeout != 600 {
		t.Errorf("defaults: %+v %+v", j.JobInfo, j.RunnerInfo)
	}
	if j.Image.Name != "" {
		t.Errorf("image %q", j.Image.Name)
	}

	resp, j := requestJob(t, s)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if j.ID != 2 || j.Token != token || !j.AllowGitFetch || !j.Features.TraceSections || len(j.Features.FailureReasons) == 0 {
		t.Errorf("job: %+v", j)
	}
	if j.JobInfo.Name != "build image" || j.JobInfo.Stage != "build" || j.JobInfo.ProjectName != "My.Project" || j.JobInfo.ProjectID != 2 {
		t.Errorf("job_info: %+v", j.JobInfo)
	}
	g := j.GitInfo
	if g.RepoURL != "http://gitlab-ci-token:"+token+"@127.0.0.1:1/sample.git" || g.Ref != "v1.0" || g.RefType != "tag" ||
		g.Sha != strings.Repeat("ab", 20) || g.Depth != 5 || len(g.Refspecs) != 1 || g.Refspecs[0] != "+refs/tags/v1.0:refs/tags/v1.0" {
		t.Errorf("git_info: %+v", g)
	}
	if j.RunnerInfo.Timeout != 90 || j.Image.Name != "alpine:3.20" {
		t.Errorf("runner_info %+v image %+v", j.RunnerInfo, j.Image)
	}
	if len(j.Steps) != 2 || j.Steps[0].Name != "script" || j.Steps[0].When != "on_success" || len(j.Steps[0].Script) != 2 ||
		j.Steps[0].Timeout != 90 || j.Steps[1].Name != "after_script" || j.Steps[1].When != "always" || !j.Steps[1].AllowFailure {
		t.Errorf("steps: %+v", j.Steps)
	}
	if len(j.Artifacts) != 1 || j.Artifacts[0].Paths[0] != "out/" {
		t.Errorf("artifacts: %+v", j.Artifacts)
	}
	if len(j.Credentials) != 1 || j.Credentials[0].Password != token || j.Credentials[0].URL != "127.0.0.1:5000" {
		t.Errorf("credentials: %+v", j.Credentials)
	}

	v = j.vars()
	want := map[string]string{
		"CI": "true", "GITLAB_CI": "true",
		"CI_SERVER_URL": s.URL(), "CI_API_V4_URL": s.URL() + "/api/v4",
		"CI_JOB_ID": "2", "CI_JOB_NAME": "build image", "CI_JOB_STAGE": "build", "CI_JOB_TOKEN": token,
		"CI_JOB_URL": s.URL() + "/grp/sub/My.Project/-/jobs/2", "CI_JOB_IMAGE": "alpine:3.20",
		"CI_PIPELINE_ID": "2", "CI_PIPELINE_IID": "2", "CI_PIPELINE_SOURCE": "push",
		"CI_PIPELINE_URL": s.URL() + "/grp/sub/My.Project/-/pipelines/2",
		"CI_PROJECT_ID":   "2", "CI_PROJECT_NAME": "My.Project", "CI_PROJECT_PATH": "grp/sub/My.Project",
		"CI_PROJECT_PATH_SLUG": "grp-sub-my-project", "CI_PROJECT_NAMESPACE": "grp/sub",
		"CI_PROJECT_URL": s.URL() + "/grp/sub/My.Project",
		"CI_COMMIT_SHA":  strings.Repeat("ab", 20), "CI_COMMIT_SHORT_SHA": "abababab", "CI_COMMIT_BEFORE_SHA": ZeroSHA,
		"CI_COMMIT_REF_NAME": "v1.0", "CI_COMMIT_REF_SLUG": "v1-0", "CI_COMMIT_TAG": "v1.0", "CI_DEFAULT_BRANCH": "main",
		"CI_REGISTRY": "127.0.0.1:5000", "CI_REGISTRY_IMAGE": "127.0.0.1:5000/grp/sub/my.project",
		"CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": token,
		"CI_ENVIRONMENT_NAME": "Review/Feature_Branch-with-a-very-long-name", "CI_ENVIRONMENT_SLUG": "review-feature-branch-wi",
		"CI_ENVIRONMENT_URL": "https://x.example", "CI_ENVIRONMENT_ACTION": "start",
		"MY_VAR": "x", "SECRET": "s3cr3t",
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %q, want %q", k, v[k], w)
		}
	}
	for _, k := range []string{"GIT_STRATEGY", "CI_COMMIT_BRANCH"} {
		if _, ok := v[k]; ok {
			t.Errorf("%s should not be set", k)
		}
	}
	last := j.Variables[len(j.Variables)-1]
	if last.Key != "SECRET" || !last.Masked || last.Public {
		t.Errorf("user variables must come last, as given: %+v", last)
	}
	for _, x := range j.Variables {
		if (x.Key == "CI_JOB_TOKEN" || x.Key == "CI_REGISTRY_PASSWORD") && (!x.Masked || x.Public) {
			t.Errorf("%s must be masked and not public: %+v", x.Key, x)
		}
	}
	if s.State(2) != StateRunning {
		t.Errorf("state %q", s.State(2))
	}
}

func TestTraceAndFinalUpdate(t *testing.T) {
	s := newServer(t)
	id, token := s.Enqueue(Job{Script: []string{"exit 3"}})
	requestJob(t, s)

	if r := update(t, s, id, token, `{"token":"`+token+`","state":"running","output":{}}`); r.StatusCode != 200 || r.Header.Get("Job-Status") != "running" {
		t.Fatalf("PUT running: %d %q", r.StatusCode, r.Header.Get("Job-Status"))
	}
	if r := update(t, s, id, "glcbt-wrong", `{"token":"glcbt-wrong","state":"running"}`); r.StatusCode != 403 {
		t.Fatalf("wrong token: %d", r.StatusCode)
	}
	if r := patch(t, s, id, "glcbt-wrong", 0, "x"); r.StatusCode != 403 {
		t.Fatalf("PATCH wrong token: %d", r.StatusCode)
	}

	r := patch(t, s, id, token, 0, "hello")
	if r.StatusCode != 202 || r.Header.Get("Range") != "0-5" || r.Header.Get("Job-Status") != "running" ||
		r.Header.Get("X-GitLab-Trace-Update-Interval") != "1" {
		t.Fatalf("PATCH 1: %d %v", r.StatusCode, r.Header)
	}
	// A resend from a wrong offset: 416 and our length.
	r = patch(t, s, id, token, 3, "lo world")
	if r.StatusCode != 416 || r.Header.Get("Range") != "0-5" {
		t.Fatalf("PATCH mismatch: %d %v", r.StatusCode, r.Header)
	}
	r = patch(t, s, id, token, 5, " world\n")
	if r.StatusCode != 202 || r.Header.Get("Range") != "0-12" {
		t.Fatalf("PATCH 2: %d %v", r.StatusCode, r.Header)
	}
	if got := s.Trace(id); got != "hello world\n" {
		t.Fatalf("trace %q", got)
	}

	// Not final yet.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(ctx, id); err == nil {
		t.Fatal("Wait returned before the final PUT")
	}

	sum := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE([]byte("hello world\n")))
	body := `{"token":"` + token + `","state":"failed","failure_reason":"script_failure","exit_code":3,"checksum":"` +
		sum + `","output":{"checksum":"` + sum + `","bytesize":12}}`
	if r := update(t, s, id, token, body); r.StatusCode != 200 {
		t.Fatalf("final PUT: %d", r.StatusCode)
	}
	res, err := s.Wait(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "failed" || res.RunnerState != "failed" || res.FailureReason != "script_failure" || res.ExitCode != 3 ||
		res.Trace != "hello world\n" || !res.TraceComplete {
		t.Fatalf("result %+v", res)
	}
	if r := patch(t, s, id, token, 12, "late"); r.StatusCode != 403 {
		t.Fatalf("PATCH after the end: %d", r.StatusCode)
	}

	reqs := strings.Join(s.Requests(), "\n")
	for _, w := range []string{"POST /api/v4/jobs/request", "PUT /api/v4/jobs/1", "PATCH /api/v4/jobs/1/trace"} {
		if !strings.Contains(reqs, w) {
			t.Errorf("requests lack %q:\n%s", w, reqs)
		}
	}
	if u := s.Unhandled(); len(u) != 0 {
		t.Errorf("unhandled: %v", u)
	}
}

func TestCancel(t *testing.T) {
	s := newServer(t)
	id, token := s.Enqueue(Job{Script: []string{"sleep 30"}})
	requestJob(t, s)
	update(t, s, id, token, `{"token":"`+token+`","state":"running"}`)
	patch(t, s, id, token, 0, "started\n")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitTrace(ctx, id, "started"); err != nil {
		t.Fatal(err)
	}
	s.Cancel(id)
	if r := patch(t, s, id, token, 8, "more\n"); r.StatusCode != 202 || r.Header.Get("Job-Status") != "canceling" {
		t.Fatalf("PATCH after Cancel: %d %q", r.StatusCode, r.Header.Get("Job-Status"))
	}
	if r := update(t, s, id, token, `{"token":"`+token+`","state":"running"}`); r.Header.Get("Job-Status") != "canceling" {
		t.Fatalf("PUT running after Cancel: %q", r.Header.Get("Job-Status"))
	}
	if r := update(t, s, id, token, `{"token":"`+token+`","state":"failed","failure_reason":"unknown_failure"}`); r.StatusCode != 200 {
		t.Fatalf("final PUT: %d", r.StatusCode)
	}
	res, err := s.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != StateCanceled || res.RunnerState != "failed" || res.Trace != "started\nmore\n" {
		t.Fatalf("result %+v", res)
	}

	// Abort: Job-Status canceled.
	id, token = s.Enqueue(Job{Script: []string{"sleep 30"}})
	requestJob(t, s)
	s.Abort(id)
	if r := patch(t, s, id, token, 0, "x"); r.Header.Get("Job-Status") != "canceled" {
		t.Fatalf("PATCH after Abort: %q", r.Header.Get("Job-Status"))
	}
	// The runner does not move its offset after "canceled": a resend that
	// overlaps is merged.
	if r := patch(t, s, id, token, 0, "xyz"); r.StatusCode != 202 || r.Header.Get("Range") != "0-3" {
		t.Fatalf("overlapping PATCH after Abort: %d %v", r.StatusCode, r.Header)
	}
	update(t, s, id, token, `{"token":"`+token+`","state":"failed","failure_reason":"unknown_failure"}`)
	if res, err := s.Wait(ctx, id); err != nil || res.State != StateCanceled || res.Trace != "xyz" {
		t.Fatalf("abort: %+v %v", res, err)
	}

	// A queued job is canceled at once and never handed out.
	id, _ = s.Enqueue(Job{Script: []string{"true"}})
	s.Cancel(id)
	if res, err := s.Wait(ctx, id); err != nil || res.State != StateCanceled || res.RunnerState != "" {
		t.Fatalf("queued: %+v %v", res, err)
	}
	if resp, _ := requestJob(t, s); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("canceled job handed out: %d", resp.StatusCode)
	}
}

func TestArtifactsAndUnknown(t *testing.T) {
	s := newServer(t)
	id, token := s.Enqueue(Job{Script: []string{"true"}})
	requestJob(t, s)

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "artifacts.zip")
	_, _ = fw.Write([]byte("PK\x03\x04 fake zip"))
	_ = mw.WriteField("expire_in", "1 day")
	_ = mw.Close()
	r := do(t, "POST", fmt.Sprintf("%s/api/v4/jobs/%d/artifacts?artifact_format=zip&artifact_type=archive&expire_in=1+day", s.URL(), id),
		map[string]string{"Job-Token": token, "Content-Type": mw.FormDataContentType()}, buf.Bytes())
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 201 || string(b) != "{}" {
		t.Fatalf("upload: %d %q", r.StatusCode, b)
	}
	a := s.Artifacts(id)
	if len(a) != 1 || a[0].Filename != "artifacts.zip" || a[0].Size != 13 || a[0].Type != "archive" || a[0].Format != "zip" || a[0].ExpireIn != "1 day" {
		t.Fatalf("artifacts %+v", a)
	}

	if r := do(t, "GET", s.URL()+"/api/v4/jobs/1/artifacts", nil, nil); r.StatusCode != 404 {
		t.Fatalf("unknown: %d", r.StatusCode)
	}
	if r := do(t, "POST", s.URL()+"/api/v4/runners/verify", nil, []byte("{}")); r.StatusCode != 404 {
		t.Fatalf("unknown: %d", r.StatusCode)
	}
	if u := s.Unhandled(); len(u) != 2 || u[0] != "GET /api/v4/jobs/1/artifacts" || u[1] != "POST /api/v4/runners/verify" {
		t.Fatalf("unhandled %v", u)
	}
}

func TestSlugs(t *testing.T) {
	for in, want := range map[string]string{
		"production":                "production",
		"Review/Feature_X":          "review-feature-x",
		"1st env":                   "env-1st-env",
		"a--b":                      "a-b",
		"review/a-very-long-name":   "review-a-very-long-name",
		"review/a-very-long-names":  "review-a-very-long-names",
		"review/a-very-long-name-2": "review-a-very-long-name",
	} {
		if got := EnvironmentSlug(in); got != want {
			t.Errorf("EnvironmentSlug(%q) = %q, want %q", in, got, want)
		}
	}
	if got := slug("Feature/ABC_1.2-", 63); got != "feature-abc-1-2" {
		t.Errorf("slug = %q", got)
	}
}
