package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/gitlabapi"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// lockedBuffer is a command's output another goroutine reads meanwhile.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestShellBuildAndShellCleanupTakeOneProjectLock: a shell build of a
// project and a shell cleanup of it, started while the build runs, name
// the project's lock alike; the cleanup waits for the build.
func TestShellBuildAndShellCleanupTakeOneProjectLock(t *testing.T) {
	project := fmt.Sprintf("stagehand/lockshare-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	locks := t.TempDir()
	dir := checkout(t, map[string]string{
		"werf.yaml": "project: lockshare\nconfigVersion: 1\n---\nimage: app\nfrom: " + h.BaseImage + "\nshell:\n  install:\n  - echo slow-stage-started\n  - sleep 6\n",
	})
	env := []string{"DOCKER_CONFIG=" + t.TempDir(), "CI_COMMIT_TAG=", "CI_COMMIT_BRANCH=", "CI_COMMIT_REF_NAME="}
	common := []string{"--synchronization", ":local", "--locks-dir", locks}

	build := exec.Command(h.Stagehand, append([]string{"build", "--dir", dir, "--repo", repo, "--docker-host", h.Engines[0].Host, "--docker-network", "none"}, common...)...)
	build.Env = append(build.Environ(), env...)
	var buildOut lockedBuffer
	build.Stdout, build.Stderr = &buildOut, &buildOut
	if err := build.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(buildOut.String(), "slow-stage-started") {
		if time.Now().After(deadline) {
			t.Fatalf("the build never reached its slow stage:\n%s", buildOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	api := gitlabapi.New(gitlabapi.Project{ID: 1, Path: project, Branches: []string{"main"}, Commits: map[string]time.Time{}}, h.Registry, "glpat-lockshare")
	defer api.Close()
	cleanupStart := time.Now()
	_, trace := mustCLI(t, append(env, "STAGEHAND_CLEANUP_TOKEN=glpat-lockshare"), append([]string{"cleanup", "--dry-run", "--api-url", api.APIURL(),
		"--project", project, "--stages-storage", repo + "/stages", "--kubeconfig", h.Kubeconfig}, common...)...)
	cleanupEnd := time.Now()
	if err := build.Wait(); err != nil {
		t.Fatalf("build: %v\n%s", err, buildOut.String())
	}
	rememberTrace("stagehand build ("+t.Name()+")", buildOut.String())
	lockName := strings.ReplaceAll(project, "/", "-")
	if !strings.Contains(trace, "Waiting for the project lock of "+lockName) {
		t.Errorf("the cleanup did not wait for the build's project lock:\n%s", trace)
	}
	if !strings.Contains(buildOut.String(), "Build done in") {
		t.Errorf("the build did not finish:\n%s", buildOut.String())
	}
	t.Logf("the cleanup started %s and ended %s after the build reached its slow stage", time.Since(cleanupStart).Round(time.Millisecond), cleanupEnd.Sub(cleanupStart).Round(time.Millisecond))
	if cleanupEnd.Sub(cleanupStart) < 3*time.Second {
		t.Errorf("the cleanup took %s: it cannot have waited for the 6 s stage", cleanupEnd.Sub(cleanupStart))
	}
}

// TestCleanupDryRunWithoutAClusterShowsThePlan: no kubeconfig and no
// cluster around: the dry run prints the plan with images in use
// unknown and succeeds; the real run deletes nothing and fails.
func TestCleanupDryRunWithoutAClusterShowsThePlan(t *testing.T) {
	project := fmt.Sprintf("stagehand/nocluster-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	pub := newPublisher(t)
	for _, b := range []string{"main", "gone"} {
		pub.put(repo+":"+b, pub.image(b, map[string]string{
			stagesrepo.AnnotationCommit: fmt.Sprintf("%040x", len(b)), stagesrepo.AnnotationCommitTime: time.Now().UTC().Format(time.RFC3339),
			stagesrepo.AnnotationRef: b, stagesrepo.AnnotationRefKind: "branch",
		}))
	}
	api := gitlabapi.New(gitlabapi.Project{ID: 1, Path: project, Branches: []string{"main"}, Commits: map[string]time.Time{}}, h.Registry, "glpat-nocluster")
	defer api.Close()
	env := []string{"STAGEHAND_CLEANUP_TOKEN=glpat-nocluster", "DOCKER_CONFIG=" + t.TempDir(), "KUBECONFIG=", "STAGEHAND_KUBECONFIG=", "KUBERNETES_SERVICE_HOST="}
	args := []string{"cleanup", "--api-url", api.APIURL(), "--project", project, "--stages-storage", repo + "/stages", "--synchronization", "none"}
	_, trace := mustCLI(t, env, append(args, "--dry-run")...)
	for _, want := range []string{"Images in use: unknown", repo + ":gone", "branch gone is gone; if no workload uses it (in use: unknown)",
		"branch main exists", "Dry run: nothing deleted; 1 image tag deletions wait on knowing what is in use"} {
		if !strings.Contains(trace, want) {
			t.Errorf("the dry run's output lacks %q:\n%s", want, trace)
		}
	}
	_, stderr, err := stagehandCLI(t, env, args...)
	if err == nil || !strings.Contains(stderr, "images in use") {
		t.Errorf("a real run without a cluster: %v\n%s", err, stderr)
	}
	if d := api.Deleted(); len(d) != 0 {
		t.Errorf("deleted %v without knowing what is in use", d)
	}
}
