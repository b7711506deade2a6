package e2e

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/e2e/registryproxy"
)

// benchFiles reads the benchmark project.
func benchFiles(b testing.TB) map[string]string {
	files, err := harness.ReadTree(filepath.Join("testdata", "bench"))
	if err != nil {
		b.Fatal(err)
	}
	return files
}

// measurement is one row of the benchmark's table.
type measurement struct {
	name      string
	wall      time.Duration
	stats     registryproxy.Stats
	built     int
	rebuiltBy string
}

// benchRun is one stagehand build or anchor run, measured at the proxy.
type benchRun struct {
	b     *testing.B
	proxy *registryproxy.Proxy
	base  string
	sync  string
	locks string
}

// stagehandBuild builds dir with `stagehand build` on engine e.
func (r *benchRun) stagehandBuild(dir, repo string, e harness.Engine) (time.Duration, string, error) {
	start := time.Now()
	cmd := exec.Command(h.Stagehand, "build", "--dir", dir, "--repo", repo, "--docker-host", e.Host, "--docker-network", "none",
		"--synchronization", r.sync, "--kubeconfig", h.Kubeconfig, "--locks-dir", r.locks, "--project", filepath.Base(repo))
	cmd.Env = append(os.Environ(), "BASE_IMAGE="+r.base, "DOCKER_CONFIG="+r.b.TempDir())
	out, err := cmd.CombinedOutput()
	return time.Since(start), string(out), err
}

