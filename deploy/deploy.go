package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/internal/kubeconfig"
	"gitlab.com/stagehand/stagehand/request"
)

// ManagedLabel marks the namespaces stagehand created.
const ManagedLabel = "app.kubernetes.io/managed-by"

// PullSecretName is the image pull secret stagehand keeps in every
// environment namespace.
const PullSecretName = "stagehand-registry"

// Cluster is the API server as a deploy uses it.
type Cluster struct {
	rest    *rest.Config
	client  kubernetes.Interface
	path    string
	context string
}

// Connect opens the cluster and checks that it answers. An unreachable
// API server is the machinery's fault.
func Connect(ctx context.Context, cl request.Cluster) (*Cluster, error) {
	rc, err := kubeconfig.RESTConfig(cl.Kubeconfig, cl.Context)
	if err != nil {
		return nil, fault.Job(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if _, err := client.Discovery().ServerVersion(); err != nil {
		return nil, fault.System(fmt.Errorf("the Kubernetes API server at %s is unreachable: %w", rc.Host, err))
	}
	return &Cluster{rest: rc, client: client, path: cl.Kubeconfig, context: cl.Context}, nil
}

// apiError says whose fault a refused call is: RBAC refusals and invalid
// objects are the job's (its namespace, its chart), the rest the
// machinery's.
func apiError(err error, format string, args ...any) error {
	wrapped := fmt.Errorf(format+": %w", append(args, err)...)
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsUnauthorized(err) {
		return fault.Job(wrapped)
	}
	return fault.System(wrapped)
}

// ensurePullSecret writes the registry secret into the namespace.
func (c *Cluster) ensurePullSecret(ctx context.Context, ns string, o request.PullSecret) (bool, error) {
	var data map[string][]byte
	switch {
	case o.User != "" && o.Password != "" && o.Registry != "":
		auth := base64.StdEncoding.EncodeToString([]byte(o.User + ":" + o.Password))
		cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{o.Registry: map[string]string{"username": o.User, "password": o.Password, "auth": auth}}})
		data = map[string][]byte{corev1.DockerConfigJsonKey: cfg}
	case o.From != "":
		srcNS, name, ok := strings.Cut(o.From, "/")
		if !ok {
			return false, fault.Jobf("pull secret source %q: give namespace/name", o.From)
		}
		src, err := c.client.CoreV1().Secrets(srcNS).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil // nothing to copy: public images or the nodes' own credentials
		}
		if err != nil {
			return false, apiError(err, "read the pull secret %s", o.From)
		}
		if src.Type != corev1.SecretTypeDockerConfigJson {
			return false, fault.Jobf("secret %s is of type %s, not %s", o.From, src.Type, corev1.SecretTypeDockerConfigJson)
		}
		data = src.Data
	default:
		return false, nil
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: PullSecretName, Namespace: ns, Labels: map[string]string{ManagedLabel: "stagehand"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       data,
	}
	secrets := c.client.CoreV1().Secrets(ns)
	if _, err := secrets.Create(ctx, secret, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		if _, err := secrets.Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
			return false, apiError(err, "update secret %s/%s", ns, PullSecretName)
		}
	} else if err != nil {
		return false, apiError(err, "create secret %s/%s", ns, PullSecretName)
	}
	return true, nil
}

// referencePullSecret adds the pull secret to every service account of
// the namespace (and creates "default" when the controller has not yet).
func (c *Cluster) referencePullSecret(ctx context.Context, ns string) error {
	sas := c.client.CoreV1().ServiceAccounts(ns)
	list, err := sas.List(ctx, metav1.ListOptions{})
	if err != nil {
		return apiError(err, "list service accounts of %s", ns)
	}
	items := list.Items
	hasDefault := false
	for _, sa := range items {
		hasDefault = hasDefault || sa.Name == "default"
	}
	if !hasDefault {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
		created, err := sas.Create(ctx, sa, metav1.CreateOptions{})
		if err == nil {
			items = append(items, *created)
		} else if !apierrors.IsAlreadyExists(err) {
			return apiError(err, "create service account %s/default", ns)
		} else if got, err := sas.Get(ctx, "default", metav1.GetOptions{}); err == nil {
			items = append(items, *got)
		}
	}
	for i := range items {
		sa := &items[i]
		has := false
		for _, r := range sa.ImagePullSecrets {
			has = has || r.Name == PullSecretName
		}
		if has {
			continue
		}
		sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: PullSecretName})
		if _, err := sas.Update(ctx, sa, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return apiError(err, "reference the pull secret from service account %s/%s", ns, sa.Name)
		}
	}
	return nil
}

