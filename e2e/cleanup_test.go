package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/gitlabapi"
	"gitlab.com/stagehand/stagehand/stages"
)

// publisher writes images to the registry as stagehand publishes them:
// the base image plus a layer of their own, annotated.
type publisher struct {
	t    *testing.T
	base v1.Image
}

func newPublisher(t *testing.T) *publisher {
	ref, err := name.ParseReference(h.BaseImage)
	if err != nil {
		t.Fatal(err)
	}
	base, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	return &publisher{t: t, base: base}
}

// image is a runnable image printing id.
func (p *publisher) image(id string, ann map[string]string) v1.Image {
	layer := tarLayer(p.t, map[string]string{"id.txt": id + "\n"})
	img, err := mutate.AppendLayers(p.base, layer)
	if err != nil {
		p.t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Cmd = []string{"cat", "/id.txt"}
	img, _ = mutate.ConfigFile(img, cf)
	if ann != nil {
		img = mutate.Annotations(img, ann).(v1.Image)
	}
	return img
}

func (p *publisher) put(ref string, img v1.Image) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		p.t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

func tarLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	return static.NewLayer(buf.Bytes(), types.DockerUncompressedLayer)
}

// TestScheduledCleanup is the scenario: 4 branches (2 deleted), 3
// git tags (1 deleted), 60 commit images, and a deleted branch's image
// still used by a CronJob's initContainer.
func TestScheduledCleanup(t *testing.T) {
	project := fmt.Sprintf("stagehand/cleanup-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	pub := newPublisher(t)
	now := time.Now().UTC()
	sha := func(i int) string { return fmt.Sprintf("%040x", 0xc0ffee000+i) }
	commitTime := func(i int) time.Time { return now.Add(-time.Duration(i) * time.Hour) }

	// Stages: s0 needed by everything kept, s1 by a deleted branch only
	// (old), s2 needed by nothing but young.
	stageSig := func(i int) string { return fmt.Sprintf("%056x", 0xabc000+i) }
	old, young := now.Add(-3*time.Hour).UnixMilli(), now.Add(-10*time.Minute).UnixMilli()
	stageTags := map[string]string{
		"needed": fmt.Sprintf("%s-%d", stageSig(0), old),
		"orphan": fmt.Sprintf("%s-%d", stageSig(1), old),
		"young":  fmt.Sprintf("%s-%d", stageSig(2), young),
	}
	for _, tag := range stageTags {
		pub.put(repo+"/stages:"+tag, pub.image("stage "+tag, nil))
	}

	ann := func(i int, ref, kind string, stagesList ...string) map[string]string {
		return map[string]string{
			stages.AnnotationCommit: sha(i), stages.AnnotationCommitTime: commitTime(i).Format(time.RFC3339),
			stages.AnnotationRef: ref, stages.AnnotationRefKind: kind, stages.AnnotationImage: "",
			stages.AnnotationStage: stageSig(0) + "-1", stages.AnnotationStages: strings.Join(stagesList, ","),
		}
	}
	// 60 commit images, c0 the newest; commits 55..59 are gone from git.
	commits := map[string]time.Time{}
	images := map[int]v1.Image{}
	for i := 0; i < 60; i++ {
		img := pub.image(fmt.Sprintf("commit %d", i), ann(i, "main", "branch", stageSig(0)))
		images[i] = img
		pub.put(repo+":"+sha(i), img)
		if i < 55 {
			commits[sha(i)] = commitTime(i)
		}
	}
	// Branch and tag images share the manifest of their commit's build.
	refs := []struct {
		tag, ref, kind string
		commit         int
		stages         []string
	}{
		{"main", "main", "branch", 0, nil}, {"feature-a", "feature-a", "branch", 1, nil},
		{"feature-b", "feature-b", "branch", 52, []string{stageSig(1)}}, {"feature-c", "feature-c", "branch", 53, nil},
		{"v1", "v1", "tag", 10, nil}, {"v2", "v2", "tag", 11, nil}, {"v0", "v0", "tag", 57, nil},
	}
	for _, r := range refs {
		st := append([]string{stageSig(0)}, r.stages...)
		img := pub.image(fmt.Sprintf("commit %d", r.commit), ann(r.commit, r.ref, r.kind, st...))
		// The same content as the commit image: give the commit tag this
		// manifest, as publishing one build under two tags does.
		d := pub.put(repo+":"+r.tag, img)
		pub.put(repo+":"+sha(r.commit), img)
		_ = d
	}

	api := gitlabapi.New(gitlabapi.Project{ID: 4242, Path: project, Branches: []string{"main", "feature-a"}, Tags: []string{"v1", "v2"}, Commits: commits}, h.Registry, "glpat-cleanup-token")
	defer api.Close()

	// The deleted branch feature-c still runs, in a CronJob's initContainer.
	c := kubeClient(t)
	ctx := context.Background()
	ns := fmt.Sprintf("stagehand-e2e-cleanup-%d", time.Now().UnixNano()%100000)
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	cron := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "restore", Namespace: ns},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy:  corev1.RestartPolicyNever,
			InitContainers: []corev1.Container{{Name: "fetch", Image: repo + ":feature-c"}},
			Containers:     []corev1.Container{{Name: "main", Image: h.BaseImage}},
		}}}}},
	}
	if _, err := c.BatchV1().CronJobs(ns).Create(ctx, cron, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	kc, err := os.ReadFile(h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	job := coordinator.Job{
		Name: "cleanup", Stage: "cleanup", PipelineSource: "schedule", Project: project, Registry: h.Registry,
		Variables: []coordinator.Variable{
			{Key: "STAGEHAND_CLEANUP_TOKEN", Value: "glpat-cleanup-token", Masked: true},
			{Key: "CI_API_V4_URL", Value: api.APIURL()},
			{Key: "KUBECONFIG", Value: string(kc), File: true},
		},
		Script: []string{`echo cleaned`},
	}
	run := runOn(t, r, job, nil)
	wantState(t, run, "success", "")
	wantTrace(t, run, "in use by cronjob "+ns+"/restore (initContainer fetch)", "Plan: delete")

	wantDeleted := []string{"feature-b", "v0", sha(50), sha(51), sha(52), sha(54), sha(55), sha(56), sha(57), sha(58), sha(59)}
	var got []string
	for _, d := range api.Deleted() {
		if t, ok := strings.CutPrefix(d, project+":"); ok {
			got = append(got, t)
		}
	}
	sort.Strings(got)
	sort.Strings(wantDeleted)
	if fmt.Sprint(got) != fmt.Sprint(wantDeleted) {
		t.Errorf("deleted image tags:\n got %v\nwant %v", got, wantDeleted)
	}
	var list struct{ Tags []string }
	registryGet(t, "/v2/"+project+"/tags/list", &list)
	left := map[string]bool{}
	for _, tg := range list.Tags {
		left[tg] = true
	}
	for _, tg := range wantDeleted {
		if left[tg] {
			t.Errorf("%s is still in the registry", tg)
		}
	}
	for _, tg := range []string{"main", "feature-a", "feature-c", "v1", "v2", sha(0), sha(49), sha(53)} {
		if !left[tg] {
			t.Errorf("%s was deleted but must stay", tg)
			continue
		}
		if out := dockerCLI(t, h.Engines[0].Host, "run", "--rm", "--network", "none", repo+":"+tg); !strings.HasPrefix(out, "commit ") {
			t.Errorf("docker run %s printed %q", tg, out)
		}
	}
	var stagesLeft struct{ Tags []string }
	registryGet(t, "/v2/"+project+"/stages/tags/list", &stagesLeft)
	sort.Strings(stagesLeft.Tags)
	wantStages := []string{stageTags["needed"], stageTags["young"]}
	sort.Strings(wantStages)
	if fmt.Sprint(stagesLeft.Tags) != fmt.Sprint(wantStages) {
		t.Errorf("stages left %v, want %v", stagesLeft.Tags, wantStages)
	}
	t.Logf("cleanup job took %s; %d GitLab API requests", run.Duration.Round(time.Millisecond), api.Requests())
}

// scopedKubeconfig is a kubeconfig of a service account that may list
// workloads in ns only.
func scopedKubeconfig(t *testing.T, ns string) string {
	t.Helper()
	c := kubeClient(t)
	ctx := context.Background()
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "cleaner"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "list-workloads", Namespace: ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "replicationcontrollers"}, Verbs: []string{"list"}},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "deployments", "statefulsets", "daemonsets"}, Verbs: []string{"list"}},
			{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: []string{"list"}},
		},
	}
	if _, err := c.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "cleaner", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "list-workloads"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "cleaner", Namespace: ns}},
	}
	if _, err := c.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "cleaner", &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(h.Kubeconfig)
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg.AuthInfos {
		u.Token = tok.Status.Token
	}
	out, _ := clientcmd.Write(*cfg)
	return string(out)
}