// anchorBuild is GitLab's documented Docker build: pull latest (for its
// cache), build with --cache-from, push the commit's tag and latest.
func (r *benchRun) anchorBuild(dir, repo, tag string, e harness.Engine) (time.Duration, error) {
	start := time.Now()
	docker := func(args ...string) error {
		cmd := exec.Command("docker", append([]string{"-H", e.Host}, args...)...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+r.b.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("docker %v: %v\n%s", args, err, out)
		}
		return nil
	}
	_ = docker("pull", repo+":latest") // `|| true`: the first build has none
	if err := docker("build", "--network", "none", "--cache-from", repo+":latest", "--build-arg", "BASE="+r.base, "-t", repo+":"+tag, "-t", repo+":latest", dir); err != nil {
		return 0, err
	}
	for _, t := range []string{tag, "latest"} {
		if err := docker("push", repo+":"+t); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// plainBuild is `docker build` of the project's Dockerfile, nothing
// cached, then its push, timed apart.
func (r *benchRun) plainBuild(dir, repo string, e harness.Engine) (build, push time.Duration, err error) {
	docker := func(args ...string) (time.Duration, error) {
		start := time.Now()
		cmd := exec.Command("docker", append([]string{"-H", e.Host}, args...)...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+r.b.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("docker %v: %v\n%s", args, err, out)
		}
		return time.Since(start), nil
	}
	if build, err = docker("build", "--network", "none", "--build-arg", "BASE="+r.base, "-t", repo+":p8", dir); err != nil {
		return 0, 0, err
	}
	push, err = docker("push", repo+":p8")
	return build, push, err
}

// BenchmarkStages compares stagehand with the anchor on one project and
// a fresh host: P1 idle build, P2 last-stage change, P3 four concurrent
// builders on a cold commit, P8 a cold build against a plain docker
// build. It runs once whatever b.N is and prints a table (P1 the median of
// several runs, P8 of three rounds); the goals are
// in the issues (P1 ≤ 0.05×, P2 ≤ 0.2× the anchor's wall time, P3 ≤ 1.15×
// one builder's, P8 ≤ 1.1× the plain docker build's).
func BenchmarkStages(b *testing.B) {
	if len(h.Engines) < 3 {
		b.Fatalf("the benchmark needs 3 Docker Engines, the harness has %d", len(h.Engines))
	}
	proxy, err := registryproxy.Start(h.Registry)
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	syncSpec := os.Getenv("STAGEHAND_BENCH_SYNCHRONIZATION")
	if syncSpec == "" {
		syncSpec = "kubernetes://stagehand-synchronization" // as a fleet of hosts would
	}
	r := &benchRun{b: b, proxy: proxy, base: proxy.Addr() + strings.TrimPrefix(h.BaseImage, h.Registry), sync: syncSpec, locks: b.TempDir()}
	h1, fresh := h.Engines[0], h.Engines[2]
	id := time.Now().UnixNano()
	ours := fmt.Sprintf("%s/stagehand/bench-%d", proxy.Addr(), id)
	anchor := fmt.Sprintf("%s/stagehand/bench-anchor-%d", proxy.Addr(), id)
	files := benchFiles(b)
	v1 := checkout(b, files)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	var rows []measurement
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	// measure runs f n times on an emptied fresh engine and keeps the run
	// of the median wall time (an idle build is a tenth of a second, which
	// one busy moment of a two-core machine moves by a tenth); it answers
	// every run too, for the checks that hold for each.
	measure := func(name string, n int, f func() (time.Duration, string, error)) (measurement, []measurement) {
		var runs []measurement
		for range n {
			emptyEngine(b, fresh)
			proxy.Reset()
			wall, trace, err := f()
			if err != nil {
				b.Fatalf("%s: %v\n%s", name, err, trace)
			}
			runs = append(runs, measurement{name: name, wall: wall, stats: proxy.Stats(), built: len(builtStages(trace))})
		}
		sorted := slices.SortedFunc(slices.Values(runs), func(a, b measurement) int { return cmp.Compare(a.wall, b.wall) })
		m := sorted[len(sorted)/2]
		if n > 1 {
			m.name = fmt.Sprintf("%s (median of %d)", name, n)
		}
		rows = append(rows, m)
		return m, runs
	}
	anchorRun := func(dir, tag string) func() (time.Duration, string, error) {
		return func() (time.Duration, string, error) {
			wall, err := r.anchorBuild(dir, anchor, tag, fresh)
			return wall, "", err
		}
	}
	oursRun := func(dir string) func() (time.Duration, string, error) {
		return func() (time.Duration, string, error) { return r.stagehandBuild(dir, ours, fresh) }
	}

	// Both start warm: the commit built and pushed once from another host.
	if _, trace, err := r.stagehandBuild(v1, ours, h1); err != nil {
		b.Fatalf("warm-up build: %v\n%s", err, trace)
	}
	_, err = r.anchorBuild(v1, anchor, "v1", h1)
	must(err)

	p1, p1Runs := measure("P1 idle build, stagehand", 5, oursRun(v1))
	p1a, _ := measure("P1 idle build, anchor", 3, anchorRun(v1, "v1"))

	files["static/index.html"] = "<h1>v2</h1>\n"
	v2 := checkout(b, files)
	p2, _ := measure("P2 last-stage change, stagehand", 1, oursRun(v2))
	p2a, _ := measure("P2 last-stage change, anchor", 1, anchorRun(v2, "v2"))

	// P3: a commit nobody built, one builder, then four at once (another
	// cold repository, same content).
	files["deps.txt"] = fmt.Sprintf("dep %d\n", id)
	v3 := checkout(b, files)
	for _, e := range h.Engines {
		emptyEngine(b, e)
	}
	proxy.Reset()
	one, trace, err := r.stagehandBuild(v3, ours+"-p3one", h1)
	if err != nil {
		b.Fatalf("P3 single builder: %v\n%s", err, trace)
	}
	rows = append(rows, measurement{name: "P3 cold commit, one builder", wall: one, stats: proxy.Stats(), built: len(builtStages(trace))})
	for _, e := range h.Engines {
		emptyEngine(b, e)
	}
	proxy.Reset()
	hosts := []harness.Engine{h.Engines[0], h.Engines[1], h.Engines[2], h.Engines[0]}
	var wg sync.WaitGroup
	walls := make([]time.Duration, len(hosts))
	traces := make([]string, len(hosts))
	errs := make([]error, len(hosts))
	for i, e := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			walls[i], traces[i], errs[i] = r.stagehandBuild(v3, ours+"-p3four", e)
		}()
	}
	wg.Wait()
	var four time.Duration
	builtBy := map[string]int{}
	for i := range hosts {
		if errs[i] != nil {
			b.Fatalf("P3 builder %d on %s: %v\n%s", i, hosts[i].Name, errs[i], traces[i])
		}
		four = max(four, walls[i])
		for _, s := range builtStages(traces[i]) {
			builtBy[s]++
		}
	}
	twice := 0
	for s, n := range builtBy {
		if n > 1 {
			twice++
			b.Errorf("P3: stage %s built %d times", s, n)
		}
	}
	rows = append(rows, measurement{name: "P3 cold commit, four builders (slowest)", wall: four, stats: proxy.Stats(), built: len(builtBy)})

	// P8: a cold build on an empty engine against a plain docker build of
	// the Dockerfile twin (same base, same steps) on another empty
	// engine; and that docker build followed by its push, which a build
	// job also needs. Three rounds, each of a commit of its own, the
	// order alternating; the round of the median ratio is the figure (one
	// pair on two cores swings by several percent with what the machine
	// did just before).
	type p8Round struct {
		cold, plain, pushed   time.Duration
		coldStats, plainStats registryproxy.Stats
		built                 int
	}
	roundRatio := func(r p8Round) float64 { return ratio(r.cold, r.plain) }
	var p8 []p8Round
	for i := range 3 {
		files["deps.txt"] = fmt.Sprintf("dep p8 %d %d\n", id, i)
		v8 := checkout(b, files)
		emptyEngine(b, h.Engines[0])
		emptyEngine(b, h.Engines[1])
		var round p8Round
		coldBuild := func() {
			proxy.Reset()
			wall, trace, err := r.stagehandBuild(v8, fmt.Sprintf("%s-p8-%d", ours, i), h.Engines[0])
			if err != nil {
				b.Fatalf("P8 stagehand: %v\n%s", err, trace)
			}
			round.cold, round.coldStats, round.built = wall, proxy.Stats(), len(builtStages(trace))
		}
		plainBuild := func() {
			proxy.Reset()
			var err error
			round.plain, round.pushed, err = r.plainBuild(v8, fmt.Sprintf("%s-p8-%d", anchor, i), h.Engines[1])
			must(err)
			round.plainStats = proxy.Stats()
		}
		if i%2 == 0 {
			coldBuild()
			plainBuild()
		} else {
			plainBuild()
			coldBuild()
		}
		fmt.Printf("P8 round %d: stagehand %s, docker build %s: %.3f×\n", i+1, round.cold.Round(time.Millisecond), round.plain.Round(time.Millisecond), roundRatio(round))
		p8 = append(p8, round)
	}
	slices.SortFunc(p8, func(a, b p8Round) int { return cmp.Compare(roundRatio(a), roundRatio(b)) })
	mid := p8[len(p8)/2]
	cold, plain, pushed := mid.cold, mid.plain, mid.pushed
	rows = append(rows, measurement{name: "P8 cold build, stagehand (round of the median ratio)", wall: cold, stats: mid.coldStats, built: mid.built})
	rows = append(rows, measurement{name: "P8 cold build, plain docker build", wall: plain, stats: mid.plainStats})
	rows = append(rows, measurement{name: "P8 cold build, plain docker build + push", wall: plain + pushed})

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tWALL\tBLOB BYTES PULLED\tBLOB GETS\tREQUESTS\tSTAGES BUILT")
	for _, m := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", m.name, m.wall.Round(time.Millisecond), m.stats.BlobBytes, m.stats.BlobGets, m.stats.Requests, m.built)
	}
	tw.Flush()
	var p1Bytes int64
	for _, run := range p1Runs {
		p1Bytes += run.stats.BlobBytes
	}
	fmt.Printf("P1 idle: %.3f× the anchor's wall time (goal ≤ 0.05×), %d blob bytes over its %d runs (goal 0)\n", ratio(p1.wall, p1a.wall), p1Bytes, len(p1Runs))
	fmt.Printf("P2 last-stage change: %.3f× the anchor's wall time (goal ≤ 0.2×)\n", ratio(p2.wall, p2a.wall))
	fmt.Printf("P3 four builders: %.3f× one builder's wall time (goal ≤ 1.15×), stages built twice: %d (goal 0)\n", ratio(four, one), twice)
	fmt.Printf("P8 cold build: %.3f× a plain docker build's wall time (median of %d rounds; goal ≤ 1.1×); %.3f× docker build + push\n", ratio(cold, plain), len(p8), ratio(cold, plain+pushed))
	b.ReportMetric(ratio(cold, plain), "P8-ratio")
	b.ReportMetric(ratio(p1.wall, p1a.wall), "P1-ratio")
	b.ReportMetric(ratio(p2.wall, p2a.wall), "P2-ratio")
	b.ReportMetric(ratio(four, one), "P3-ratio")
	for i, run := range p1Runs {
		if run.stats.BlobBytes != 0 {
			b.Errorf("P1: idle build %d of %d pulled %d blob bytes", i+1, len(p1Runs), run.stats.BlobBytes)
		}
	}
}
