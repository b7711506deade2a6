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
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/stagesrepo"
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
	// Their edge records, as builds write them: s1 was built on s0.
	stagesRef, err := name.NewRepository(repo + "/stages")
	if err != nil {
		t.Fatal(err)
	}
	record := func(r string) {
		if err := stages.WriteRecord(context.Background(), stagesRef, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	record(stagesrepo.EdgeRecord(stageSig(0), ""))
	record(stagesrepo.EdgeRecord(stageSig(1), stageSig(0)))
	record(stagesrepo.EdgeRecord(stageSig(2), ""))
	// publish writes a tag with its publication record, as builds do;
	// legacy writes one as a stagehand without records did (cleanup reads
	// its manifest).
	publish := func(tag string, kind stagesrepo.PublicationKind, final string, img v1.Image) {
		record(stagesrepo.PublicationRecord(kind, repo, tag, final))
		pub.put(repo+":"+tag, img)
	}
	legacy := func(tag string, img v1.Image) { pub.put(repo+":"+tag, img) }

	ann := func(i int, ref, kind string, stagesList ...string) map[string]string {
		return map[string]string{
			stagesrepo.AnnotationCommit: sha(i), stagesrepo.AnnotationCommitTime: commitTime(i).Format(time.RFC3339),
			stagesrepo.AnnotationRef: ref, stagesrepo.AnnotationRefKind: kind, stagesrepo.AnnotationImage: "",
			stagesrepo.AnnotationStage: stagesList[len(stagesList)-1] + "-1", stagesrepo.AnnotationStages: strings.Join(stagesList, ","),
		}
	}
	// 60 commit images, c0 the newest; commits 55..59 are gone from git.
	// Odd ones are legacy.
	commits := map[string]time.Time{}
	commitImage := func(i int, img v1.Image, final string) {
		if i%2 == 1 {
			legacy(sha(i), img)
		} else {
			publish(sha(i), stagesrepo.PublishedCommit, final, img)
		}
	}
	for i := 0; i < 60; i++ {
		commitImage(i, pub.image(fmt.Sprintf("commit %d", i), ann(i, "main", "branch", stageSig(0))), stageSig(0))
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
		kind, final := stagesrepo.PublishedBranch, st[len(st)-1]
		if r.kind == "tag" {
			kind = stagesrepo.PublishedGitTag
		}
		// The same content as the commit image: give the commit tag this
		// manifest, as publishing one build under two tags does.
		publish(r.tag, kind, final, img)
		commitImage(r.commit, img, final)
	}
	// A tag of another tool in the same repository.
	legacy("latest", pub.image("not ours", nil))

	// What werf 1.1 published before the project moved (multirepo, an
	// image "backend"): known by werf's labels, under the same policies.
	werfRepo := repo + "/backend"
	werfImage := func(tag, strategy string, created time.Time) {
		img := pub.image("werf "+tag, nil)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Created = v1.Time{Time: created}
		cf.Config.Labels = map[string]string{"werf": "shop", "werf-image": "true", "werf-tag-strategy": strategy,
			"werf-image-tag": tag, "werf-image-name": "backend", "werf-docker-image-name": werfRepo + ":" + tag}
		img, _ = mutate.ConfigFile(img, cf)
		pub.put(werfRepo+":"+tag, img)
	}
	werfImage("main", "git-branch", now.Add(-24*time.Hour))
	werfImage(gitlab.DockerTag("feature/gone"), "git-branch", now.Add(-24*time.Hour))
	werfImage("v1", "git-tag", now.Add(-24*time.Hour))
	werfImage("v0.9", "git-tag", now.Add(-24*time.Hour))
	werfImage(sha(3), "git-commit", now.Add(-24*time.Hour))
	werfImage(sha(58), "git-commit", now.Add(-24*time.Hour))
	werfImage("custom-rc", "custom", now.Add(-900*24*time.Hour))
	werfImage(fmt.Sprintf("%056x", 0xdef), "stages-signature", now.Add(-24*time.Hour))
	// A werf 1.1 stage image (not published): no stagehand annotations.
	legacy("werf-stage-like", pub.image("werf stage", nil))

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
		Name: "cleanup", Stage: "cleanup", PipelineSource: "schedule", Project: project, Registry: h.Registry, APIURL: api.APIURL(),
		Variables: []coordinator.Variable{
			{Key: "STAGEHAND_CLEANUP_TOKEN", Value: "glpat-cleanup-token", Masked: true},
			{Key: "KUBECONFIG", Value: string(kc), File: true},
		},
		Script: []string{`echo cleaned`},
	}
	run := runOn(t, r, job, nil)
	wantState(t, run, "success", "")
	// The legacy tags' manifests are read (the 30 odd commits and latest),
	// and c52's, which has two records (as commit of main, then of
	// feature-b): its manifest tells which is current.
	wantTrace(t, run, "in use by cronjob "+ns+"/restore (initContainer fetch)", "Plan: delete", "(41 manifests read, 10 image configs read)",
		"backend:custom-rc", "werf 1.1 custom tag", "8 of them werf 1.1's")

	// c53 has the manifest of feature-c, the image in use: the tag goes
	// alone (the fake deletes tags as GitLab does), the image stays.
	wantDeleted := []string{"feature-b", "v0", sha(50), sha(51), sha(52), sha(53), sha(54), sha(55), sha(56), sha(57), sha(58), sha(59)}
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
	for _, tg := range []string{"main", "feature-a", "feature-c", "v1", "v2", sha(0), sha(48), sha(49)} {
		if !left[tg] {
			t.Errorf("%s was deleted but must stay", tg)
			continue
		}
		if out := dockerCLI(t, h.Engines[0].Host, "run", "--rm", "--network", "none", repo+":"+tg); !strings.HasPrefix(out, "commit ") {
			t.Errorf("docker run %s printed %q", tg, out)
		}
	}
	if !left["latest"] {
		t.Error("another tool's tag was deleted")
	}
	var werfGot []string
	for _, d := range api.Deleted() {
		if t, ok := strings.CutPrefix(d, project+"/backend:"); ok {
			werfGot = append(werfGot, t)
		}
	}
	sort.Strings(werfGot)
	werfWant := []string{gitlab.DockerTag("feature/gone"), sha(58), "v0.9"}
	sort.Strings(werfWant)
	if fmt.Sprint(werfGot) != fmt.Sprint(werfWant) {
		t.Errorf("deleted werf 1.1 tags:\n got %v\nwant %v (gone branch, gone commit, gone git tag; custom tags stay as werf kept them)", werfGot, werfWant)
	}
	var stagesLeft struct{ Tags []string }
	registryGet(t, "/v2/"+project+"/stages/tags/list", &stagesLeft)
	var stageTagsLeft []string
	records := map[string]bool{}
	for _, tg := range stagesLeft.Tags {
		if stagesrepo.IsRecord(tg) {
			records[tg] = true
		} else {
			stageTagsLeft = append(stageTagsLeft, tg)
		}
	}
	sort.Strings(stageTagsLeft)
	wantStages := []string{stageTags["needed"], stageTags["young"]}
	sort.Strings(wantStages)
	if fmt.Sprint(stageTagsLeft) != fmt.Sprint(wantStages) {
		t.Errorf("stages left %v, want %v", stageTagsLeft, wantStages)
	}
	// Records go with what they name: the deleted tags' and the deleted
	// stage's; the kept ones' stay.
	for _, tg := range []string{"feature-b", sha(52), sha(54), sha(56)} {
		for r := range records {
			if strings.Contains(r, stagesrepo.PublicationKey(repo, tg)) {
				t.Errorf("the record %s of deleted %s stays", r, tg)
			}
		}
	}
	for _, r := range []string{stagesrepo.EdgeRecord(stageSig(0), ""), stagesrepo.EdgeRecord(stageSig(2), ""),
		stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "main", stageSig(0)), stagesrepo.PublicationRecord(stagesrepo.PublishedCommit, repo, sha(48), stageSig(0))} {
		if !records[r] {
			t.Errorf("the record %s was deleted", r)
		}
	}
	if records[stagesrepo.EdgeRecord(stageSig(1), stageSig(0))] {
		t.Error("the deleted stage's edge record stays")
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
			stagesrepo.AnnotationCommit: fmt.Sprintf("%040x", len(b)), stagesrepo.AnnotationCommitTime: now.Format(time.RFC3339),
			stagesrepo.AnnotationRef: b, stagesrepo.AnnotationRefKind: "branch",
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
			Name: "cleanup", Stage: "cleanup", PipelineSource: "schedule", Project: project, Registry: h.Registry, APIURL: api.APIURL(),
			Variables: append([]coordinator.Variable{
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
			stagesrepo.AnnotationCommit: fmt.Sprintf("%040x", len(b)), stagesrepo.AnnotationCommitTime: time.Now().UTC().Format(time.RFC3339),
			stagesrepo.AnnotationRef: b, stagesrepo.AnnotationRefKind: "branch",
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

// TestCleanupFallsBackToTheRegistryWhenTheTokenMayNotDelete: a token that
// may read but not delete (403) leaves deleting to the registry's own API
// with the job's login, one tag at a time: the gone branch's tag goes, and
// the commit tag of the same image stays, runnable.
func TestCleanupFallsBackToTheRegistryWhenTheTokenMayNotDelete(t *testing.T) {
	project := fmt.Sprintf("stagehand/fallback-%d", time.Now().UnixNano())
	repo := h.Registry + "/" + project
	pub := newPublisher(t)
	commit := fmt.Sprintf("%040x", 0xfa11)
	img := pub.image("commit fa11", map[string]string{
		stagesrepo.AnnotationCommit: commit, stagesrepo.AnnotationCommitTime: time.Now().UTC().Format(time.RFC3339),
		stagesrepo.AnnotationRef: "gone", stagesrepo.AnnotationRefKind: "branch",
	})
	stagesRef, err := name.NewRepository(repo + "/stages")
	if err != nil {
		t.Fatal(err)
	}
	final := fmt.Sprintf("%056x", 0xfa11)
	for _, r := range []string{stagesrepo.EdgeRecord(final, ""),
		stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "gone", final), stagesrepo.PublicationRecord(stagesrepo.PublishedCommit, repo, commit, final)} {
		if err := stages.WriteRecord(context.Background(), stagesRef, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	pub.put(repo+":gone", img)
	pub.put(repo+":"+commit, img)
	api := gitlabapi.New(gitlabapi.Project{ID: 1, Path: project, Branches: []string{"main"}, Commits: map[string]time.Time{commit: time.Now()}}, h.Registry, "glpat-fallback")
	defer api.Close()
	_, trace := mustCLI(t, []string{"STAGEHAND_CLEANUP_TOKEN=" + api.ReadOnlyToken, "DOCKER_CONFIG=" + t.TempDir()},
		"cleanup", "--api-url", api.APIURL(), "--project", project, "--stages-storage", repo+"/stages", "--kubeconfig", h.Kubeconfig)
	if !strings.Contains(trace, "Deleted "+repo+":gone (branch gone is gone)") {
		t.Errorf("the trace lacks the deletion:\n%s", trace)
	}
	if d := api.Deleted(); len(d) != 0 {
		t.Errorf("the API deleted %v with a read-only token", d)
	}
	var list struct{ Tags []string }
	registryGet(t, "/v2/"+project+"/tags/list", &list)
	if fmt.Sprint(list.Tags) != fmt.Sprint([]string{commit}) {
		t.Fatalf("tags left %v, want only the commit's", list.Tags)
	}
	if out := dockerCLI(t, h.Engines[0].Host, "run", "--rm", "--network", "none", repo+":"+commit); strings.TrimSpace(out) != "commit fa11" {
		t.Errorf("docker run of the commit tag printed %q", out)
	}
}
