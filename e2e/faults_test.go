package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/e2e/registryproxy"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/stagesrepo"
	stagetrace "gitlab.com/stagehand/stagehand/trace"
)

// projectRepos lists the registry's repositories of a project path.
func projectRepos(t *testing.T, project string) []string {
	t.Helper()
	var out []string
	last := ""
	for {
		var cat struct{ Repositories []string }
		registryGet(t, "/v2/_catalog?n=1000&last="+last, &cat)
		for _, r := range cat.Repositories {
			if r == project || strings.HasPrefix(r, project+"/") {
				out = append(out, r)
			}
		}
		if len(cat.Repositories) < 1000 {
			break
		}
		last = cat.Repositories[len(cat.Repositories)-1]
	}
	return out
}

// brokenTags checks every tag of a project's repositories, straight at
// the registry: its manifest must be there and so must every blob it
// names. It answers the broken ones, and how many tags it checked.
func brokenTags(t *testing.T, project string) (broken []string, checked int) {
	t.Helper()
	accept := "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
	for _, repo := range projectRepos(t, project) {
		var list struct{ Tags []string }
		registryGet(t, "/v2/"+repo+"/tags/list", &list)
		for _, tag := range list.Tags {
			checked++
			req, _ := http.NewRequest(http.MethodGet, "http://"+h.Registry+"/v2/"+repo+"/manifests/"+tag, nil)
			req.Header.Set("Accept", accept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Config struct{ Digest string }
				Layers []struct{ Digest string }
			}
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil {
				broken = append(broken, fmt.Sprintf("%s:%s (manifest: %s)", repo, tag, resp.Status))
				continue
			}
			blobs := []string{m.Config.Digest}
			for _, l := range m.Layers {
				blobs = append(blobs, l.Digest)
			}
			for _, b := range blobs {
				resp, err := http.Head("http://" + h.Registry + "/v2/" + repo + "/blobs/" + b)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					broken = append(broken, fmt.Sprintf("%s:%s (blob %s: %s)", repo, tag, b, resp.Status))
				}
			}
		}
	}
	return broken, checked
}

func assertNoBrokenTag(t *testing.T, project, when string) int {
	t.Helper()
	broken, checked := brokenTags(t, project)
	for _, b := range broken {
		t.Errorf("%s: broken tag %s", when, b)
	}
	return checked
}

// storedSignatures are the signatures the stages repository holds.
func storedSignatures(t *testing.T, project string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, repo := range projectRepos(t, project) {
		if repo != project+"/stages" {
			continue
		}
		var list struct{ Tags []string }
		registryGet(t, "/v2/"+repo+"/tags/list", &list)
		for _, tag := range list.Tags {
			if sig, ms, ok := strings.Cut(tag, "-"); ok && len(sig) == 56 && !strings.Contains(ms, "-") {
				out[sig] = true
			}
		}
	}
	return out
}

// builtSignature matches a trace's line of a stage built by this build:
// "backend/install   built (1.2s) <signature>-<ms>".
var builtSignature = regexp.MustCompile(`(?m)^\S+\s+built \([^)]*\) ([0-9a-f]{56})-\d+$`)