func TestCleanupWithNamespaceScopedRBACAndWithoutAToken(t *testing.T) {
	project := fmt.Sprintf("stagehand/scoped-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	pub := newPublisher(t)
	now := time.Now().UTC()
	for _, b := range []string{"gone-used", "gone-unused"} {
		pub.put(repo+":"+b, pub.image(b, map[string]string{
			stages.AnnotationCommit: fmt.Sprintf("%040x", len(b)), stages.AnnotationCommitTime: now.Format(time.RFC3339),
			stages.AnnotationRef: b, stages.AnnotationRefKind: "branch",
		}))
	}
	api := gitlabapi.New(gitlabapi.Project{ID: 1, Path: project, Branches: []string{"main"}, Commits: map[string]time.Time{}}, h.Registry, "glpat-scoped")
	defer api.Close()

	c := kubeClient(t)
	ctx := context.Background()
	ns := fmt.Sprintf("stagehand-e2e-scoped-%d", time.Now().UnixNano()%100000)
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	one := int32(0)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: repo + ":gone-used"}}}}},
	}
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc := scopedKubeconfig(t, ns)
	r, err := h.NewRunner(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	job := func(vars ...coordinator.Variable) coordinator.Job {
		return coordinator.Job{
			Name: "cleanup", Stage: "cleanup", PipelineSource: "schedule", Project: project, Registry: h.Registry,
			Variables: append([]coordinator.Variable{
				{Key: "CI_API_V4_URL", Value: api.APIURL()},
				{Key: "KUBECONFIG", Value: kc, File: true},
			}, vars...),
			Script: []string{`echo cleaned`},
		}
	}
	token := coordinator.Variable{Key: "STAGEHAND_CLEANUP_TOKEN", Value: "glpat-scoped", Masked: true}

	t.Run("without a token nothing is deleted", func(t *testing.T) {
		run := runOn(t, r, job(), nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "STAGEHAND_CLEANUP_TOKEN", "nothing was deleted")
		if d := api.Deleted(); len(d) != 0 {
			t.Errorf("deleted %v", d)
		}
	})
	t.Run("forbidden cluster-wide listing and no namespaces: nothing is deleted", func(t *testing.T) {
		run := runOn(t, r, job(token), nil)
		wantState(t, run, "failed", "script_failure")
		wantTrace(t, run, "may not list workloads across namespaces", "STAGEHAND_CLEANUP_NAMESPACES")
		if d := api.Deleted(); len(d) != 0 {
			t.Errorf("deleted %v", d)
		}
	})
	t.Run("namespace-scoped listing protects what runs there", func(t *testing.T) {
		run := runOn(t, r, job(token, coordinator.Variable{Key: "STAGEHAND_CLEANUP_NAMESPACES", Value: ns}), nil)
		wantState(t, run, "success", "")
		wantTrace(t, run, "WARNING: the cluster credentials may not list workloads across namespaces; looking only in "+ns,
			"in use by ", " "+ns+"/web")
		if d := api.Deleted(); fmt.Sprint(d) != fmt.Sprint([]string{project + ":gone-unused"}) {
			t.Errorf("deleted %v, want only gone-unused", d)
		}
	})
}