// helm is Helm's action configuration for the namespace.
func (c *Cluster) helm(ns string, trace io.Writer) (*action.Configuration, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.Namespace = &ns
	if c.path != "" {
		flags.KubeConfig = &c.path
	}
	if c.context != "" {
		flags.Context = &c.context
	}
	flags.WrapConfigFn = func(rc *rest.Config) *rest.Config {
		rc.QPS, rc.Burst, rc.Timeout = c.rest.QPS, c.rest.Burst, c.rest.Timeout
		return rc
	}
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, ns, "secret", func(string, ...any) {}); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// Label of the release's values that records what was deployed, so that
// a deploy of the same chart, values and images changes nothing.
const inputsKey = "stagehandInputs"

// inputsDigest hashes what decides a release's objects.
func inputsDigest(ch *chart.Chart, vals map[string]any) string {
	h := sha256.New()
	files := append(append([]*chart.File{}, ch.Templates...), ch.Raw...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.Name, len(f.Data))
		h.Write(f.Data)
	}
	b, _ := json.Marshal(vals) // map keys are sorted
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// Built is what the deploy's build gave: the images published and
// werf.yaml's project.
type Built struct {
	Images  []request.Image
	Project string
}

// releaseInput is a release's chart and values, as a deploy installs them
// and a render prints them.
type releaseInput struct {
	chartDir string
	chart    *chart.Chart
	values   map[string]any
	secrets  chartSecrets
}

// prepare loads the deploy's chart with werf 1.1's chart API and its
// secrets decrypted, and computes its values.
func prepare(req request.Deploy, built Built, trace io.Writer) (releaseInput, error) {
	env := req.Environment
	chartDir, err := ChartDir(req)
	if err != nil {
		return releaseInput{}, fault.Job(err)
	}
	ch, err := loader.Load(chartDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return releaseInput{}, fault.Jobf("no Helm chart at %s: put it in .helm/ of the repository (or set STAGEHAND_CHART_DIR)", chartDir)
		}
		return releaseInput{}, fault.Jobf("load the chart %s: %w", chartDir, err)
	}
	if ch, err = withDependencies(ch, chartDir, req.Build.Engine.DockerConfig, ChartCacheDir(), trace); err != nil {
		return releaseInput{}, err
	}
	secrets, err := readSecrets(chartDir, req.Build.Dir, req.Build.Vars)
	if err != nil {
		return releaseInput{}, err
	}
	if secrets.Values != nil || len(secrets.Files) > 0 {
		fmt.Fprintf(trace, "Decrypted the chart's secrets (%s; %d files of %s/)\n", secretValuesNote(secrets), len(secrets.Files), SecretDir)
	}
	withWerfAPI(ch, secrets.Files)
	in := ValuesInput{Env: env.Name, CIURL: env.URL, Namespace: env.Namespace, Images: built.Images, Sets: req.Sets, Secret: secrets.Values,
		Werf: &WerfInput{Project: built.Project, Repo: req.Build.ImagesRepo, TagStrategy: req.Build.TagStrategy, Ref: req.Build.Ref, RefSlug: req.Build.RefSlug}}
	extra, err := EnvValuesFile(chartDir, env.Name)
	if err != nil {
		return releaseInput{}, fault.Jobf("read values-%s.yaml: %w", env.Name, err)
	}
	if extra != nil {
		in.Files = append(in.Files, extra)
		fmt.Fprintf(trace, "Using values-%s.yaml\n", env.Name)
	}
	vals, err := Values(in)
	if err != nil {
		return releaseInput{}, fault.Job(err)
	}
	return releaseInput{chartDir: chartDir, chart: ch, values: vals, secrets: secrets}, nil
}

func secretValuesNote(s chartSecrets) string {
	if s.Values == nil {
		return "no " + SecretValuesFile
	}
	return SecretValuesFile
}

