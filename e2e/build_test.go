package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/gitserver"
	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/e2e/registryproxy"
	stagetrace "gitlab.com/stagehand/stagehand/trace"
)

// sampleFiles reads the sample project (testdata/sample) as the git
// server takes it.
func sampleFiles(t testing.TB) map[string]string {
	t.Helper()
	return mustReadTree(t, filepath.Join("testdata", "sample"))
}

// buildProject is one sample project in its own registry repository,
// reached through a counting proxy.
type buildProject struct {
	gs      *gitserver.Server
	proxy   *registryproxy.Proxy
	project string
	repo    gitserver.Repo
	base    string
}

// newServers are a git server and a counting proxy of the harness's
// registry for one test.
func newServers(t *testing.T) (*gitserver.Server, *registryproxy.Proxy) {
	t.Helper()
	gs, err := gitserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gs.Close)
	proxy, err := registryproxy.Start(h.Registry)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	return gs, proxy
}

func newBuildProject(t *testing.T) *buildProject {
	t.Helper()
	gs, proxy := newServers(t)
	var err error
	p := &buildProject{gs: gs, proxy: proxy, project: fmt.Sprintf("stagehand/sample-%d", time.Now().UnixNano())}
	// werf.yaml's project: names the environments' namespaces and
	// releases (as in werf 1.1), so each test's project has its own.
	files := sampleFiles(t)
	files["werf.yaml"] = strings.Replace(files["werf.yaml"], "project: sample\n", "project: "+path.Base(p.project)+"\n", 1)
	if p.repo, err = gs.CreateRepo(p.project, files); err != nil {
		t.Fatal(err)
	}
	// The base image through the proxy too, so that the stages repository
	// and the base share a registry (blobs are mounted, not copied).
	p.base = proxy.Addr() + strings.TrimPrefix(h.BaseImage, h.Registry)
	return p
}

// job is the project's build job at repo.
func (p *buildProject) job(repo gitserver.Repo) coordinator.Job {
	return coordinator.Job{
		Name: "build", Stage: "build", Repo: &repo, Project: p.project, Registry: p.proxy.Addr(),
		Variables: []coordinator.Variable{{Key: "BASE_IMAGE", Value: p.base}},
		Script: []string{
			`echo "image backend=$STAGEHAND_IMAGE_BACKEND@$STAGEHAND_IMAGE_BACKEND_DIGEST"`,
			`echo "image frontend=$STAGEHAND_IMAGE_FRONTEND@$STAGEHAND_IMAGE_FRONTEND_DIGEST"`,
			`echo "image tool=$STAGEHAND_IMAGE_TOOL@$STAGEHAND_IMAGE_TOOL_DIGEST"`,
		},
		Timeout: 5 * time.Minute,
	}
}

// runner is a runner on one engine (a runner host).
func (p *buildProject) runner(t *testing.T, e harness.Engine, env ...string) *harness.Runner {
	t.Helper()
	r, err := h.NewRunner(t.Name() + "-" + e.Name)
	if err != nil {
		t.Fatal(err)
	}
	r.Env = append([]string{"STAGEHAND_DOCKER_HOST=" + e.Host, "STAGEHAND_DOCKER_NETWORK=none"}, env...)
	return r
}

var publishedLine = regexp.MustCompile(`(?m)\simage (\w+)=(\S+)@(sha256:[0-9a-f]{64})$`)

// published reads the references and digests the job's script printed.
func published(t *testing.T, run *harness.JobRun) map[string][2]string {
	t.Helper()
	out := map[string][2]string{}
	for _, m := range publishedLine.FindAllStringSubmatch(run.Result.Trace, -1) {
		out[m[1]] = [2]string{m[2], m[3]}
	}
	if len(out) != 3 {
		t.Fatalf("the script saw %d published images, want 3 (backend, frontend, tool)\ntrace:\n%s", len(out), run.Result.Trace)
	}
	return out
}