// killableCLI starts stagehand in a process group of its own, so that
// SIGKILL takes the worker with it, as when a runner host dies.
func killableCLI(env []string, args ...string) (*exec.Cmd, *bytes.Buffer, error) {
	cmd := exec.Command(h.Stagehand, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, &out, cmd.Start()
}

// TestBuilderKilledAtRandomPointsLeavesNoBrokenTag (issue 7, crash during
// publish): a build is SIGKILLed, worker and all, at a random moment of
// building, storing and publishing its stages, 20 times over changes of
// one to three inputs. After every kill no tag of the stages or images
// repositories names a missing manifest or blob, and the next build
// completes, building none of the stages the killed one stored.
func TestBuilderKilledAtRandomPointsLeavesNoBrokenTag(t *testing.T) {
	e := h.Engines[2]
	project := fmt.Sprintf("stagehand/crash-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	env := []string{"BASE_IMAGE=" + h.BaseImage, "DOCKER_CONFIG=" + t.TempDir()}
	args := func(dir string) []string {
		return []string{"build", "--dir", dir, "--repo", repo, "--project", "crash", "--docker-host", e.Host, "--docker-network", "none",
			"--synchronization", ":local", "--locks-dir", t.TempDir()}
	}
	files := sampleFiles(t)
	// A payload makes the install and git layers a few megabytes, so that
	// kills land in pushes too.
	payload := func() string {
		b := make([]byte, 1<<20+rng.Intn(2<<20))
		for i := range b {
			b[i] = "0123456789abcdef"[rng.Intn(16)]
		}
		return string(b)
	}
	inputs := []func(i int){
		func(i int) { files["app/deps.txt"] = fmt.Sprintf("libfoo 1.%d\n%s\n", i, payload()) },
		func(i int) { files["app/setup.sh"] = fmt.Sprintf("#!/bin/sh\necho \"setup ran, trial %d\"\n", i) },
		func(i int) { files["web/a.txt"] = fmt.Sprintf("asset %d\n", i) },
		func(i int) { files["tool/hello.txt"] = fmt.Sprintf("hello %d\n", i) },
	}
	// The first build, whole, measures how long a build takes.
	inputs[0](0)
	start := time.Now()
	if _, trace, err := stagehandCLI(t, env, args(checkout(t, files))...); err != nil {
		t.Fatalf("first build: %v\n%s", err, trace)
	}
	full := time.Since(start)
	// 20 builds killed midway; a build that ends before its kill counts
	// for nothing (within 40 tries).
	const kills, tries = 20, 40
	killedMidway, reused, i := 0, 0, 0
	for killedMidway < kills && i < tries {
		i++
		for _, n := range rng.Perm(len(inputs))[:1+rng.Intn(3)] {
			inputs[n](i)
		}
		dir := checkout(t, files)
		cmd, out, err := killableCLI(env, args(dir)...)
		if err != nil {
			t.Fatal(err)
		}
		// A change builds part of what the first build did: kills within
		// its first half land in most builds.
		delay := time.Duration(rng.Int63n(int64(full / 2)))
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		what := "killed at " + delay.Round(time.Millisecond).String()
		select {
		case err := <-exited:
			what = fmt.Sprintf("ended before the kill at %s (%v)", delay.Round(time.Millisecond), err)
		case <-time.After(delay):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			killedMidway++
		}
		stored := storedSignatures(t, project)
		checked := assertNoBrokenTag(t, project, fmt.Sprintf("trial %d, %s", i, what))
		_, trace, err := stagehandCLI(t, env, args(dir)...)
		if err != nil {
			t.Fatalf("trial %d: the build after the kill failed: %v\n%s\nkilled build:\n%s", i, err, trace, out)
		}
		var rebuilt []string
		built := builtSignature.FindAllStringSubmatch(trace, -1)
		for _, m := range built {
			if stored[m[1]] {
				rebuilt = append(rebuilt, m[1][:12])
			}
		}
		if len(rebuilt) > 0 {
			t.Errorf("trial %d: the build after the kill rebuilt stages the killed one had stored: %v\n%s", i, rebuilt, trace)
		}
		reused += strings.Count(trace, " used from storage (")
		t.Logf("trial %d: %s; %d tags intact; then %d stages built, the rest used from storage", i, what, checked, len(built))
	}
	if killedMidway < kills {
		t.Errorf("only %d of %d builds were killed before they ended", killedMidway, i)
	}
	broken, checked := brokenTags(t, project)
	t.Logf("%d of %d builds killed midway (a full build takes %s); %d tags checked at the end, %d broken; %d stages used from storage by the builds after the kills",
		killedMidway, i, full.Round(time.Millisecond), checked, len(broken), reused)
}

// TestBuildThroughAFlakyRegistry (issue 7, flaky registry): build jobs of
// a cold project through a proxy that answers bursts of 503s, resets
// connections, delays answers or cuts bodies short. Each build either
// succeeds through retries, or fails as a runner system failure with a
// trace line naming the registry; never after more than a few minutes of
// retries; never leaving a broken tag. Once the registry is well again,
// the same job succeeds.
func TestBuildThroughAFlakyRegistry(t *testing.T) {
	profiles := []struct {
		name   string
		faults registryproxy.Faults
		// down: every request fails, so the build must fail.
		down bool
	}{
		// At most 20 faults each: every retry waits, and the job must end
		// within the test's time.
		{"bursts of 503", registryproxy.Faults{ErrorRate: 0.04, ErrorBurst: 2, MaxFaults: 20}, false},
		{"connection resets", registryproxy.Faults{ResetRate: 0.03, MaxFaults: 20}, false},
		{"latency spikes", registryproxy.Faults{LatencyRate: 0.05, Latency: time.Second, MaxFaults: 20}, false},
		{"truncated bodies", registryproxy.Faults{TruncateRate: 0.1, MaxFaults: 20}, false},
		{"all of them", registryproxy.Faults{ErrorRate: 0.02, ErrorBurst: 2, ResetRate: 0.02, LatencyRate: 0.02, Latency: time.Second, TruncateRate: 0.04, MaxFaults: 30}, false},
		{"the registry is down", registryproxy.Faults{ErrorRate: 1}, true},
	}
	e := h.Engines[1]
	// A build may fail through transient faults too, as a system failure
	// (GitLab retries those), but retries must carry most of them.
	var failedThrough []string
	defer func() {
		if len(failedThrough) > 2 {
			t.Errorf("retries carried only %d of %d builds through transient faults; failed: %v", len(profiles)-1-len(failedThrough), len(profiles)-1, failedThrough)
		}
	}()
	for i, pr := range profiles {
		t.Run(pr.name, func(t *testing.T) {
			p := newBuildProject(t)
			emptyEngine(t, e)
			f := pr.faults
			f.Seed = time.Now().UnixNano() + int64(i)
			p.proxy.SetFaults(f)
			r := p.runner(t, e)
			run := runOn(t, r, p.job(p.repo), nil)
			injected := p.proxy.Injected()
			if os.Getenv("SHOW_TRACE") != "" {
				t.Logf("trace:\n%s", run.Result.Trace)
			}
			t.Logf("seed %d: %+v injected over %d requests; the job ended %s/%s after %s",
				f.Seed, injected, p.proxy.Stats().Requests, run.Result.State, run.Result.FailureReason, run.Duration.Round(time.Millisecond))
			if run.Duration > 4*time.Minute {
				t.Errorf("the job took %s: retries must be bounded", run.Duration.Round(time.Second))
			}
			switch {
			case run.Result.State == "success":
				if pr.down {
					t.Fatalf("a build succeeded with the registry down\n%s", run.Result.Trace)
				}
				published(t, run)
			case run.Result.FailureReason == "runner_system_failure":
				if !pr.down {
					failedThrough = append(failedThrough, pr.name)
				}
				if !strings.Contains(run.Result.Trace, p.proxy.Addr()) {
					t.Errorf("the failed build's trace does not name the registry %s:\n%s", p.proxy.Addr(), run.Result.Trace)
				}
			default:
				t.Errorf("the job ended %s/%s: a registry's faults are a system failure, not the job's\n%s", run.Result.State, run.Result.FailureReason, run.Result.Trace)
			}
			if injected.Total() == 0 {
				t.Error("no fault was injected")
			}
			p.proxy.SetFaults(registryproxy.Faults{})
			assertNoBrokenTag(t, p.project, "after the faulty build")
			again := runOn(t, r, p.job(p.repo), nil)
			wantState(t, again, "success", "")
			published(t, again)
			assertNoBrokenTag(t, p.project, "after the build once the registry is well")
		})
	}
}

// slowConfig is a one-image project whose install stage prints
// slow-stage-started, then runs work: a test acts while it runs.
func slowConfig(project, work string) string {
	return `project: ` + project + `
configVersion: 1
---
image: slow
from: {{ env "BASE_IMAGE" }}
shell:
  beforeInstall: ["echo quick > /quick.txt"]
  install: ["echo slow-stage-started; ` + work + `"]
`
}

// installSignature is the signature of the install stage of a config
// without git mappings (so it does not depend on the tree).
func installSignature(t *testing.T, src, base string) string {
	t.Helper()
	cfg, err := config.ParseConfig("werf.yaml", []byte(src), map[string]string{"BASE_IMAGE": base})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.NewPlan(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Image("slow").Stages {
		if s.Name == plan.StageInstall {
			return s.Signature
		}
	}
	t.Fatal("the config has no install stage")
	return ""
}

// lockedBuildProject is a one-image project whose install stage takes
// about 45 s, so that a test can act while it holds the stage's lock: a
// lease renewed just before the API server went away lives 20 s more,
// and the stage must outlast it by a margin that a busy host keeps.
func lockedBuildProject(t *testing.T, e harness.Engine, kubeconfig string) (dir string, args []string, env []string, slowStage string) {
	t.Helper()
	config := slowConfig("lease", "sleep 45; echo slow-stage-done")
	dir = checkout(t, map[string]string{"werf.yaml": config})
	slowStage = installSignature(t, config, h.BaseImage)
	project := fmt.Sprintf("stagehand/lease-%d", time.Now().UnixNano())
	env = []string{"BASE_IMAGE=" + h.BaseImage, "DOCKER_CONFIG=" + t.TempDir()}
	args = []string{"build", "--dir", dir, "--repo", h.Registry + "/" + project, "--project", "lease", "--docker-host", e.Host,
		"--docker-network", "none", "--synchronization", "kubernetes://stagehand-synchronization", "--kubeconfig", kubeconfig}
	return dir, args, env, slowStage
}

// TestLostLeaseStopsTheBuildCleanly (issue 7, lost lease): the API server
// of kubernetes:// synchronization goes away while a build holds a stage's
// lock. The build stops with an error saying the lock was lost, without a
// panic, storing nothing of the stage and leaving no container; once the
// API server is back, the same build succeeds.
func TestLostLeaseStopsTheBuildCleanly(t *testing.T) {
	api, err := h.StartAPIServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	e := h.Engines[2]
	_, args, env, slow := lockedBuildProject(t, e, api.Kubeconfig)
	repo := args[4]
	project := strings.TrimPrefix(repo, h.Registry+"/")
	cmd, out, err := killableCLI(env, args...)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	// The command's output, as the trace shows a stage's output.
	for !strings.Contains(out.String(), stagetrace.Prefix+"slow-stage-started\n") {
		if time.Now().After(deadline) {
			t.Fatalf("the slow stage never started:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	api.StopAPI()
	stopped := time.Now()
	var buildErr error
	select {
	case buildErr = <-exited:
	case <-time.After(90 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("the build went on 90 s after the API server went away:\n%s", out)
	}
	took := time.Since(stopped)
	trace := out.String()
	t.Logf("the build stopped %s after the API server did: %v", took.Round(time.Millisecond), buildErr)
	if buildErr == nil {
		t.Fatalf("the build succeeded without its lock:\n%s", trace)
	}
	if !strings.Contains(trace, "lost the lock") {
		t.Errorf("the error does not say the lock was lost:\n%s", trace)
	}
	if strings.Contains(trace, stagetrace.Prefix+"slow-stage-done\n") {
		t.Errorf("the stage ran to its end without its lock:\n%s", trace)
	}
	for _, bad := range []string{"panic:", "goroutine "} {
		if strings.Contains(trace, bad) {
			t.Errorf("the build's output has %q:\n%s", bad, trace)
		}
	}
	if storedSignatures(t, project)[slow] {
		t.Error("the stage whose lock was lost was stored")
	}
	assertNoBrokenTag(t, project, "after the lost lease")
	waitNoContainers(t, e, 20*time.Second)

	if err := api.StartAPI(); err != nil {
		t.Fatal(err)
	}
	_, trace, err = stagehandCLI(t, env, args...)
	if err != nil {
		t.Fatalf("the build once the API server is back: %v\n%s", err, trace)
	}
	if !storedSignatures(t, project)[slow] {
		t.Errorf("the build once the API server is back did not store the slow stage:\n%s", trace)
	}
	assertNoBrokenTag(t, project, "after the retry")
}

// waitNoContainers waits until an engine runs no container.
func waitNoContainers(t *testing.T, e harness.Engine, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		left := strings.Fields(dockerCLI(t, e.Host, "ps", "-q"))
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers still run on %s: %v", e.Name, left)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// discardedLine is a stage line of a stage built, then dropped for a copy
// another host stored meanwhile (the summary line names the outcome too).
var discardedLine = regexp.MustCompile(`(?m)^\S+\s+built, another host's copy used \(`)

var exportLine = regexp.MustCompile(`(?m)^export (STAGEHAND_IMAGE_\w+)='([^']*)'$`)

// TestManyBuildsOnFourHosts (issue 7, concurrency): 8 builds at once on
// each of 4 runner hosts (their own Docker Engines), over 4 commits that
// share most stages, synchronized through the API server. All end within
// the timeout (no deadlock), every stage is built once across all of
// them, and every build of a commit publishes the same digests.
func TestManyBuildsOnFourHosts(t *testing.T) {
	if len(h.Engines) < 4 {
		t.Fatalf("the harness has %d Docker Engines; this test needs 4 (STAGEHAND_ENGINES)", len(h.Engines))
	}
	hosts := h.Engines[:4]
	for _, e := range hosts {
		emptyEngine(t, e)
	}
	project := fmt.Sprintf("stagehand/many-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	files := sampleFiles(t)
	var dirs []string
	for c := 0; c < 4; c++ {
		if c&1 != 0 {
			files["app/setup.sh"] = fmt.Sprintf("#!/bin/sh\necho \"setup of commit %d\"\n", c)
		}
		if c&2 != 0 {
			files["web/a.txt"] = fmt.Sprintf("asset of commit %d\n", c)
		}
		dirs = append(dirs, checkout(t, files))
	}
	type result struct {
		host, commit int
		out, trace   string
		err          error
		took         time.Duration
	}
	const perHost = 8
	results := make(chan result, len(hosts)*perHost)
	start := time.Now()
	for hi, e := range hosts {
		for j := 0; j < perHost; j++ {
			c := (hi + j) % len(dirs)
			go func() {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, h.Stagehand, "build", "--dir", dirs[c], "--repo", repo, "--project", "many",
					"--docker-host", e.Host, "--docker-network", "none",
					"--synchronization", "kubernetes://stagehand-synchronization", "--kubeconfig", h.Kubeconfig)
				cmd.Env = append(os.Environ(), "BASE_IMAGE="+h.BaseImage, "DOCKER_CONFIG="+t.TempDir())
				var o, tr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &o, &tr
				err := cmd.Run()
				results <- result{hi, c, o.String(), tr.String(), err, time.Since(t0)}
			}()
		}
	}
	builtBy := map[string][]string{}
	digests := map[int]map[string]string{} // commit -> variable -> value
	var slowest time.Duration
	waits := 0
	for n := 0; n < len(hosts)*perHost; n++ {
		r := <-results
		if r.err != nil {
			t.Errorf("build of commit %d on %s: %v\n%s", r.commit, hosts[r.host].Name, r.err, r.trace)
			continue
		}
		slowest = max(slowest, r.took)
		waits += strings.Count(r.trace, "Waiting for stage")
		for _, m := range builtSignature.FindAllStringSubmatch(r.trace, -1) {
			builtBy[m[1]] = append(builtBy[m[1]], fmt.Sprintf("%s (commit %d)", hosts[r.host].Name, r.commit))
		}
		if discardedLine.MatchString(r.trace) {
			t.Errorf("a build on %s built a stage another host stored meanwhile: the locks did not exclude it\n%s", hosts[r.host].Name, r.trace)
		}
		exports := map[string]string{}
		for _, m := range exportLine.FindAllStringSubmatch(r.out, -1) {
			exports[m[1]] = m[2]
		}
		if len(exports) != 6 {
			t.Errorf("build of commit %d on %s exported %v", r.commit, hosts[r.host].Name, exports)
		}
		if digests[r.commit] == nil {
			digests[r.commit] = exports
		} else if fmt.Sprint(digests[r.commit]) != fmt.Sprint(exports) {
			t.Errorf("commit %d published differently:\n%v\n%v", r.commit, digests[r.commit], exports)
		}
	}
	for sig, by := range builtBy {
		if len(by) != 1 {
			t.Errorf("stage %s built %d times: %v", sig[:12], len(by), by)
		}
	}
	stored := storedSignatures(t, project)
	for sig := range builtBy {
		if !stored[sig] {
			t.Errorf("built stage %s is not in the storage", sig[:12])
		}
	}
	var list struct{ Tags []string }
	registryGet(t, "/v2/"+project+"/stages/tags/list", &list)
	copies := map[string]int{}
	for _, tag := range list.Tags {
		if st, ok := stagesrepo.ParseStageTag(tag); ok {
			copies[st.Signature]++
		}
	}
	for sig, n := range copies {
		if n != 1 {
			t.Errorf("the storage holds %d copies of stage %s", n, sig[:12])
		}
	}
	perHostBuilt := map[string]int{}
	for _, by := range builtBy {
		perHostBuilt[strings.Fields(by[0])[0]]++
	}
	assertNoBrokenTag(t, project, "after the builds")
	t.Logf("%d builds on %d hosts over %d commits in %s (slowest %s): %d distinct stages built once each %v, %d waits for another host's stage",
		len(hosts)*perHost, len(hosts), len(dirs), time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond), len(builtBy), perHostBuilt, waits)
}
