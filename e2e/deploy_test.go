package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/harness"
)

func kubeClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// envJob is a job of the project's environment: a deploy, or with
// action "stop" a dismiss. KUBECONFIG is a file variable, as GitLab's
// agent gives it.
func (p *buildProject) envJob(t *testing.T, env, action string, extra ...coordinator.Variable) coordinator.Job {
	t.Helper()
	kc, err := os.ReadFile(h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	j := p.job(p.repo)
	j.Name, j.Stage = "deploy "+env, "deploy"
	j.Environment = &coordinator.Environment{Name: env, URL: "https://" + strings.ReplaceAll(env, "/", "-") + ".example.com", Action: action}
	j.Variables = append(j.Variables,
		coordinator.Variable{Key: "KUBECONFIG", Value: string(kc), File: true},
		// GitLab's deploy token (gitlab-deploy-token), for the pull secret.
		coordinator.Variable{Key: "CI_DEPLOY_USER", Value: "gitlab+deploy-token-7"},
		coordinator.Variable{Key: "CI_DEPLOY_PASSWORD", Value: "deploy-token-secret-" + p.project[len(p.project)-6:], Masked: true})
	j.Variables = append(j.Variables, extra...)
	j.Script = append(j.Script, `echo "deployed namespace=$STAGEHAND_NAMESPACE release=$STAGEHAND_RELEASE"`)
	if action == "stop" {
		j.Script = []string{`echo "dismissed $STAGEHAND_NAMESPACE"`}
	}
	return j
}

func podImagePullBackOff(p *corev1.Pod) {
	p.Status.Phase = corev1.PodPending
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "backend", Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
}

// deployedNamespace reads the namespace the script printed.
func deployedNamespace(t *testing.T, run *harness.JobRun) string {
	t.Helper()
	i := strings.LastIndex(run.Result.Trace, "deployed namespace=")
	if i < 0 {
		t.Fatalf("the script printed no namespace\n%s", run.Result.Trace)
	}
	rest := run.Result.Trace[i+len("deployed namespace="):]
	return rest[:strings.IndexAny(rest, " \n")]
}

// runWhile runs a job on r while the test plays the kubelet; it answers
// the run, when the first pod was marked and when the job ended.
func runWhile(t *testing.T, r *harness.Runner, job coordinator.Job, ns string, fn func(*corev1.Pod)) (*harness.JobRun, time.Time, time.Time) {
	t.Helper()
	c := kubeClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	first := make(chan time.Time, 1)
	go harness.PlayKubelet(ctx, c, ns, "backend", fn, first)
	run, err := r.Run(ctx, job, nil)
	ended := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	checkJob(t, r, run, job)
	var marked time.Time
	select {
	case marked = <-first:
	default:
	}
	return run, marked, ended
}

func TestDeployAndStopAnEnvironment(t *testing.T) {
	p := newBuildProject(t)
	c := kubeClient(t)
	r := p.runner(t, h.Engines[0])
	project := p.project[strings.LastIndex(p.project, "/")+1:]
	ns := project + "-review-feature-x"
	if len(ns) > 63 {
		t.Fatalf("namespace %s is too long for this test", ns)
	}

	deploy := p.envJob(t, "review/feature-x", "", coordinator.Variable{Key: "STAGEHAND_SET_GREETING", Value: "greeting=hi there"})
	run, marked, ended := runWhile(t, r, deploy, ns, harness.PodReady)
	wantState(t, run, "success", "")
	if got := deployedNamespace(t, run); got != ns {
		t.Fatalf("deployed into %s, want %s", got, ns)
	}
	wantTrace(t, run, "Installing release", "is ready in namespace "+ns)
	after := ended.Sub(marked)
	t.Logf("deploy job ended %s after the pods were marked ready (job %s)", after.Round(time.Millisecond), run.Duration.Round(time.Millisecond))
	if after > time.Second {
		t.Errorf("the job ended %s after the deployment became ready, want within 1 s", after)
	}

	ctx := context.Background()
	d, err := c.AppsV1().Deployments(ns).Get(ctx, "backend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	image := d.Spec.Template.Spec.Containers[0].Image
	env := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	for k, want := range map[string]string{"ENV": "review-feature-x", "CI_URL": "review-feature-x.example.com", "TIER": "review", "GREETING": "hi there"} {
		if env[k] != want {
			t.Errorf("the chart's %s = %q, want %q (values: global.*, values-<env>.yaml, STAGEHAND_SET_*)", k, env[k], want)
		}
	}
	images := published(t, run)
	if !strings.HasPrefix(image, images["backend"][0]+"@"+images["backend"][1]) {
		t.Errorf("the deployment runs %s, want the published %s@%s", image, images["backend"][0], images["backend"][1])
	}
	for _, k := range []string{"project.stagehand.io/git", "ci.stagehand.io/commit", "gitlab.ci.stagehand.io/pipeline-url", "gitlab.ci.stagehand.io/job-url"} {
		if d.Annotations[k] == "" {
			t.Errorf("the deployment lacks annotation %s: %v", k, d.Annotations)
		}
	}
	if got := d.Annotations["ci.stagehand.io/commit"]; got != p.repo.SHA {
		t.Errorf("commit annotation %q, want %s", got, p.repo.SHA)
	}
	if _, err := c.CoreV1().Secrets(ns).Get(ctx, "stagehand-registry", metav1.GetOptions{}); err != nil {
		t.Errorf("no pull secret: %v", err)
	}
	sa, err := c.CoreV1().ServiceAccounts(ns).Get(ctx, "backend", metav1.GetOptions{})
	if err != nil || len(sa.ImagePullSecrets) == 0 || sa.ImagePullSecrets[0].Name != "stagehand-registry" {
		t.Errorf("service account backend does not reference the pull secret: %v %v", sa, err)
	}
	nsObj, _ := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if nsObj.Labels["app.kubernetes.io/managed-by"] != "stagehand" {
		t.Errorf("namespace labels %v", nsObj.Labels)
	}
	// Reports for later jobs: the images and the Ingress's URL, in the
	// project directory as a dotenv file.
	wantTrace(t, run, "Environment URL: https://"+ns+".example.com (DYNAMIC_ENVIRONMENT_URL)", "Reports for later jobs: ")
	var dotenv string
	_ = filepath.Walk(r.BuildsDir(), func(path string, _ os.FileInfo, _ error) error {
		if filepath.Base(path) == "stagehand.env" {
			b, _ := os.ReadFile(path)
			dotenv = string(b)
		}
		return nil
	})
	for _, line := range []string{"DYNAMIC_ENVIRONMENT_URL=https://" + ns + ".example.com\n", "STAGEHAND_IMAGE_BACKEND=" + images["backend"][0] + "\n"} {
		if !strings.Contains(dotenv, line) {
			t.Errorf("stagehand.env lacks %q:\n%s", line, dotenv)
		}
	}

	t.Run("second deploy of the same commit changes nothing", func(t *testing.T) {
		gen := d.Generation
		run, _, _ := runWhile(t, r, deploy, ns, harness.PodReady)
		wantState(t, run, "success", "")
		wantTrace(t, run, "nothing to change")
		d2, err := c.AppsV1().Deployments(ns).Get(ctx, "backend", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d2.Generation != gen || d2.Spec.Template.Spec.Containers[0].Image != image {
			t.Errorf("the deployment changed: generation %d → %d", gen, d2.Generation)
		}
	})

	t.Run("a deploy after a new build changes only the image", func(t *testing.T) {
		changed, err := p.gs.Commit(p.project, map[string]string{"app/setup.sh": "#!/bin/sh\necho \"setup v2\"\n"})
		if err != nil {
			t.Fatal(err)
		}
		job := deploy
		job.Repo = &changed
		before, _ := c.AppsV1().Deployments(ns).Get(ctx, "backend", metav1.GetOptions{})
		run, _, _ := runWhile(t, r, job, ns, harness.PodReady)
		wantState(t, run, "success", "")
		wantTrace(t, run, "Upgrading release")
		after, err := c.AppsV1().Deployments(ns).Get(ctx, "backend", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after.Spec.Template.Spec.Containers[0].Image == before.Spec.Template.Spec.Containers[0].Image {
			t.Error("the image did not change")
		}
		a, b := before.Spec.Template.Spec.DeepCopy(), after.Spec.Template.Spec.DeepCopy()
		a.Containers[0].Image, b.Containers[0].Image = "", ""
		if a.String() != b.String() {
			t.Errorf("more than the image changed:\n%v\n%v", a, b)
		}
	})

	t.Run("stop job dismisses the environment for good", func(t *testing.T) {
		run := runOn(t, r, p.envJob(t, "review/feature-x", "stop"), nil)
		wantState(t, run, "success", "")
		wantTrace(t, run, "Uninstalled release", "namespace "+ns+" is gone")
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("namespace %s exists again (or cannot be read): %v", ns, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		again := runOn(t, r, p.envJob(t, "review/feature-x", "stop"), nil)
		wantState(t, again, "success", "")
		wantTrace(t, again, "already dismissed")
		if _, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("a second stop re-created namespace %s: %v", ns, err)
		}
	})
}

func TestRolloutThatNeverBecomesReadyFailsAtTheTimeout(t *testing.T) {
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	project := p.project[strings.LastIndex(p.project, "/")+1:]
	ns := project + "-review-broken"
	job := p.envJob(t, "review/broken", "", coordinator.Variable{Key: "STAGEHAND_DEPLOY_TIMEOUT", Value: "8s"})
	run, _, _ := runWhile(t, r, job, ns, podImagePullBackOff)
	wantState(t, run, "failed", "script_failure")
	wantTrace(t, run, "not ready after 8s", "deployment/backend", "ImagePullBackOff")
	// The failing container's logs are asked of the real API server,
	// bounded; without a kubelet it has none to give.
	if !regexp.MustCompile(`Logs of pod backend-\S+ container backend \(last 20 lines, at most 16 KiB\): (no output|not available \(.+\))\n`).MatchString(run.Result.Trace) {
		t.Errorf("no bounded log request of the failing container in the trace:\n%s", run.Result.Trace)
	}
	if strings.Contains(run.Result.Trace, "deployed namespace=") {
		t.Error("the script ran after the failed rollout")
	}
	_ = kubeClient(t).CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
}

// restrictedKubeconfig is a kubeconfig of a service account that may do
// nothing: every namespace is forbidden to it.
func restrictedKubeconfig(t *testing.T) string {
	t.Helper()
	c := kubeClient(t)
	ctx := context.Background()
	ns := "stagehand-e2e-nobody"
	_, _ = c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	_, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tok, err := c.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "nobody", &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg.AuthInfos {
		u.Token = tok.Status.Token
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestDeployErrorsNameTheirCause(t *testing.T) {
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	withKubeconfig := func(j coordinator.Job, kc string) coordinator.Job {
		for i := range j.Variables {
			if j.Variables[i].Key == "KUBECONFIG" {
				j.Variables[i].Value = kc
			}
		}
		return j
	}
	unreachable := "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}\nusers:\n- name: x\n  user: {token: x}\ncontexts:\n- name: x\n  context: {cluster: x, user: x}\ncurrent-context: x\n"

	t.Run("bad chart", func(t *testing.T) {
		bad, err := p.gs.Commit(p.project, map[string]string{".helm/templates/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  x: {{ .Values.missing.deeper }}\n"})
		if err != nil {
			t.Fatal(err)
		}
		j := p.envJob(t, "review/bad-chart", "")
		j.Repo = &bad
		run := runOn(t, r, j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "bad.yaml", "missing")
	})
	t.Run("unreachable API server", func(t *testing.T) {
		run := runOn(t, r, withKubeconfig(p.envJob(t, "review/unreachable", ""), unreachable), nil)
		wantState(t, run, "failed", "runner_system_failure")
		wantTrace(t, run, "API server at https://127.0.0.1:1 is unreachable")
	})
	t.Run("forbidden namespace", func(t *testing.T) {
		run := runOn(t, r, withKubeconfig(p.envJob(t, "review/forbidden", ""), restrictedKubeconfig(t)), nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "forbidden", "namespace")
	})
}

// TestPullSecretCopiedWithoutADeployToken: a job without GitLab's deploy
// token gets the runner's configured secret (kube-system/registrysecret)
// copied into its namespace.
func TestPullSecretCopiedWithoutADeployToken(t *testing.T) {
	c := kubeClient(t)
	ctx := context.Background()
	src := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "registrysecret", Namespace: "kube-system"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dTpw"}}}`)},
	}
	if _, err := c.CoreV1().Secrets("kube-system").Create(ctx, src, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	job := p.envJob(t, "review/copied-secret", "")
	var vars []coordinator.Variable
	for _, v := range job.Variables {
		if !strings.HasPrefix(v.Key, "CI_DEPLOY_") {
			vars = append(vars, v)
		}
	}
	job.Variables = vars
	project := p.project[strings.LastIndex(p.project, "/")+1:]
	ns := project + "-review-copied-secret"
	run, _, _ := runWhile(t, r, job, ns, harness.PodReady)
	wantState(t, run, "success", "")
	got, err := c.CoreV1().Secrets(ns).Get(ctx, "stagehand-registry", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data[corev1.DockerConfigJsonKey]) != string(src.Data[corev1.DockerConfigJsonKey]) {
		t.Errorf("the copied secret holds %s", got.Data[corev1.DockerConfigJsonKey])
	}
	_ = c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
}

func TestDismissCommand(t *testing.T) {
	c := kubeClient(t)
	ctx := context.Background()
	ns := fmt.Sprintf("stagehand-e2e-dismiss-%d", time.Now().UnixNano()%1000000)
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, stderr := mustCLI(t, nil, "dismiss", "--namespace", ns, "--kubeconfig", h.Kubeconfig)
	if !strings.Contains(stderr, "namespace "+ns+" is gone") || !strings.Contains(stderr, "not installed") {
		t.Errorf("dismiss said:\n%s", stderr)
	}
	if _, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s still there: %v", ns, err)
	}
	_, stderr = mustCLI(t, nil, "dismiss", "--namespace", ns, "--kubeconfig", h.Kubeconfig)
	if !strings.Contains(stderr, "already dismissed") {
		t.Errorf("a second dismiss said:\n%s", stderr)
	}
}

// TestCancelledDeployLeavesNoKubeconfig: a deploy job cancelled while it
// waits for its rollout ends within seconds, and its kubeconfig (written
// from the job's KUBECONFIG file variable) and DOCKER_CONFIG are gone
// after cleanup (runOn checks the state).
func TestCancelledDeployLeavesNoKubeconfig(t *testing.T) {
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	project := p.project[strings.LastIndex(p.project, "/")+1:]
	ns := project + "-review-cancel"
	c := kubeClient(t)
	ctx, stop := context.WithTimeout(context.Background(), 4*time.Minute)
	defer stop()
	go harness.PlayKubelet(ctx, c, ns, "backend", podImagePullBackOff, make(chan time.Time, 1))
	job := p.envJob(t, "review/cancel", "", coordinator.Variable{Key: "STAGEHAND_DEPLOY_TIMEOUT", Value: "3m"})
	run, took := runCancelled(t, r, job, "Still waiting (", 3*time.Minute)
	// The runner hears of a cancel when it sends the trace: the wait's
	// line every 10 s keeps that within seconds.
	if took > 20*time.Second {
		t.Errorf("the cancelled deploy took %s to end", took)
	} else {
		t.Logf("the cancelled deploy ended %s after the cancel", took.Round(time.Millisecond))
	}
	if strings.Contains(run.Result.Trace, "deployed namespace=") {
		t.Error("the script ran after a cancelled deploy")
	}
	_ = c.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
}
