package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/harness"
)

// timingWrapper runs a hook and appends "HOOK START END" (seconds, from
// bash's clock without a fork) to a log. Both executors run under it, so
// its own cost is the same on both sides.
const timingWrapper = `#!/bin/bash
hook=$1 log=$2
shift 2
start=$EPOCHREALTIME
"$@"
rc=$?
echo "$hook $start $EPOCHREALTIME" >>"$log"
exit $rc
`

// Trivial hooks: the least a custom executor can do.
var trivialHooks = map[string]string{
	"config.sh":  `printf '{"builds_dir":"%s","cache_dir":"%s","builds_dir_is_shared":false,"driver":{"name":"trivial","version":"1"}}' "$BUILDS" "$CACHE"` + "\n",
	"prepare.sh": "exit 0\n",
	"run.sh":     `bash "$1"` + "\n",
	"cleanup.sh": "exit 0\n",
}

// BenchmarkHookOverhead runs the same trivial job through the same
// gitlab-runner, alternately with stagehand's hooks and with trivial shell
// hooks, and reports the per-job time of each, their ratio and the time of
// each stagehand hook. It fails when the targets are missed: a job at most
// 1.1 times the trivial one, every hook under 50 ms.
func BenchmarkHookOverhead(b *testing.B) {
	rounds := 25
	if v, err := strconv.Atoi(os.Getenv("STAGEHAND_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	job := coordinator.Job{Registry: h.Registry, Script: []string{"echo hello"}}
	for i := 0; i < b.N; i++ {
		stagehand, err := benchRunner(b, "stagehand", false)
		if err != nil {
			b.Fatal(err)
		}
		trivial, err := benchRunner(b, "trivial", true)
		if err != nil {
			b.Fatal(err)
		}
		var sDur, tDur []time.Duration
		// Round 0 warms caches on both sides and is not counted.
		for r := 0; r <= rounds; r++ {
			for _, side := range []struct {
				runner *harness.Runner
				durs   *[]time.Duration
			}{{stagehand, &sDur}, {trivial, &tDur}} {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				run, err := side.runner.Run(ctx, job, nil)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if run.Result.State != "success" {
					b.Fatalf("job %s\n%s", run.Result.State, run.Result.Trace)
				}
				if r > 0 {
					*side.durs = append(*side.durs, run.Duration)
				}
			}
		}
		sJob, tJob := median(sDur), median(tDur)
		// Each round's two jobs ran back to back, so their ratio is free
		// of the machine's drift over the run; the median of those ratios
		// is the figure.
		pairs := make([]float64, len(sDur))
		for i := range sDur {
			pairs[i] = float64(sDur[i]) / float64(tDur[i])
		}
		ratio := median(pairs)
		b.ReportMetric(ms(sJob), "stagehand-ms/job")
		b.ReportMetric(ms(tJob), "trivial-ms/job")
		b.ReportMetric(ratio, "ratio")

		hooks, err := readHookTimes(filepath.Join(stagehand.Dir, "hooks.log"))
		if err != nil {
			b.Fatal(err)
		}
		trivialHookTimes, err := readHookTimes(filepath.Join(trivial.Dir, "hooks.log"))
		if err != nil {
			b.Fatal(err)
		}
		var sHooks, tHooks time.Duration
		for _, name := range []string{"config", "prepare", "run", "cleanup"} {
			sHooks += sum(hooks[name])
			tHooks += sum(trivialHookTimes[name])
			if len(hooks[name]) == 0 {
				b.Fatalf("no %s hook timings", name)
			}
			m := median(hooks[name])
			b.ReportMetric(ms(m), name+"-ms")
			b.Logf("%-8s stagehand median %6.1f ms max %6.1f ms (%d calls); trivial median %6.1f ms",
				name, ms(m), ms(maxOf(hooks[name])), len(hooks[name]), ms(median(trivialHookTimes[name])))
			if m >= 50*time.Millisecond {
				b.Errorf("stagehand's %s hook takes %s (median), target under 50ms", name, m)
			}
		}
		// Hook time per job, warm-up round included on both sides.
		perJob := (sHooks - tHooks) / time.Duration(rounds+1)
		b.ReportMetric(ms(perJob), "hook-overhead-ms/job")
		b.Logf("job: stagehand median %s, trivial hooks median %s, ratio %.3f (median of %d back-to-back pairs); stagehand's hooks take %.1f ms more per job than trivial ones",
			sJob.Round(100*time.Microsecond), tJob.Round(100*time.Microsecond), ratio, rounds, ms(perJob))
		if ratio > 1.1 {
			b.Errorf("stagehand's job takes %.3f times the trivial executor's, target at most 1.1", ratio)
		}
	}
}

// benchRunner makes a runner whose four hooks run under the timing
// wrapper: stagehand's (from config.toml.example) or trivial ones.
func benchRunner(b *testing.B, name string, trivial bool) (*harness.Runner, error) {
	r, err := h.NewRunner(b.Name() + "-" + name)
	if err != nil {
		return nil, err
	}
	wrapper := filepath.Join(r.Dir, "timing.sh")
	if err := os.WriteFile(wrapper, []byte(timingWrapper), 0o755); err != nil {
		return nil, err
	}
	log := filepath.Join(r.Dir, "hooks.log")
	wrap := func(hook string, argv ...string) []string {
		return append([]string{wrapper, hook, log}, argv...)
	}
	if trivial {
		for file, body := range trivialHooks {
			if err := os.WriteFile(filepath.Join(r.Dir, file), []byte(body), 0o755); err != nil {
				return nil, err
			}
		}
		r.Env = append(r.Env, "BUILDS="+r.BuildsDir(), "CACHE="+r.CacheDir())
		hook := func(n string) []string { return wrap(n, "bash", filepath.Join(r.Dir, n+".sh")) }
		r.Hooks = &harness.Hooks{Config: hook("config"), Prepare: hook("prepare"), Run: hook("run"), Cleanup: hook("cleanup")}
		return r, nil
	}
	hooks, err := r.DefaultHooks()
	if err != nil {
		return nil, err
	}
	r.Hooks = &harness.Hooks{
		Config:  wrap("config", hooks.Config...),
		Prepare: wrap("prepare", hooks.Prepare...),
		Run:     wrap("run", hooks.Run...),
		Cleanup: wrap("cleanup", hooks.Cleanup...),
	}
	return r, nil
}

func readHookTimes(path string) (map[string][]time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string][]time.Duration{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		start, err1 := strconv.ParseFloat(f[1], 64)
		end, err2 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: bad times in %q", path, line)
		}
		out[f[0]] = append(out[f[0]], time.Duration((end-start)*float64(time.Second)))
	}
	return out, nil
}

func median[T cmp.Ordered](xs []T) T {
	if len(xs) == 0 {
		var zero T
		return zero
	}
	return slices.Sorted(slices.Values(xs))[len(xs)/2]
}

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