func TestCleanupCommandDryRunDeletesNothing(t *testing.T) {
	project := fmt.Sprintf("stagehand/dry-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	pub := newPublisher(t)
	for _, b := range []string{"main", "gone"} {
		pub.put(repo+":"+b, pub.image(b, map[string]string{
			stages.AnnotationCommit: fmt.Sprintf("%040x", len(b)), stages.AnnotationCommitTime: time.Now().UTC().Format(time.RFC3339),
			stages.AnnotationRef: b, stages.AnnotationRefKind: "branch",
		}))
	}
	api := gitlabapi.New(gitlabapi.Project{ID: 1, Path: project, Branches: []string{"main"}, Commits: map[string]time.Time{}}, h.Registry, "glpat-dry")
	defer api.Close()
	_, trace := mustCLI(t, []string{"STAGEHAND_CLEANUP_TOKEN=glpat-dry", "DOCKER_CONFIG=" + t.TempDir()},
		"cleanup", "--dry-run", "--api-url", api.APIURL(), "--project", project, "--stages-storage", repo+"/stages", "--kubeconfig", h.Kubeconfig)
	for _, want := range []string{repo + ":gone", "delete", "branch gone is gone", repo + ":main", "branch main exists", "Dry run: nothing deleted"} {
		if !strings.Contains(trace, want) {
			t.Errorf("the dry run's output lacks %q:\n%s", want, trace)
		}
	}
	if strings.Contains(trace, "glpat-dry") {
		t.Error("the token appears in the output")
	}
	if d := api.Deleted(); len(d) != 0 {
		t.Errorf("a dry run deleted %v", d)
	}
}
