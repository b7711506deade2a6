package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/gitserver"
	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/gitlab"
)

var guideImageLine = regexp.MustCompile(`(?m)\sguide (\w+)=(\S+)$`)

// TestWerfGuideProjectBuildsUnchanged: a project written as werf 1.1's
// guides wrote them (testdata/guide) builds through the real gitlab-runner
// without a change: partials, .Files.Get, sprig, fromImageArtifact, a
// build_dir mount as a package cache, owner names, a remote repository and
// a Dockerfile image with no context:.
func TestWerfGuideProjectBuildsUnchanged(t *testing.T) {
	gs, proxy := newServers(t)
	project := fmt.Sprintf("stagehand/guide-%d", time.Now().UnixNano())
	lib, err := gs.CreateRepo("stagehand/lib", map[string]string{"lib/VERSION": "lib 1.0\n", "README": "not mapped\n"})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := gs.CreateRepo(project, mustReadTree(t, filepath.Join("testdata", "guide")))
	if err != nil {
		t.Fatal(err)
	}
	base := proxy.Addr() + strings.TrimPrefix(h.BaseImage, h.Registry)
	job := func(r gitserver.Repo) coordinator.Job {
		var script []string
		for _, img := range []string{"APP", "BUNDLE", "WEB"} {
			script = append(script, fmt.Sprintf(`echo "guide %s=$STAGEHAND_IMAGE_%s"`, strings.ToLower(img), img))
		}
		return coordinator.Job{
			Name: "build", Stage: "build", Repo: &r, Project: project, Registry: proxy.Addr(),
			Variables: []coordinator.Variable{{Key: "BASE_IMAGE", Value: base}, {Key: "LIB_REPO_URL", Value: lib.URL}},
			Script:    script, Timeout: 5 * time.Minute,
		}
	}
	e := h.Engines[0]
	mounts, gitCache := t.TempDir(), t.TempDir()
	runner := func(t *testing.T) *harness.Runner {
		r, err := h.NewRunner(t.Name())
		if err != nil {
			t.Fatal(err)
		}
		r.Env = []string{"STAGEHAND_DOCKER_HOST=" + e.Host, "STAGEHAND_DOCKER_NETWORK=none",
			"STAGEHAND_MOUNTS_DIR=" + mounts, "STAGEHAND_GIT_CACHE_DIR=" + gitCache}
		return r
	}
	images := func(t *testing.T, run *harness.JobRun) map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, m := range guideImageLine.FindAllStringSubmatch(run.Result.Trace, -1) {
			out[m[1]] = m[2]
		}
		if len(out) != 3 || out["app"] == "" || out["bundle"] == "" || out["web"] == "" {
			t.Fatalf("the script saw images %v, want app, bundle and web\n%s", out, run.Result.Trace)
		}
		return out
	}
	dockerRun := func(ref string) string {
		return dockerCLI(t, e.Host, "run", "--rm", "--network", "none", ref)
	}

	run := runOn(t, runner(t), job(repo), nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Remote repository "+lib.URL+": branch main is "+lib.SHA[:12])
	first := images(t, run)
	wantApp := "welcome to the guide\ncache miss\nlibfoo 1.0\nsetup ran\nasset a\nasset b\nlib 1.0\n" +
		"deps.txt owner 1000:1000\ndeps.txt names app:app\nmounted files in the image: 0\n"
	if got := dockerRun(first["app"]); got != wantApp {
		t.Errorf("app printed:\n%s\nwant:\n%s", got, wantApp)
	}
	if got := dockerRun(first["bundle"]); got != "asset a\nasset b\n" {
		t.Errorf("bundle (fromImageArtifact) printed %q", got)
	}
	if got := dockerRun(first["web"]); got != "hello from the web image\n1\n" {
		t.Errorf("web (Dockerfile, whole project as context) printed %q", got)
	}

	t.Run("werf's names, the same from the hooks and from stagehand ci-env", func(t *testing.T) {
		j := job(repo)
		j.Name, j.Stage = "names", "test"
		j.Environment = &coordinator.Environment{Name: "review/Feature X"}
		j.Variables = append(j.Variables, coordinator.Variable{Key: "STAGEHAND_ACTION", Value: "none"})
		j.Script = []string{
			`echo "env slug=$CI_ENVIRONMENT_SLUG."`,
			`echo "hooks namespace=$STAGEHAND_NAMESPACE release=$STAGEHAND_RELEASE"`,
			`eval "$(env -u STAGEHAND_NAMESPACE -u STAGEHAND_RELEASE ` + h.Stagehand + ` ci-env)"`,
			`echo "ci-env namespace=$STAGEHAND_NAMESPACE release=$STAGEHAND_RELEASE"`,
		}
		run := runOn(t, runner(t), j, nil)
		wantState(t, run, "success", "")
		// werf.yaml's project: guide, werf 1.1's slugs of
		// <project>-<CI_ENVIRONMENT_SLUG>.
		m := regexp.MustCompile(`env slug=([a-z0-9-]+)\.`).FindStringSubmatch(run.Result.Trace)
		if m == nil {
			t.Fatalf("no environment slug in the trace:\n%s", run.Result.Trace)
		}
		ns, rel := gitlab.KubernetesNamespace("guide-"+m[1]), gitlab.HelmRelease("guide-"+m[1])
		names := "namespace=" + ns + " release=" + rel
		wantTrace(t, run, "hooks "+names, "ci-env "+names)
	})

	t.Run("the same commit again is idle", func(t *testing.T) {
		run := runOn(t, runner(t), job(repo), nil)
		wantState(t, run, "success", "")
		if got := builtStages(run.Result.Trace); len(got) != 0 {
			t.Errorf("the second build built %v", got)
		}
		if again := images(t, run); fmt.Sprint(again) != fmt.Sprint(first) {
			t.Errorf("the second build published other images:\n%v\n%v", again, first)
		}
	})

	t.Run("a changed install dependency rebuilds install, which finds the cache", func(t *testing.T) {
		changed, err := gs.Commit(project, map[string]string{"app/deps.txt": "libfoo 2.0\n"})
		if err != nil {
			t.Fatal(err)
		}
		run := runOn(t, runner(t), job(changed), nil)
		wantState(t, run, "success", "")
		built := builtStages(run.Result.Trace)
		if !slices.Contains(built, "app/install") || slices.Contains(built, "app/beforeInstall") || slices.Contains(built, "web/dockerfile") {
			t.Errorf("built %v: want app/install and later, not beforeInstall nor web", built)
		}
		got := dockerRun(images(t, run)["app"])
		if !strings.Contains(got, "cache hit\nlibfoo 2.0\n") {
			t.Errorf("app printed:\n%s\nwant the cache hit of the build_dir mount and the new deps", got)
		}
	})

	t.Run("a root file rebuilds the Dockerfile image whose context is the project", func(t *testing.T) {
		changed, err := gs.Commit(project, map[string]string{"VERSION": "2\n"})
		if err != nil {
			t.Fatal(err)
		}
		run := runOn(t, runner(t), job(changed), nil)
		wantState(t, run, "success", "")
		if got := builtStages(run.Result.Trace); fmt.Sprint(got) != "[web/dockerfile]" {
			t.Errorf("built %v, want [web/dockerfile]", got)
		}
		if got := dockerRun(images(t, run)["web"]); got != "hello from the web image\n2\n" {
			t.Errorf("web printed %q", got)
		}
	})

	t.Run("an ignored file changes nothing", func(t *testing.T) {
		changed, err := gs.Commit(project, map[string]string{"motd.txt": "welcome to the guide\n\n"})
		if err != nil {
			t.Fatal(err)
		}
		run := runOn(t, runner(t), job(changed), nil)
		wantState(t, run, "success", "")
		if got := builtStages(run.Result.Trace); len(got) != 0 {
			t.Errorf("built %v, want nothing (motd.txt is .dockerignore'd and trimmed by the template)", got)
		}
	})
}