// A stage's result line follows the end of its trace section: after
// GitLab's erase-line code, or (the runner's log splits at the carriage
// return) on a continuation line, marked '+'.
var builtLine = regexp.MustCompile(`(?m)(?:[\s+]|\x1b\[0K)([~\w][\w.-]*/\w+)\s+built \(`)

// builtStages lists the stages a trace says were built.
func builtStages(trace string) []string {
	var out []string
	for _, m := range builtLine.FindAllStringSubmatch(trace, -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}

func dockerCLI(t testing.TB, host string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", append([]string{"-H", host}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// emptyEngine removes every image of an engine: a host that never saw
// the project.
func emptyEngine(t testing.TB, e harness.Engine) {
	t.Helper()
	_ = exec.Command("docker", "-H", e.Host, "container", "prune", "-f").Run()
	for attempt := 0; attempt < 5; attempt++ {
		ids := strings.Fields(dockerCLI(t, e.Host, "images", "-aq"))
		if len(ids) == 0 {
			return
		}
		// Children go before parents; an id already gone is fine.
		_ = exec.Command("docker", append([]string{"-H", e.Host, "rmi", "-f"}, ids...)...).Run()
	}
	t.Fatalf("engine %s still has images: %s", e.Name, dockerCLI(t, e.Host, "images", "-a"))
}

func TestBuildJobPublishesTheSampleProject(t *testing.T) {
	if len(h.Engines) < 3 {
		t.Fatalf("the stages tests need 3 Docker Engines (STAGEHAND_ENGINES), the harness has %d", len(h.Engines))
	}
	p := newBuildProject(t)
	h1, h3 := h.Engines[0], h.Engines[2]

	run := runOn(t, p.runner(t, h1), p.job(p.repo), nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "stagehand build", "IMAGE", "Build done in")
	// The trace shows each stage's own output, marked as the stage's, in a
	// collapsed section per stage; not the engine's chatter nor labels.
	wantTrace(t, run, stagetrace.Prefix+"installing libfoo 1.0\n", "section_start:", ":stage-backend_install-", "[collapsed=true]")
	for _, chatter := range []string{"Removing intermediate container", "---> Running in", "Step 1/", "io.stagehand.git.", "LABEL "} {
		if strings.Contains(run.Result.Trace, chatter) {
			t.Errorf("the build trace shows the engine's %q", chatter)
		}
	}
	images := published(t, run)
	for name, want := range map[string]string{
		"backend":  "setup ran with libfoo 1.0\n",
		"frontend": "bundle part one\n",
		"tool":     "hello from the Dockerfile image\n",
	} {
		ref := images[name][0]
		if got := dockerCLI(t, h1.Host, "run", "--rm", "--network", "none", ref); got != want {
			t.Errorf("docker run %s printed %q, want %q", ref, got, want)
		}
	}

	// Published by manifest copy, annotated for cleanup.
	backendTag := images["backend"][0][strings.LastIndex(images["backend"][0], ":")+1:]
	var pub manifest
	registryGet(t, "/v2/"+p.project+"/backend/manifests/"+backendTag, &pub)
	for k, want := range map[string]string{
		"io.stagehand.ref": "main", "io.stagehand.ref-kind": "branch", "io.stagehand.commit": p.repo.SHA,
		"io.stagehand.commit-time": coordinator.CommitTimestamp, "io.stagehand.image": "backend",
		"io.stagehand.stage": storedTag(t, run.Result.Trace, "backend/dockerInstructions"),
	} {
		if got := pub.Annotations[k]; got != want {
			t.Errorf("published backend: annotation %s = %q, want %q", k, got, want)
		}
	}
	if n := len(strings.Split(pub.Annotations["io.stagehand.stages"], ",")); n != 7 {
		t.Errorf("published backend names %d stages, want its 7", n)
	}

	t.Run("idle build on a fresh host pulls no blob", func(t *testing.T) {
		emptyEngine(t, h3)
		p.proxy.Reset()
		run := runOn(t, p.runner(t, h3), p.job(p.repo), nil)
		wantState(t, run, "success", "")
		stats := p.proxy.Stats()
		t.Logf("idle build on %s: %+v in %s", h3.Name, stats, run.Duration)
		if stats.BlobGets != 0 || stats.BlobBytes != 0 {
			t.Errorf("the idle build downloaded %d blobs (%d bytes), want none", stats.BlobGets, stats.BlobBytes)
		}
		if got := builtStages(run.Result.Trace); len(got) != 0 {
			t.Errorf("the idle build built %v", got)
		}
		if again := published(t, run); fmt.Sprint(again) != fmt.Sprint(images) {
			t.Errorf("the idle build published other digests:\n%v\n%v", again, images)
		}
	})

	t.Run("a setup dependency rebuilds setup and later stages, pulling only the parent", func(t *testing.T) {
		changed, err := p.gs.Commit(p.project, map[string]string{"app/setup.sh": "#!/bin/sh\necho \"setup v2 with $(cat /installed-deps.txt)\"\n"})
		if err != nil {
			t.Fatal(err)
		}
		emptyEngine(t, h3)
		p.proxy.Reset()
		run := runOn(t, p.runner(t, h3), p.job(changed), nil)
		wantState(t, run, "success", "")
		want := []string{"backend/dockerInstructions", "backend/gitLatestPatch", "backend/setup", "frontend/dockerInstructions", "frontend/importsAfterSetup"}
		if got := builtStages(run.Result.Trace); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("built %v, want %v", got, want)
		}
		wantTrace(t, run, "Reusing the import layer of frontend/importsAfterSetup")
		parent := stageManifest(t, p.project, storedTag(t, run.Result.Trace, "backend/install"))
		configs := stageConfigs(t, p.project)
		stats := p.proxy.Stats()
		var layerBytes, configBytes int64
		for d, n := range stats.BlobBytesByDigest {
			if configs[d] {
				configBytes += n
			} else {
				layerBytes += n
			}
		}
		t.Logf("one-stage change on a fresh host: layers pulled %d bytes, image configs read %d bytes (%d blob GETs, %d requests); the parent stage is %d bytes; job %s",
			layerBytes, configBytes, stats.BlobGets, stats.Requests, parent.size(), run.Duration)
		if layerBytes > parent.size() {
			t.Errorf("pulled %d bytes of layers, more than the parent stage's %d", layerBytes, parent.size())
		}
		ref := published(t, run)["backend"][0]
		if got := dockerCLI(t, h3.Host, "run", "--rm", "--network", "none", ref); got != "setup v2 with libfoo 1.0\n" {
			t.Errorf("docker run %s printed %q", ref, got)
		}
	})

	t.Run("shallow and full clones give the same stages", func(t *testing.T) {
		head, err := p.gs.Commit(p.project, map[string]string{"web/b.txt": "bundle part two\n"})
		if err != nil {
			t.Fatal(err)
		}
		shallow := head
		shallow.Depth = 1
		full := head
		full.Depth = 0
		runShallow := runOn(t, p.runner(t, h1), p.job(shallow), nil)
		wantState(t, runShallow, "success", "")
		runFull := runOn(t, p.runner(t, h1), p.job(full), nil)
		wantState(t, runFull, "success", "")
		wantTrace(t, runShallow, "git depth set to 1")
		a, b := published(t, runShallow), published(t, runFull)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("shallow clone published %v\nfull clone published %v", a, b)
		}
		if got := builtStages(runFull.Result.Trace); len(got) != 0 {
			t.Errorf("the full clone rebuilt %v after the shallow one", got)
		}
	})
}

