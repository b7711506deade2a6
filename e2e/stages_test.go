package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// stagehandCLI runs the stagehand binary as an operator would.
func stagehandCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(h.Stagehand, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); strings.Contains(k, "TOKEN") || strings.Contains(k, "PASSWORD") {
			rememberSecrets(v)
		}
	}
	rememberTrace(fmt.Sprintf("stagehand %s (%s)", strings.Join(args, " "), t.Name()), o.String()+e.String())
	return o.String(), e.String(), err
}

func mustCLI(t *testing.T, env []string, args ...string) (string, string) {
	t.Helper()
	o, e, err := stagehandCLI(t, env, args...)
	if err != nil {
		t.Fatalf("stagehand %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, o, e)
	}
	return o, e
}

// checkout makes a working copy of the sample project.
func checkout(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "sample"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

var copiedLine = regexp.MustCompile(`copied (\d+) stages, (\d+) already there`)

func syncCounts(t *testing.T, out string) (copied, present int) {
	t.Helper()
	m := copiedLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counts in %q", out)
	}
	fmt.Sscan(m[1], &copied)
	fmt.Sscan(m[2], &present)
	return copied, present
}

// TestStagesSyncAndSwitchFromLocal follows the switch-to-distributed
// guide: local builds, a sync, the switch that blocks :local builds, and
// the rollback.
func TestStagesSyncAndSwitchFromLocal(t *testing.T) {
	e := h.Engines[1]
	project := fmt.Sprintf("local-%d", time.Now().UnixNano())
	repo := h.Registry + "/stagehand/" + project
	blockDir := t.TempDir()
	env := []string{"BASE_IMAGE=" + h.BaseImage, "DOCKER_CONFIG=" + t.TempDir()}
	common := []string{"--docker-host", e.Host, "--docker-network", "none", "--project", project, "--block-dir", blockDir}
	files := sampleFiles(t)
	dir := checkout(t, files)

	build := func(t *testing.T, storage string) (string, string, error) {
		return stagehandCLI(t, env, append([]string{"build", "--dir", dir, "--repo", repo, "--stages-storage", storage}, common...)...)
	}
	out, trace, err := build(t, ":local")
	if err != nil {
		t.Fatalf(":local build: %v\n%s", err, trace)
	}
	if !strings.Contains(out, "export STAGEHAND_IMAGE_BACKEND=") {
		t.Fatalf("build printed no exports: %q", out)
	}
	localStages := len(strings.Fields(dockerCLI(t, e.Host, "images", "-q", "--filter", "reference=stagehand-stages/"+project)))
	if localStages == 0 {
		t.Fatalf("no local stages after a :local build\n%s", trace)
	}
	ref := regexp.MustCompile(`export STAGEHAND_IMAGE_BACKEND='([^']+)'`).FindStringSubmatch(out)
	if ref == nil {
		t.Fatalf("no backend reference in %q", out)
	}
	if got := dockerCLI(t, e.Host, "run", "--rm", "--network", "none", ref[1]); got != "setup ran with libfoo 1.0\n" {
		t.Errorf("the :local build's backend prints %q", got)
	}

	syncArgs := func(from, to string) []string {
		return append([]string{"stages", "sync", "--from", from, "--to", to}, common...)
	}
	o, _ := mustCLI(t, env, syncArgs(":local", repo+"/stages")...)
	copied, present := syncCounts(t, o)
	t.Logf("first sync: %d copied, %d present (%d local stage images)", copied, present, localStages)
	if copied == 0 || present != 0 {
		t.Errorf("first sync copied %d, found %d present", copied, present)
	}
	o, _ = mustCLI(t, env, syncArgs(":local", repo+"/stages")...)
	if c, p := syncCounts(t, o); c != 0 || p != copied {
		t.Errorf("second sync copied %d (want 0), found %d present (want %d)", c, p, copied)
	}

	// A change builds a few new local stages; the next sync copies exactly those.
	files["app/setup.sh"] = "#!/bin/sh\necho \"setup v3\"\n"
	dir = checkout(t, files)
	if _, trace, err := build(t, ":local"); err != nil {
		t.Fatalf(":local build: %v\n%s", err, trace)
	} else if n := len(builtStages(trace)); n == 0 {
		t.Fatalf("the change built nothing:\n%s", trace)
	} else {
		o, _ = mustCLI(t, env, syncArgs(":local", repo+"/stages")...)
		if c, p := syncCounts(t, o); c != n || p != copied {
			t.Errorf("sync after %d new stages copied %d, found %d present (want %d)", n, c, p, copied)
		}
	}

	// The switch: local stages move, :local builds are refused.
	o, _ = mustCLI(t, env, append([]string{"stages", "switch-from-local", "--to", repo + "/stages"}, common...)...)
	t.Logf("switch-from-local: %s", strings.TrimSpace(o))
	if left := strings.Fields(dockerCLI(t, e.Host, "images", "-q", "--filter", "reference=stagehand-stages/"+project)); len(left) != 0 {
		t.Errorf("local stages left after the switch: %v", left)
	}
	_, trace, err = build(t, ":local")
	if err == nil || !strings.Contains(trace, "switched its stages from :local") || !strings.Contains(trace, filepath.Join(blockDir, project)) {
		t.Fatalf("a :local build after the switch: err=%v\n%s", err, trace)
	}
	if _, trace, err := build(t, repo+"/stages"); err != nil {
		t.Fatalf("a registry build after the switch: %v\n%s", err, trace)
	} else if n := len(builtStages(trace)); n != 0 {
		t.Errorf("the registry build after the switch built %d stages; the switch should have moved them all", n)
	}

	// Rollback: stages back to the engine, block file removed.
	mustCLI(t, env, syncArgs(repo+"/stages", ":local")...)
	if err := os.Remove(filepath.Join(blockDir, project)); err != nil {
		t.Fatal(err)
	}
	if _, trace, err := build(t, ":local"); err != nil {
		t.Fatalf(":local build after the rollback: %v\n%s", err, trace)
	} else if n := len(builtStages(trace)); n != 0 {
		t.Errorf(":local build after the rollback built %d stages, want 0 (all synced back)\n%s", n, trace)
	}
}
