package stages_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/lock"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// components are the harness's real Docker Engines and registry; outside
// CI a test without them skips, in CI it fails.
type components struct {
	registry, baseImage string
	engines             []harness.Engine
}

func needComponents(t *testing.T) components {
	t.Helper()
	env, path, err := harness.Env()
	if err == nil && env["STAGEHAND_TEST_REGISTRY"] == "" {
		err = fmt.Errorf("%s names no registry", path)
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the harness is required in CI: %v", err)
		}
		t.Skipf("harness not started: %v", err)
	}
	return components{registry: env["STAGEHAND_TEST_REGISTRY"], baseImage: env["STAGEHAND_TEST_BASE_IMAGE"], engines: harness.Engines(env)}
}

// sampleProject copies the sample project into a fresh git repository.
func sampleProject(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../e2e/testdata/sample")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "app/setup.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	gitRun(t, dir, "init", "-q", "-b", "main")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "sample")
	return dir
}

func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.email=t@example.com", "-c", "user.name=t"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func dockerRun(t *testing.T, host, ref string) string {
	t.Helper()
	cmd := exec.Command("docker", "-H", host, "run", "--rm", "--network", "none", ref)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker run %s: %v\n%s%s", ref, err, out, stderr.String())
	}
	return string(out)
}

// syncBuffer is a trace several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func buildRequest(t *testing.T, c components, dir, repo, host string) request.Build {
	commit := gitRun(t, dir, "rev-parse", "HEAD")
	return request.Build{
		Dir: dir, Vars: map[string]string{"BASE_IMAGE": c.baseImage},
		Project: "sample", StagesStorage: repo + "/stages", ImagesRepo: repo,
		Commit: commit, CommitTime: "2026-11-25T00:00:00Z", Ref: request.Ref{Branch: "main"}, RefSlug: "main",
		TagStrategy: gitlab.TagStagesSignature, Engine: request.Engine{Host: host, Network: "none"},
	}
}

