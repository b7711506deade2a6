package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/harness"
)

// sampleNamespace is the namespace of an environment of a sample project
// (werf.yaml's project: is the project's path's last element).
func (p *buildProject) namespace(envSlug string) string {
	return p.project[strings.LastIndex(p.project, "/")+1:] + "-" + envSlug
}

// TestHostileJobsAreRefused: what a careless or hostile job asks for on
// a shared runner is refused in prepare, naming the rule, and nothing in
// the cluster is touched.
func TestHostileJobsAreRefused(t *testing.T) {
	c := kubeClient(t)
	ctx := context.Background()
	victim := newBuildProject(t)
	victimNS := victim.namespace("review-victim")
	run, _, _ := runWhile(t, victim.runner(t, h.Engines[0]), victim.envJob(t, "review/victim", ""), victimNS, harness.PodReady)
	wantState(t, run, "success", "")
	before, err := c.CoreV1().Namespaces().Get(ctx, victimNS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if before.Annotations["stagehand.io/project-id"] == "" {
		t.Fatalf("the victim's namespace has no owner: %v", before.Annotations)
	}
	untouched := func(t *testing.T) {
		t.Helper()
		ns, err := c.CoreV1().Namespaces().Get(ctx, victimNS, metav1.GetOptions{})
		if err != nil || ns.DeletionTimestamp != nil || ns.ResourceVersion != before.ResourceVersion {
			t.Errorf("the victim's namespace was touched: %v %+v", err, ns.ObjectMeta)
		}
		if _, err := c.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Errorf("kube-system: %v", err)
		}
	}
	hostile := newBuildProject(t)
	allowing := hostile.runner(t, h.Engines[0], "STAGEHAND_ALLOW_NAMESPACE_OVERRIDE=true")

	t.Run("forged project id and pipeline source", func(t *testing.T) {
		j := hostile.envJob(t, "review/forged", "stop",
			coordinator.Variable{Key: "CI_PROJECT_ID", Value: "1"}, coordinator.Variable{Key: "CI_PIPELINE_SOURCE", Value: "schedule"})
		run := runOn(t, hostile.runner(t, h.Engines[0]), j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "CI_PIPELINE_SOURCE, CI_PROJECT_ID give other values than GitLab's")
		untouched(t)
	})
	t.Run("naming a namespace where the runner forbids it", func(t *testing.T) {
		j := hostile.envJob(t, "review/override", "stop", coordinator.Variable{Key: "STAGEHAND_NAMESPACE", Value: victimNS})
		run := runOn(t, hostile.runner(t, h.Engines[0]), j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "STAGEHAND_NAMESPACE="+victimNS+" names the namespace, and this runner does not let jobs choose their namespace")
		untouched(t)
	})
	t.Run("dismissing kube-system", func(t *testing.T) {
		j := hostile.envJob(t, "review/system", "stop", coordinator.Variable{Key: "STAGEHAND_NAMESPACE", Value: "kube-system"})
		run := runOn(t, allowing, j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "namespace kube-system is protected on this runner")
		untouched(t)
	})
	t.Run("deploying into and dismissing another project's namespace", func(t *testing.T) {
		j := hostile.envJob(t, "review/steal", "", coordinator.Variable{Key: "APP_NAMESPACE", Value: victimNS})
		run := runOn(t, allowing, j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "namespace "+victimNS+" belongs to project "+victim.project)
		j = hostile.envJob(t, "review/steal", "stop", coordinator.Variable{Key: "APP_NAMESPACE", Value: victimNS})
		run = runOn(t, allowing, j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "belongs to project "+victim.project)
		untouched(t)
	})
	t.Run("a deploy freeze", func(t *testing.T) {
		j := hostile.envJob(t, "review/frozen", "", coordinator.Variable{Key: "CI_DEPLOY_FREEZE", Value: "true"})
		run := runOn(t, hostile.runner(t, h.Engines[0]), j, nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "a deploy freeze is active")
		if _, err := c.CoreV1().Namespaces().Get(ctx, hostile.namespace("review-frozen"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the frozen deploy created its namespace: %v", err)
		}
	})
	victimStop := victim.envJob(t, "review/victim", "stop")
	wantState(t, runOn(t, victim.runner(t, h.Engines[0]), victimStop, nil), "success", "")
}

// TestScheduledPipelineJobsDoTheirOwnWork: in a scheduled pipeline a
// test job tests and a build job builds (the cleanup job cleans: see
// TestScheduledCleanup).
func TestScheduledPipelineJobsDoTheirOwnWork(t *testing.T) {
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	test := coordinator.Job{Name: "unit", Stage: "test", PipelineSource: "schedule", Project: p.project, Registry: p.proxy.Addr(), Script: []string{"echo tested"}}
	run := runOn(t, r, test, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Action: none", "tested")
	build := p.job(p.repo)
	build.PipelineSource = "schedule"
	run = runOn(t, r, build, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Action: build", "Build done in")
}

// TestKubeContextPicksTheAgentsContext: a kubeconfig of two contexts (as
// GitLab's agent gives them); KUBE_CONTEXT picks the second, whose
// cluster is the real one; a wrong name lists both.
func TestKubeContextPicksTheAgentsContext(t *testing.T) {
	two := twoContextKubeconfig(t)
	p := newBuildProject(t)
	r := p.runner(t, h.Engines[0])
	withConfig := func(j coordinator.Job, extra ...coordinator.Variable) coordinator.Job {
		for i, v := range j.Variables {
			if v.Key == "KUBECONFIG" {
				j.Variables[i].Value = two
			}
		}
		j.Variables = append(j.Variables, extra...)
		return j
	}
	bad := withConfig(p.envJob(t, "review/ctx", ""), coordinator.Variable{Key: "KUBE_CONTEXT", Value: "group/agents:nope"})
	run := runOn(t, r, bad, nil)
	wantState(t, run, "failed", "script_failure")
	wantTrace(t, run, "KUBE_CONTEXT=group/agents:nope is not a context", "its contexts: group/agents:production, group/agents:staging")

	good := withConfig(p.envJob(t, "review/ctx", ""), coordinator.Variable{Key: "KUBE_CONTEXT", Value: "group/agents:production"})
	run, _, _ = runWhile(t, r, good, p.namespace("review-ctx"), harness.PodReady)
	wantState(t, run, "success", "")
	wantTrace(t, run, "is ready in namespace "+p.namespace("review-ctx"))
	stop := withConfig(p.envJob(t, "review/ctx", "stop"), coordinator.Variable{Key: "KUBE_CONTEXT", Value: "group/agents:production"})
	wantState(t, runOn(t, r, stop, nil), "success", "")
}

// twoContextKubeconfig is the harness's kubeconfig as two contexts: the
// current one's cluster does not answer, the second is the real one.
func twoContextKubeconfig(t *testing.T) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	real := cfg.Clusters[cur.Cluster].DeepCopy()
	dead := real.DeepCopy()
	dead.Server = "https://127.0.0.1:1"
	out := clientcmdapi.NewConfig()
	out.Clusters["real"], out.Clusters["dead"] = real, dead
	out.AuthInfos["user"] = cfg.AuthInfos[cur.AuthInfo].DeepCopy()
	out.Contexts["group/agents:staging"] = &clientcmdapi.Context{Cluster: "dead", AuthInfo: "user"}
	out.Contexts["group/agents:production"] = &clientcmdapi.Context{Cluster: "real", AuthInfo: "user"}
	out.CurrentContext = "group/agents:staging"
	b, err := clientcmd.Write(*out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKilledDeployIsRecoveredAndDeploysTakeTurns: a deploy killed
// (SIGKILL of stagehand-deploy) in the middle of an upgrade leaves its
// release pending-upgrade; the next deploy rolls it back and succeeds.
// Two deploys of one environment at once both succeed, one after the
// other, the second saying whom it waited for.
func TestKilledDeployIsRecoveredAndDeploysTakeTurns(t *testing.T) {
	p := newBuildProject(t)
	ns := p.namespace("review-turns")
	syncEnv := "STAGEHAND_SYNCHRONIZATION=kubernetes://stagehand-synchronization"
	r1 := p.runner(t, h.Engines[0], syncEnv, "STAGEHAND_KUBECONFIG="+h.Kubeconfig)
	run, _, _ := runWhile(t, r1, p.envJob(t, "review/turns", ""), ns, harness.PodReady)
	wantState(t, run, "success", "")

	// An upgrade held by a pre-upgrade hook that never completes: kill
	// the deploy program while Helm has the release pending-upgrade.
	hold := p.envJob(t, "review/turns", "", coordinator.Variable{Key: "STAGEHAND_SET_HOLD", Value: "holdUpgrade=true"})
	c := kubeClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	killed := make(chan string, 1)
	go func() {
		for ctx.Err() == nil {
			secrets, err := c.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,status=pending-upgrade"})
			if err == nil && len(secrets.Items) > 0 {
				// (The process name is cut to 15 characters: match the
				// command line, this harness's binary.)
				out, err := exec.Command("pkill", "-KILL", "-f", "^"+filepath.Join(filepath.Dir(h.Stagehand), "stagehand-deploy")+"$").CombinedOutput()
				killed <- fmt.Sprintf("%s: pkill %v %s", secrets.Items[0].Name, err, out)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	run, err := r1.Run(ctx, hold, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-killed:
		t.Logf("killed stagehand-deploy with the release pending (%s)", k)
	default:
		t.Fatalf("the release never went pending-upgrade:\n%s", run.Result.Trace)
	}
	if run.Result.State == "success" {
		t.Fatalf("the killed deploy succeeded:\n%s", run.Result.Trace)
	}
	run, _, _ = runWhile(t, r1, p.envJob(t, "review/turns", "", coordinator.Variable{Key: "STAGEHAND_SET_GREETING", Value: "greeting=after the kill"}), ns, harness.PodReady)
	wantState(t, run, "success", "")
	wantTrace(t, run, "was left pending-upgrade", "by a deploy that did not finish: rolled it back to revision")

	// Two at once, on two hosts: the first one's pods become ready only
	// after 8 s, so the second, started 3 s later, finds its release
	// locked.
	r2 := p.runner(t, h.Engines[1], syncEnv, "STAGEHAND_KUBECONFIG="+h.Kubeconfig)
	slowReady := func(pod *corev1.Pod) {
		time.Sleep(8 * time.Second)
		harness.PodReady(pod)
	}
	var wg sync.WaitGroup
	runs := make([]*harness.JobRun, 2)
	for i, r := range []*harness.Runner{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 3 * time.Second)
			j := p.envJob(t, "review/turns", "", coordinator.Variable{Key: "STAGEHAND_SET_GREETING", Value: fmt.Sprintf("greeting=deploy %d", i)})
			runs[i], _, _ = runWhile(t, r, j, ns, slowReady)
		}()
	}
	wg.Wait()
	waited := 0
	for _, run := range runs {
		wantState(t, run, "success", "")
		if strings.Contains(run.Result.Trace, "Waiting for release "+p.namespace("review-turns")) {
			waited++
		}
	}
	if waited != 1 {
		t.Errorf("%d of the two concurrent deploys waited for the release, want 1", waited)
	}
	wantState(t, runOn(t, r1, p.envJob(t, "review/turns", "stop"), nil), "success", "")
}

// TestDeployWaitsForATerminatingNamespace: a deploy right after its
// namespace was deleted (still terminating: an object of it holds a
// finalizer) waits until it is gone, then creates it again.
func TestDeployWaitsForATerminatingNamespace(t *testing.T) {
	p := newBuildProject(t)
	ns := p.namespace("review-again")
	r := p.runner(t, h.Engines[0])
	run, _, _ := runWhile(t, r, p.envJob(t, "review/again", ""), ns, harness.PodReady)
	wantState(t, run, "success", "")
	c := kubeClient(t)
	ctx := context.Background()
	held := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: ns, Finalizers: []string{"stagehand.test/hold"}}}
	if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, held, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The finalizer goes a few seconds after the deploy started.
	go func() {
		time.Sleep(8 * time.Second)
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		_, _ = c.CoreV1().ConfigMaps(ns).Patch(ctx, "held", types.MergePatchType, patch, metav1.PatchOptions{})
	}()
	run, _, _ = runWhile(t, r, p.envJob(t, "review/again", ""), ns, harness.PodReady)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Namespace "+ns+" is still terminating", "Created namespace "+ns, "is ready in namespace "+ns)
	wantState(t, runOn(t, r, p.envJob(t, "review/again", "stop"), nil), "success", "")
}
