package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

	t.Run("its werf 1.1 chart deploys unchanged", func(t *testing.T) {
		kc, err := os.ReadFile(h.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		env := fmt.Sprintf("review/guide-%d", time.Now().UnixNano()%1000000)
		const secretKey = "c0ffee11c0ffee22c0ffee33c0ffee44" // e2e/testdata/guide/.helm's key
		rememberSecrets("guide-db-pass-7f3a", "guide-tls-9c1e")
		j := job(repo)
		j.Name, j.Stage = "deploy", "deploy"
		j.Environment = &coordinator.Environment{Name: env}
		j.Variables = append(j.Variables,
			coordinator.Variable{Key: "KUBECONFIG", Value: string(kc), File: true},
			coordinator.Variable{Key: "WERF_SECRET_KEY", Value: secretKey, Masked: true},
			coordinator.Variable{Key: "STAGEHAND_TAG_STRATEGY", Value: gitlab.TagOrBranch})
		j.Script = append(j.Script, `echo "deployed namespace=$STAGEHAND_NAMESPACE release=$STAGEHAND_RELEASE"`)
		ns := gitlab.KubernetesNamespace("guide-" + coordinator.EnvironmentSlug(env))
		c := kubeClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		go harness.PlayKubelet(ctx, c, ns, "guide", harness.PodReady, nil)
		run := runOn(t, runner(t), j, nil)
		wantState(t, run, "success", "")
		wantTrace(t, run, "deployed namespace="+ns, "Decrypted the chart's secrets (secret-values.yaml; 1 files of secret/)",
			"werf.io/failures-allowed-per-replica (deployment/guide-app): accepted",
			"werf.io/skip-logs-for-containers (deployment/guide-app): honoured")
		published := images(t, run)
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "guide-app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cs := d.Spec.Template.Spec.Containers
		if len(cs) != 2 || cs[0].Image != published["app"] || cs[1].Image != published["web"] {
			t.Fatalf("the pod template's images are %v, the build published %v", cs, published)
		}
		for _, ctr := range cs {
			id, err := remoteImageID(ctr.Image)
			if err != nil {
				t.Fatal(err)
			}
			// A branch's image: pulled always, and its ID in the pod
			// template, so that a rebuilt branch restarts the pods.
			if ctr.ImagePullPolicy != corev1.PullAlways || len(ctr.Env) == 0 || ctr.Env[0].Name != "DOCKER_IMAGE_ID" || ctr.Env[0].Value != id {
				t.Errorf("container %s: pull policy %s, env %v; want Always and DOCKER_IMAGE_ID=%s", ctr.Name, ctr.ImagePullPolicy, ctr.Env, id)
			}
		}
		sec, err := c.CoreV1().Secrets(ns).Get(ctx, "guide-secrets", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(sec.Data["db-password"]); got != "guide-db-pass-7f3a" {
			t.Errorf("db-password from secret-values.yaml is %q", got)
		}
		if got := string(sec.Data["tls.key"]); !strings.Contains(got, "guide-tls-9c1e") {
			t.Errorf("tls.key from .helm/secret/ is %q", got)
		}
		cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "guide-werf", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantData := map[string]string{"project": "guide", "repo": proxy.Addr() + "/" + project, "is_branch": "true", "branch": "main", "bundle": published["bundle"]}
		for k, v := range wantData {
			if cm.Data[k] != v {
				t.Errorf("global.werf %s = %q, want %q", k, cm.Data[k], v)
			}
		}
		stop := j
		stop.Environment = &coordinator.Environment{Name: env, Action: "stop"}
		stop.Script = []string{"echo stopped"}
		wantState(t, runOn(t, runner(t), stop, nil), "success", "")
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

// remoteImageID is an image's ID (its config's digest) in its registry.
func remoteImageID(ref string) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	img, err := remote.Image(r)
	if err != nil {
		return "", err
	}
	id, err := img.ConfigName()
	return id.String(), err
}