func TestBuildPublishesTheSampleProject(t *testing.T) {
	c := needComponents(t)
	dir := sampleProject(t)
	repo := fmt.Sprintf("%s/stagehand-test/build-%d", c.registry, time.Now().UnixNano())
	host := c.engines[0].Host
	var trace syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := stages.Build(ctx, buildRequest(t, c, dir, repo, host), &trace)
	t.Log(trace.String())
	if err != nil {
		t.Fatal(err)
	}
	exports := res.Exports()
	for _, v := range []string{"STAGEHAND_IMAGE_BACKEND", "STAGEHAND_IMAGE_FRONTEND", "STAGEHAND_IMAGE_TOOL"} {
		if !strings.HasPrefix(exports[v], repo) {
			t.Errorf("%s = %q", v, exports[v])
		}
	}
	if got := dockerRun(t, host, exports["STAGEHAND_IMAGE_BACKEND"]); got != "setup ran with libfoo 1.0\n" {
		t.Errorf("backend prints %q", got)
	}
	if got := dockerRun(t, host, exports["STAGEHAND_IMAGE_FRONTEND"]); got != "bundle part one\n" {
		t.Errorf("frontend prints %q", got)
	}
	if got := dockerRun(t, host, exports["STAGEHAND_IMAGE_TOOL"]); got != "hello from the Dockerfile image\n" {
		t.Errorf("tool prints %q", got)
	}

	// The same commit again: everything comes from the storage.
	var again syncBuffer
	res2, err := stages.Build(ctx, buildRequest(t, c, dir, repo, host), &again)
	t.Log(again.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res2.Reports {
		if r.Outcome != stages.OutcomeStored {
			t.Errorf("second build: %s %s", r.Stage, r.Outcome)
		}
	}
	if fmt.Sprint(res2.Exports()) != fmt.Sprint(exports) {
		t.Errorf("second build published other images:\n%v\n%v", res2.Exports(), exports)
	}
}

// losingLocker grants every lock; the lease of the stage named lose is
// lost right away, as when the API server goes away mid-build.
type losingLocker struct{ lose string }

type testLease struct {
	lost chan struct{}
	err  error
	// released, when set, counts the releases, each taking a moment as
	// a write to the API server does.
	released *atomic.Int64
}

func (l *testLease) Release() error {
	if l.released != nil {
		time.Sleep(20 * time.Millisecond)
		l.released.Add(1)
	}
	return nil
}
func (l *testLease) Lost() <-chan struct{} { return l.lost }
func (l *testLease) Err() error            { return l.err }

func (l losingLocker) Take(_ context.Context, name string, _ bool, _ func(string)) (lock.Held, error) {
	lease := &testLease{lost: make(chan struct{})}
	if strings.HasSuffix(name, l.lose) {
		lease.err = fmt.Errorf("lost the lock %s: its lease could not be renewed", name)
		close(lease.lost)
	}
	return lease, nil
}

// TestLostLeaseStopsTheBuildBeforeStoring: a build whose stage lock is
// lost stops with an error naming the lock, and the stage is not stored.
func TestLostLeaseStopsTheBuildBeforeStoring(t *testing.T) {
	c := needComponents(t)
	dir := sampleProject(t)
	repo := fmt.Sprintf("%s/stagehand-test/lease-%d", c.registry, time.Now().UnixNano())
	var trace syncBuffer
	o := buildRequest(t, c, dir, repo, c.engines[0].Host)

	// Find the signature of backend/install from a plan of the same tree.
	cfg, err := config.LoadConfig(dir, o.Vars)
	if err != nil {
		t.Fatal(err)
	}
	src, err := plan.OpenSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.NewPlan(cfg, src.Tree(), nil)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	var install string
	for _, s := range p.Image("backend").Stages {
		if s.Name == plan.StageInstall {
			install = s.Signature
		}
	}
	_, err = stages.Build(context.Background(), o, &trace, stages.WithLocker(losingLocker{lose: install}))
	t.Logf("the build stopped: %v", err)
	if err == nil || !strings.Contains(err.Error(), "lost the lock") || !strings.Contains(err.Error(), install) {
		t.Fatalf("Run = %v, want the lost lock named\n%s", err, trace.String())
	}
	out, lerr := exec.Command("curl", "-fsS", "http://"+repo[:strings.Index(repo, "/")]+"/v2/"+repo[strings.Index(repo, "/")+1:]+"/stages/tags/list").Output()
	if lerr != nil {
		t.Fatal(lerr)
	}
	// (Its edge records, written ahead, name it too: a stored copy is
	// a tag of its signature and a time.)
	if regexp.MustCompile(`"` + install + `-[0-9]+"`).Match(out) {
		t.Errorf("the stage whose lock was lost was stored: %s", out)
	}
	if strings.Contains(trace.String(), "backend/setup") {
		t.Errorf("the build went on after the lost lease:\n%s", trace.String())
	}
}

// countingLocker grants every lock and counts the takes of the project
// lock and of stage locks; onProject runs as the project lock is taken
// (a cleanup that ran just before, in a test).
type countingLocker struct {
	mu             sync.Mutex
	project, stage int
	onProject      func()
	released       atomic.Int64
}

func (l *countingLocker) Take(_ context.Context, name string, _ bool, _ func(string)) (lock.Held, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if name == lock.ProjectLock("sample") {
		l.project++
		if l.onProject != nil {
			l.onProject()
		}
	} else {
		l.stage++
	}
	return &testLease{lost: make(chan struct{}), released: &l.released}, nil
}

// TestOnlyBuildsThatBuildTakeTheProjectLock: a cold build takes the
// project lock once; an idle build, which reads tags alone, takes no
// lock; and when a cleanup deleted a stage found before the lock was
// taken, the build looks again under the lock and builds that stage.
func TestOnlyBuildsThatBuildTakeTheProjectLock(t *testing.T) {
	c := needComponents(t)
	dir := sampleProject(t)
	repo := fmt.Sprintf("%s/stagehand-test/projectlock-%d", c.registry, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := func(l *countingLocker) (*stages.Result, string) {
		t.Helper()
		var trace syncBuffer
		res, err := stages.Build(ctx, buildRequest(t, c, dir, repo, c.engines[0].Host), &trace, stages.WithLocker(l))
		if err != nil {
			t.Fatalf("build: %v\n%s", err, trace.String())
		}
		return res, trace.String()
	}
	cold := &countingLocker{}
	first, _ := build(cold)
	if cold.project != 1 || cold.stage == 0 {
		t.Errorf("the cold build took the project lock %d times and %d stage locks, want once and some", cold.project, cold.stage)
	}
	// Stage locks are given back in the background: every lock taken is
	// given back by the time the build has returned.
	if got := cold.released.Load(); got != int64(cold.project+cold.stage) {
		t.Errorf("when the cold build returned, %d of its %d locks were given back", got, cold.project+cold.stage)
	}
	idle := &countingLocker{}
	build(idle)
	if idle.project != 0 || idle.stage != 0 {
		t.Errorf("the idle build took the project lock %d times and %d stage locks, want none", idle.project, idle.stage)
	}

	// A change to the backend's setup stage; a cleanup deletes its
	// beforeInstall stage once this build has found it, just before the
	// build takes the project lock.
	var victim stages.StageReport
	for _, r := range first.Reports {
		if r.Stage.Image.Name == "backend" && r.Stage.Name == plan.StageBeforeInstall {
			victim = r
		}
	}
	if victim.Stage == nil {
		t.Fatal("the first build has no backend/beforeInstall")
	}
	if err := os.WriteFile(filepath.Join(dir, "app/setup.sh"), []byte("echo setup changed\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	gitRun(t, dir, "commit", "-q", "-am", "setup changed")
	racing := &countingLocker{onProject: func() { deleteManifest(t, c.registry, repo+"/stages", victim.Stored.String()) }}
	res, trace := build(racing)
	if !strings.Contains(trace, "looking again") {
		t.Errorf("the build did not say it looked again:\n%s", trace)
	}
	rebuilt := false
	for _, r := range res.Reports {
		if r.Stage.Image.Name == "backend" && r.Stage.Name == plan.StageBeforeInstall {
			rebuilt = r.Outcome == stages.OutcomeBuilt
		}
	}
	if !rebuilt || racing.project != 1 {
		t.Errorf("after the cleanup: beforeInstall rebuilt %v, project lock taken %d times (want true, 1)\n%s", rebuilt, racing.project, trace)
	}
}

// deleteManifest deletes what tag points at in repo, through the
// registry's API, as a cleanup does.
func deleteManifest(t *testing.T, registry, repo, tag string) {
	t.Helper()
	path := strings.TrimPrefix(repo, registry+"/")
	head, err := exec.Command("curl", "-fsSI", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
		"http://"+registry+"/v2/"+path+"/manifests/"+tag).Output()
	if err != nil {
		t.Fatalf("HEAD %s:%s: %v", repo, tag, err)
	}
	digest := ""
	for _, line := range strings.Split(string(head), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Docker-Content-Digest") {
			digest = strings.TrimSpace(v)
		}
	}
	if out, err := exec.Command("curl", "-fsS", "-X", "DELETE", "http://"+registry+"/v2/"+path+"/manifests/"+digest).CombinedOutput(); err != nil {
		t.Fatalf("DELETE %s@%s: %v\n%s", repo, digest, err, out)
	}
}

// TestStagePullDoesNotWaitForTheBasePulledAhead: the first engine stage
// pulls its parent (made in the registry) as soon as that is stored, not
// after the base image pulled ahead (the Docker Engine shares the layers
// both pulls need). The engine's requests for the base's manifest are
// held 3 s by a proxy: the stage must be pulled before the base is.
func TestStagePullDoesNotWaitForTheBasePulledAhead(t *testing.T) {
	c := needComponents(t)
	stamp := time.Now().UnixNano()
	target := &url.URL{Scheme: "http", Host: c.registry}
	rp := httputil.NewSingleHostReverseProxy(target)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.UserAgent(), "docker/") && strings.Contains(r.URL.Path, "/manifests/") {
			time.Sleep(3 * time.Second)
		}
		rp.ServeHTTP(w, r)
	}))
	defer slow.Close()
	// A base reference this engine has never pulled, copied from the
	// harness's base image (same layers).
	baseRepo := fmt.Sprintf("stagehand-test/pullbase-%d", stamp)
	src, err := name.ParseReference(c.baseImage)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(src)
	if err != nil {
		t.Fatal(err)
	}
	copyRef, err := name.ParseReference(c.registry + "/" + baseRepo + ":latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(copyRef, img); err != nil {
		t.Fatal(err)
	}
	base := strings.TrimPrefix(slow.URL, "http://") + "/" + baseRepo + ":latest"

	dir := t.TempDir()
	files := map[string]string{
		"werf.yaml": "project: sample\nconfigVersion: 1\n---\nimage: ~\nfrom: {{ env \"BASE_IMAGE\" }}\ngit:\n- add: /\n  to: /app\nshell:\n  install:\n  - cat /app/hello.txt\n",
		"hello.txt": "hello\n",
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitRun(t, dir, "init", "-q", "-b", "main")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "pull")
	repo := fmt.Sprintf("%s/stagehand-test/pull-%d", c.registry, stamp)
	req := buildRequest(t, c, dir, repo, c.engines[0].Host)
	req.Vars["BASE_IMAGE"] = base
	defer exec.Command("docker", "-H", c.engines[0].Host, "rmi", base).Run()

	var trace syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := stages.Build(ctx, req, &trace); err != nil {
		t.Fatalf("build: %v\n%s", err, trace.String())
	}
	out := trace.String()
	stagePulled, basePulled := strings.Index(out, "to build on it"), strings.Index(out, "Pulled base image")
	if stagePulled < 0 || basePulled < 0 || stagePulled > basePulled {
		t.Errorf("want the install stage's parent pulled (at %d) before the base pulled ahead (at %d):\n%s", stagePulled, basePulled, out)
	}
}