// Deployed is what a deploy found out: the environment's URL, from its
// Ingress ("" when it has none).
type Deployed struct {
	URL string
}

// Deploy upgrades (or installs) the environment's release and follows its
// workloads until they are ready. No decrypted secret reaches its errors.
func Deploy(ctx context.Context, req request.Deploy, built Built, trace io.Writer) (Deployed, error) {
	start := time.Now()
	c, err := Connect(ctx, req.Cluster)
	if err != nil {
		return Deployed{}, err
	}
	in, err := prepare(req, built, trace)
	if err != nil {
		return Deployed{}, err
	}
	rel, err := c.deploy(ctx, req, in, start, trace)
	if err != nil {
		return Deployed{}, in.secrets.scrub(err)
	}
	d := Deployed{URL: EnvironmentURL(rel.Manifest)}
	if d.URL != "" {
		fmt.Fprintf(trace, "Environment URL: %s (DYNAMIC_ENVIRONMENT_URL)\n", d.URL)
	}
	return d, nil
}

func (c *Cluster) deploy(ctx context.Context, req request.Deploy, in releaseInput, start time.Time, trace io.Writer) (*release.Release, error) {
	env := req.Environment
	ch, vals := in.chart, in.values
	annotations := releaseAnnotations(req)
	digest := inputsDigest(ch, vals)
	if err := checkProtected(env.Namespace, req.Protected); err != nil {
		return nil, err
	}
	if err := c.ensureNamespace(ctx, env.Namespace, req.Owner, req.Timeout, trace); err != nil {
		return nil, err
	}
	if made, err := c.ensurePullSecret(ctx, env.Namespace, req.PullSecret); err != nil {
		return nil, err
	} else if made {
		fmt.Fprintf(trace, "Pull secret %s/%s is in place\n", env.Namespace, PullSecretName)
	}
	if err := c.referencePullSecret(ctx, env.Namespace); err != nil {
		return nil, err
	}
	ctx, unlock, locked, err := holdRelease(ctx, req.Build.Locks, env.Namespace, env.Release, trace)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cfg, err := c.helm(env.Namespace, trace)
	if err != nil {
		return nil, fault.System(err)
	}

	last, err := lastRelease(cfg, env.Release)
	if err != nil {
		return nil, err
	}
	if last, err = recoverPending(cfg, env.Release, last, locked, req.Timeout, trace); err != nil {
		return nil, err
	}
	var rel *release.Release
	switch {
	case last != nil && last.Info.Status == release.StatusDeployed && last.Config[inputsKey] == digest:
		fmt.Fprintf(trace, "Release %s (revision %d) already has this chart, these values and images: nothing to change\n", env.Release, last.Version)
		rel = last
	case last == nil:
		install := action.NewInstall(cfg)
		install.ReleaseName, install.Namespace = env.Release, env.Namespace
		install.Timeout, install.PostRenderer = req.Timeout, annotator{annotations}
		fmt.Fprintf(trace, "Installing release %s into namespace %s\n", env.Release, env.Namespace)
		rel, err = install.RunWithContext(ctx, ch, withInputs(vals, digest))
	default:
		upgrade := action.NewUpgrade(cfg)
		upgrade.Namespace, upgrade.Timeout, upgrade.PostRenderer = env.Namespace, req.Timeout, annotator{annotations}
		upgrade.MaxHistory = 10
		fmt.Fprintf(trace, "Upgrading release %s in namespace %s (from revision %d)\n", env.Release, env.Namespace, last.Version)
		rel, err = upgrade.RunWithContext(ctx, env.Release, ch, withInputs(vals, digest))
	}
	if err != nil {
		return nil, helmError(err, env.Release)
	}
	// Service accounts of the chart get the pull secret too.
	if err := c.referencePullSecret(ctx, env.Namespace); err != nil {
		return nil, err
	}
	if err := Track(ctx, c.client, env.Namespace, rel.Manifest, req.Timeout, trace); err != nil {
		if rb := rollBack(cfg, env, req.Timeout, last, rel); rb != "" {
			fmt.Fprintln(trace, rb)
		}
		return nil, err
	}
	fmt.Fprintf(trace, "Release %s revision %d is ready in namespace %s (%s)\n", env.Release, rel.Version, env.Namespace, time.Since(start).Round(time.Millisecond))
	return rel, nil
}