var storedLine = regexp.MustCompile(`(?m)(?:[\s+]|\x1b\[0K)([^\s\x1b+]+/\S+)\s+(?:used from storage|built|waited, then used from storage) \([^)]*\) ([0-9a-f]{56}-[0-9]+)$`)

// storedTag is the stage tag a trace names for stage ("backend/install").
func storedTag(t *testing.T, trace, stage string) string {
	t.Helper()
	for _, m := range storedLine.FindAllStringSubmatch(trace, -1) {
		if m[1] == stage {
			return m[2]
		}
	}
	t.Fatalf("the trace names no stored %s", stage)
	return ""
}

type manifest struct {
	Annotations map[string]string
	Config      struct {
		Digest string
		Size   int64
	}
	Layers []struct {
		Digest string
		Size   int64
	}
}

func (m manifest) size() int64 {
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

func registryGet(t *testing.T, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+h.Registry+path, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// stageManifest reads a stage's manifest from the registry (not through
// the proxy, so that the reading is not counted).
func stageManifest(t *testing.T, project, tag string) manifest {
	t.Helper()
	var m manifest
	registryGet(t, "/v2/"+project+"/stages/manifests/"+tag, &m)
	return m
}

// stageConfigs are the config digests of every stage of the project.
func stageConfigs(t *testing.T, project string) map[string]bool {
	t.Helper()
	var list struct{ Tags []string }
	registryGet(t, "/v2/"+project+"/stages/tags/list", &list)
	out := map[string]bool{}
	for _, tag := range list.Tags {
		out[stageManifest(t, project, tag).Config.Digest] = true
	}
	return out
}

// TestTwoHostsBuildTheSameCommitOnce: two runner hosts (two engines with
// their own data roots, one registry) build one cold commit at the same
// time, synchronized through the API server: every stage is built once,
// and both publish the same digests.
func TestTwoHostsBuildTheSameCommitOnce(t *testing.T) {
	p := newBuildProject(t)
	hosts := []harness.Engine{h.Engines[0], h.Engines[1]}
	runs := make([]*harness.JobRun, len(hosts))
	errs := make([]error, len(hosts))
	runners := make([]*harness.Runner, len(hosts))
	for i, e := range hosts {
		runners[i] = p.runner(t, e, "STAGEHAND_SYNCHRONIZATION=kubernetes://stagehand-synchronization", "STAGEHAND_KUBECONFIG="+h.Kubeconfig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = runners[i].Run(ctx, p.job(p.repo), nil)
		}()
	}
	wg.Wait()
	builtBy := map[string][]string{}
	for i, run := range runs {
		if errs[i] != nil {
			t.Fatalf("job on %s: %v", hosts[i].Name, errs[i])
		}
		wantState(t, run, "success", "")
		wantTrace(t, run, "Synchronization: ConfigMap stagehand-")
		checkJob(t, runners[i], run, p.job(p.repo))
		for _, s := range builtStages(run.Result.Trace) {
			builtBy[s] = append(builtBy[s], hosts[i].Name)
		}
	}
	if len(builtBy) != 13 {
		t.Errorf("%d distinct stages built, want the sample's 13: %v", len(builtBy), builtBy)
	}
	for s, by := range builtBy {
		if len(by) != 1 {
			t.Errorf("stage %s built %d times (on %v)", s, len(by), by)
		}
	}
	var list struct{ Tags []string }
	registryGet(t, "/v2/"+p.project+"/stages/tags/list", &list)
	sigs := map[string]int{}
	for _, tag := range list.Tags {
		if sig, _, ok := strings.Cut(tag, "-"); ok && len(sig) == 56 {
			sigs[sig]++
		}
	}
	for sig, n := range sigs {
		if n != 1 {
			t.Errorf("the registry holds %d copies of stage %s", n, sig)
		}
	}
	waits := strings.Count(runs[0].Result.Trace+runs[1].Result.Trace, "Waiting for stage")
	t.Logf("stages built: %d on %s, %d on %s; %d waits; %d stage tags in the registry",
		countOn(builtBy, hosts[0].Name), hosts[0].Name, countOn(builtBy, hosts[1].Name), hosts[1].Name, waits, len(list.Tags))
	a, b := published(t, runs[0]), published(t, runs[1])
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("the hosts published different images:\n%v\n%v", a, b)
	}
}

func countOn(builtBy map[string][]string, host string) int {
	n := 0
	for _, by := range builtBy {
		for _, h := range by {
			if h == host {
				n++
			}
		}
	}
	return n
}

func TestBuildJobWithABadConfigFailsNamingTheLine(t *testing.T) {
	p := newBuildProject(t)
	bad, err := p.gs.Commit(p.project, map[string]string{"werf.yaml": "project: sample\nconfigVersion: 1\n---\nimage: app\nfrom: base\nansible:\n  install: []\n"})
	if err != nil {
		t.Fatal(err)
	}
	run := runOn(t, p.runner(t, h.Engines[0]), p.job(bad), nil)
	wantState(t, run, "failed", "script_failure")
	wantTrace(t, run, "werf.yaml:6:", "ansible")
	if strings.Contains(run.Result.Trace, "image backend=") {
		t.Error("the script ran after the build failed")
	}

	// A Dockerfile the config names but the commit lacks: planned (a
	// config may be checked alone), refused by the build.
	missing, err := p.gs.Commit(p.project, map[string]string{"werf.yaml": "project: sample\nconfigVersion: 1\n---\nimage: app\ndockerfile: docker/Dockerfile\n"})
	if err != nil {
		t.Fatal(err)
	}
	run = runOn(t, p.runner(t, h.Engines[0]), p.job(missing), nil)
	wantState(t, run, "failed", "script_failure")
	wantTrace(t, run, `werf.yaml:4: image "app": dockerfile: docker/Dockerfile is not in the project`)
}

// TestFailingStageShowsItsCauseLast: a failing install: fails the job as
// the job's fault, with the command and its last lines at the end of the
// trace; STAGEHAND_LOG_LEVEL=debug shows the engine's own lines.
func TestFailingStageShowsItsCauseLast(t *testing.T) {
	p := newBuildProject(t)
	failing, err := p.gs.Commit(p.project, map[string]string{"werf.yaml": "project: " + path.Base(p.project) + "\nconfigVersion: 1\n---\nimage: app\nfrom: {{ env \"BASE_IMAGE\" }}\nshell:\n  install:\n  - echo preparing the install\n  - for i in 1 2 3; do echo \"compiling part $i\"; done\n  - sh -c 'echo no space left on device >&2; exit 7'\n  - echo never here\n"})
	if err != nil {
		t.Fatal(err)
	}
	run := runOn(t, p.runner(t, h.Engines[0]), p.job(failing), nil)
	wantState(t, run, "failed", "script_failure")
	tail := run.Result.Trace[max(0, len(run.Result.Trace)-1500):]
	for _, want := range []string{"stage app/install failed: `sh -c 'echo no space left on device >&2; exit 7'` exited with 7", stagetrace.Prefix + "compiling part 3", stagetrace.Prefix + "no space left on device"} {
		if !strings.Contains(tail, want) {
			t.Errorf("the end of the trace lacks %q:\n%s", want, tail)
		}
	}
	if strings.Contains(run.Result.Trace, "never here") {
		t.Error("the stage went on after a failing command")
	}

	// A Dockerfile's RUN output too (an engine without the build cache,
	// so that the RUN runs), and without the engine's chatter: one LABEL
	// step carries the stage's labels.
	e := h.Engines[1]
	emptyEngine(t, e)
	run = runOn(t, p.runner(t, e), p.job(p.repo), nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, stagetrace.Prefix+"tool has 32 bytes of greeting\n")
	if strings.Contains(run.Result.Trace, "Step ") || strings.Contains(run.Result.Trace, "Running in") {
		t.Error("the Dockerfile build shows the engine's chatter")
	}

	// STAGEHAND_LOG_LEVEL=debug shows the engine's lines.
	debug := newBuildProject(t)
	emptyEngine(t, e)
	j := debug.job(debug.repo)
	j.Variables = append(j.Variables, coordinator.Variable{Key: "STAGEHAND_LOG_LEVEL", Value: "debug"})
	run = runOn(t, debug.runner(t, e), j, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Step 1/", "---> Running in", "tool has 32 bytes of greeting")
	if n := strings.Count(run.Result.Trace, ": LABEL "); n != 1 {
		t.Errorf("the Dockerfile build has %d LABEL steps, want 1", n)
	}
}