// recordCheckingLocker grants every lock; as each stage lock after the
// first is taken, it reads the storage's tags and notes the stages whose
// edge records are not there yet.
type recordCheckingLocker struct {
	mu      sync.Mutex
	tags    func() string
	taken   int
	missing []string
}

func (l *recordCheckingLocker) Take(_ context.Context, name string, _ bool, _ func(string)) (lock.Held, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sig, ok := strings.CutPrefix(name, lock.ProjectLock("sample")+"/stage/"); ok {
		if l.taken > 0 && !strings.Contains(l.tags(), `"`+stagesrepo.EdgeRecord(sig, "")[:len("e-")+len(sig)]) {
			l.missing = append(l.missing, sig)
		}
		l.taken++
	}
	return &testLease{lost: make(chan struct{})}, nil
}

// TestEdgeRecordsAreWrittenAhead: the edge records of every stage a cold
// build makes are written from its first stage on, all at once, not as
// each stage is made: each later stage finds its records stored when it
// takes its lock.
func TestEdgeRecordsAreWrittenAhead(t *testing.T) {
	c := needComponents(t)
	dir := sampleProject(t)
	repo := fmt.Sprintf("%s/stagehand-test/edges-%d", c.registry, time.Now().UnixNano())
	path := strings.TrimPrefix(repo, c.registry+"/") + "/stages"
	l := &recordCheckingLocker{tags: func() string {
		out, err := exec.Command("curl", "-fsS", "http://"+c.registry+"/v2/"+path+"/tags/list?n=10000").Output()
		if err != nil {
			t.Errorf("list %s: %v", path, err)
		}
		return string(out)
	}}
	var trace syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := stages.Build(ctx, buildRequest(t, c, dir, repo, c.engines[0].Host), &trace, stages.WithLocker(l)); err != nil {
		t.Fatalf("build: %v\n%s", err, trace.String())
	}
	if l.taken < 5 || len(l.missing) > 0 {
		t.Errorf("%d stage locks taken; stages without their edge records when their lock was taken: %v", l.taken, l.missing)
	}
}