// TestConfigRenderAndPlanCommands: `stagehand config render` prints the
// rendered config, `stagehand plan` every image's stages with their
// signatures (no engine, no registry), and a bad config fails naming its
// source line.
func TestConfigRenderAndPlanCommands(t *testing.T) {
	dir := checkout(t, mustReadTree(t, filepath.Join("testdata", "guide")))
	env := []string{"BASE_IMAGE=" + h.BaseImage, "LIB_REPO_URL=https://gitlab.example.com/group/lib.git", "DOCKER_HOST=unix:///nonexistent.sock"}
	rendered, _ := mustCLI(t, env, "config", "render", "--dir", dir)
	for _, want := range []string{"from: " + h.BaseImage, `echo "welcome to the guide" > /etc/motd`, "cat /src/assets/a.txt /src/assets/b.txt > /build/bundle.txt", "- url: https://gitlab.example.com/group/lib.git"} {
		if !strings.Contains(rendered, want) {
			t.Errorf("config render lacks %q:\n%s", want, rendered)
		}
	}
	planned, _ := mustCLI(t, env, "plan", "--dir", dir)
	for _, want := range []string{"werf.yaml: project guide, 4 images and artifacts, 14 stages", "app              beforeInstall", "web              dockerfile", "https://gitlab.example.com/group/lib.git@refs/heads/main"} {
		if !strings.Contains(planned, want) {
			t.Errorf("plan lacks %q:\n%s", want, planned)
		}
	}
	bad := checkout(t, map[string]string{"werf.yaml": "project: p\nconfigVersion: 1\n---\nimage: app\nfrom: alpine\nansible:\n  install: []\n"})
	_, stderr, err := stagehandCLI(t, nil, "plan", "--dir", bad)
	if err == nil || !strings.Contains(stderr, `werf.yaml:6: image "app": "ansible" is not supported`) {
		t.Errorf("a bad config: %v\n%s", err, stderr)
	}
}

func mustReadTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	files, err := harness.ReadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
