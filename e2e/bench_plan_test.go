package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkPlanCommand (P7): `stagehand plan` on each real project of the
// corpus (plan/testdata/corpus) that plans, as a user runs it: the
// stagehand and stagehand-config processes, the templates rendered, the
// files read and hashed. Each project's time is the median of 11 runs;
// the benchmark fails when a project takes 50 ms or more.
func BenchmarkPlanCommand(b *testing.B) {
	root := filepath.Join("..", "plan", "testdata", "corpus")
	entries, err := os.ReadDir(root)
	if err != nil {
		b.Fatal(err)
	}
	run := func(dir string, env []string, args ...string) time.Duration {
		var ds []time.Duration
		for range 11 {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%s in %s: %v\n%s", args, dir, err, out)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	for range b.N {
		baseline := run("/", nil, "/bin/true")
		var times []time.Duration
		for _, e := range entries {
			dir := filepath.Join(root, e.Name())
			expect, _ := os.ReadFile(filepath.Join(dir, "EXPECT"))
			if !strings.HasPrefix(string(expect), "plan") {
				continue
			}
			var env []string
			if b, err := os.ReadFile(filepath.Join(dir, "ENV")); err == nil {
				env = strings.Fields(string(b))
			}
			took := run(dir, env, h.Stagehand, "plan")
			if took >= 50*time.Millisecond {
				b.Errorf("%s: stagehand plan took %s, want under 50 ms", e.Name(), took)
			}
			times = append(times, took)
		}
		slices.Sort(times)
		b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
		b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "max-ms")
		b.Logf("P7: stagehand plan on %d real projects: median %s, slowest %s (a process that does nothing: %s)",
			len(times), times[len(times)/2].Round(100*time.Microsecond), times[len(times)-1].Round(100*time.Microsecond), baseline.Round(100*time.Microsecond))
	}
}