// TestBuildLeavesNoStageContainer: the containers of shell stages are
// removed while the build goes on, and all of them before Build returns,
// whether the build succeeds or a stage fails.
func TestBuildLeavesNoStageContainer(t *testing.T) {
	c := needComponents(t)
	host := c.engines[0].Host
	for _, tc := range []struct {
		name, setup string
		fails       bool
	}{
		{"success", "echo built", false},
		{"failure", "exit 3", true},
	} {
		dir := t.TempDir()
		werf := "project: sample\nconfigVersion: 1\n---\nimage: ~\nfrom: {{ env \"BASE_IMAGE\" }}\nshell:\n  install:\n  - echo " + fmt.Sprint(time.Now().UnixNano()) + "\n  setup:\n  - " + tc.setup + "\n"
		if err := os.WriteFile(filepath.Join(dir, "werf.yaml"), []byte(werf), 0o644); err != nil {
			t.Fatal(err)
		}
		gitRun(t, dir, "init", "-q", "-b", "main")
		gitRun(t, dir, "add", ".")
		gitRun(t, dir, "commit", "-q", "-m", tc.name)
		repo := fmt.Sprintf("%s/stagehand-test/containers-%d", c.registry, time.Now().UnixNano())
		var trace syncBuffer
		res, err := stages.Build(context.Background(), buildRequest(t, c, dir, repo, host), &trace)
		if (err != nil) != tc.fails {
			t.Fatalf("%s: build: %v\n%s", tc.name, err, trace.String())
		}
		// Each stage built says "Building stage <name> (<signature's
		// first 12>)", which starts its container's name.
		built := regexp.MustCompile(`Building stage (\S+) \(([0-9a-f]{12})\)`).FindAllStringSubmatch(trace.String(), -1)
		if res == nil || len(built) != 3 {
			t.Fatalf("%s: want from, install and setup built, got %q\n%s", tc.name, built, trace.String())
		}
		for _, m := range built {
			out, err := exec.Command("docker", "-H", host, "ps", "-aq", "--filter", "name=stagehand-stage-"+m[2]).CombinedOutput()
			if err != nil {
				t.Fatalf("docker ps: %v\n%s", err, out)
			}
			if ids := strings.TrimSpace(string(out)); ids != "" {
				t.Errorf("%s: containers of stage %s left: %s", tc.name, m[1], ids)
			}
		}
	}
}