func withInputs(vals map[string]any, digest string) map[string]any {
	out := map[string]any{}
	for k, v := range vals {
		out[k] = v
	}
	out[inputsKey] = digest
	return out
}

// lastRelease is the newest revision of the release, nil when none.
func lastRelease(cfg *action.Configuration, name string) (*release.Release, error) {
	hist := action.NewHistory(cfg)
	hist.Max = 1
	rels, err := hist.Run(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fault.System(fmt.Errorf("read the history of release %s: %w", name, err))
	}
	if len(rels) == 0 {
		return nil, nil
	}
	newest := rels[0]
	for _, r := range rels {
		if r.Version > newest.Version {
			newest = r
		}
	}
	return newest, nil
}

// helmError: template and manifest errors are the chart's (the job's);
// the rest the machinery's.
func helmError(err error, rel string) error {
	msg := err.Error()
	for _, s := range []string{"parse error", "template:", "YAML parse error", "unable to build kubernetes objects", "error validating", "is invalid", "forbidden", "chart requires"} {
		if strings.Contains(msg, s) {
			return fault.Jobf("release %s: %w", rel, err)
		}
	}
	return fault.System(fmt.Errorf("release %s: %w", rel, err))
}

// rollBack undoes a release whose workloads did not become ready: back to
// the previous deployed revision, or, for a first install, uninstalled.
func rollBack(cfg *action.Configuration, env request.Environment, timeout time.Duration, last, rel *release.Release) string {
	if last != nil && rel.Version == last.Version {
		return "" // nothing was changed
	}
	if last != nil && last.Info.Status == release.StatusDeployed {
		rb := action.NewRollback(cfg)
		rb.Version, rb.Timeout = last.Version, timeout
		if err := rb.Run(env.Release); err != nil {
			return fmt.Sprintf("Rolling back release %s to revision %d failed: %v", env.Release, last.Version, err)
		}
		return fmt.Sprintf("Rolled release %s back to revision %d", env.Release, last.Version)
	}
	return fmt.Sprintf("Release %s revision %d is left as it is for inspection (helm history %s -n %s)", env.Release, rel.Version, env.Release, env.Namespace)
}

// ChartDir is the deploy's chart: STAGEHAND_CHART_DIR or werf.yaml's
// deploy: helmChartDir (werf 1.2), else .helm, within the checkout: a job
// may not load a chart from elsewhere on the runner host.
func ChartDir(req request.Deploy) (string, error) {
	if req.ChartDir == "" {
		return DefaultChartDir(req.Build.Dir), nil
	}
	clean := filepath.Clean(req.ChartDir)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("the chart directory %q must be a path within the repository (STAGEHAND_CHART_DIR or werf.yaml's deploy: helmChartDir)", req.ChartDir)
	}
	return filepath.Join(req.Build.Dir, clean), nil
}

// DefaultChartDir is the chart within the project.
func DefaultChartDir(projectDir string) string { return filepath.Join(projectDir, ".helm") }

// releaseAnnotations are the annotations every object of the release
// gets (STAGEHAND_ANNOTATIONS).
func releaseAnnotations(req request.Deploy) map[string]string {
	out := map[string]string{}
	for _, a := range req.Annotations {
		out[a.Key] = a.Value
	}
	return out
}

// Render answers the manifests a deploy of req would apply (hooks
// included, with the release's annotations), without a cluster: Helm's
// client-only install of the same chart and values.
func Render(req request.Deploy, built Built, trace io.Writer) (string, error) {
	in, err := prepare(req, built, trace)
	if err != nil {
		return "", err
	}
	env := req.Environment
	annotations := releaseAnnotations(req)
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace = env.Release, env.Namespace
	install.DryRun, install.ClientOnly, install.Replace, install.IncludeCRDs = true, true, true, true
	install.PostRenderer = annotator{annotations}
	rel, err := install.Run(in.chart, in.values)
	if err != nil {
		return "", in.secrets.scrub(helmError(err, env.Release))
	}
	var out strings.Builder
	out.WriteString(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return out.String(), nil
}
