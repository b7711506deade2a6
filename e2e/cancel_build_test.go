package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/lock"
)

// TestCancelledBuildStopsAndStoresNothingHalf: a build job cancelled while
// a shell stage runs stops its build container, releases the stage's lock
// and stores nothing of that stage.
func TestCancelledBuildStopsAndStoresNothingHalf(t *testing.T) {
	p := newBuildProject(t)
	config := slowConfig("sample", "for i in $(seq 1 300); do echo still-building; sleep 1; done")
	slow, err := p.gs.Commit(p.project, map[string]string{"werf.yaml": config})
	if err != nil {
		t.Fatal(err)
	}
	install := installSignature(t, config, p.base)

	e := h.Engines[1]
	r := p.runner(t, e, "STAGEHAND_SYNCHRONIZATION=kubernetes://stagehand-synchronization", "STAGEHAND_KUBECONFIG="+h.Kubeconfig)
	job := p.job(slow)
	job.Script = []string{"echo the-script-ran"}
	// The stage prints every second, which keeps the runner talking to
	// the coordinator: it learns of the cancel within seconds.
	run, took := runCancelled(t, r, job, "slow-stage-started", 2*time.Minute)
	t.Logf("the job ended %s after the cancel (%s)", took.Round(time.Millisecond), run.Result.State)
	if took > 20*time.Second {
		t.Errorf("the cancelled build took %s to stop", took)
	}
	if strings.Contains(run.Result.Trace, "\nthe-script-ran") || strings.Contains(run.Result.Trace, " the-script-ran\n") {
		t.Error("the script ran after a cancelled build")
	}

	waitNoContainers(t, e, 20*time.Second)

	assertNoBrokenTag(t, p.project, "after the cancel")
	var tags struct{ Tags []string }
	registryGet(t, "/v2/"+p.project+"/stages/tags/list", &tags)
	for _, tag := range tags.Tags {
		if strings.HasPrefix(tag, install) {
			t.Errorf("the cancelled stage was stored: %s", tag)
		}
	}

	project := strings.ReplaceAll(p.project, "/", "-") // CI_PROJECT_PATH_SLUG
	l, err := lock.New("kubernetes://stagehand-synchronization", lock.Config{Project: project, Kubeconfig: h.Kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := l.Acquire(ctx, "stagehand/"+project+"/stage/"+install, lock.Options{Holder: "the test"})
	if err != nil {
		t.Fatalf("the cancelled build's stage lock is still held: %v", err)
	}
	lease.Release()
	project2, err := l.Acquire(ctx, lock.ProjectLock(project), lock.Options{Holder: "the test"})
	if err != nil {
		t.Fatalf("the cancelled build's project lock is still held: %v", err)
	}
	project2.Release()
}
