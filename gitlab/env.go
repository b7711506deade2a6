package gitlab

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/template"
)

// Names of the variables stagehand derives. They are part of the public
// interface: jobs read them, and a job variable of the same name overrides
// the derived value.
const (
	VarDockerConfig                = "DOCKER_CONFIG"
	VarStagesStorage               = "STAGEHAND_STAGES_STORAGE"
	VarImagesRepo                  = "STAGEHAND_IMAGES_REPO"
	VarTagStrategy                 = "STAGEHAND_TAG_STRATEGY"
	VarTagGitTag                   = "STAGEHAND_TAG_GIT_TAG"
	VarTagGitBranch                = "STAGEHAND_TAG_GIT_BRANCH"
	VarEnv                         = "STAGEHAND_ENV"
	VarNamespace                   = "STAGEHAND_NAMESPACE"
	VarRelease                     = "STAGEHAND_RELEASE"
	VarAnnotations                 = "STAGEHAND_ANNOTATIONS"
	VarGitTagStrategyLimit         = "STAGEHAND_GIT_TAG_STRATEGY_LIMIT"
	VarGitTagStrategyExpiryDays    = "STAGEHAND_GIT_TAG_STRATEGY_EXPIRY_DAYS"
	VarGitCommitStrategyLimit      = "STAGEHAND_GIT_COMMIT_STRATEGY_LIMIT"
	VarGitCommitStrategyExpiryDays = "STAGEHAND_GIT_COMMIT_STRATEGY_EXPIRY_DAYS"
	VarStagesSignatureLimit        = "STAGEHAND_STAGES_SIGNATURE_STRATEGY_LIMIT"
	VarStagesSignatureExpiryDays   = "STAGEHAND_STAGES_SIGNATURE_STRATEGY_EXPIRY_DAYS"
	VarAppNamespace                = "APP_NAMESPACE"
	// VarKubeNamespace is GitLab's environment:kubernetes:namespace (and
	// the legacy cluster integration's).
	VarKubeNamespace = "KUBE_NAMESPACE"
)

// Tag strategies: how published images are tagged.
const (
	TagStagesSignature = "stages-signature"
	TagOrBranch        = "tag-or-branch"
)

// Annotation keys put on every deployed resource.
const (
	AnnotationGit         = "project.stagehand.io/git"
	AnnotationCommit      = "ci.stagehand.io/commit"
	AnnotationPipelineURL = "gitlab.ci.stagehand.io/pipeline-url"
	AnnotationJobURL      = "gitlab.ci.stagehand.io/job-url"
)

// Policy is one cleanup policy: keep at most Limit images, none older than
// ExpiryDays days; -1 means no bound.
type Policy struct {
	Limit      int
	ExpiryDays int
}

// Policies are the cleanup policies of a project's images, by what the
// image was published for.
type Policies struct {
	GitTag, GitCommit, StagesSignature Policy
}

// DefaultPolicies are werf 1.1's.
var DefaultPolicies = Policies{
	GitTag:          Policy{Limit: 10, ExpiryDays: 30},
	GitCommit:       Policy{Limit: 50, ExpiryDays: 30},
	StagesSignature: Policy{Limit: -1, ExpiryDays: -1},
}

// Annotation is one Kubernetes annotation.
type Annotation struct {
	Key, Value string
}

// Env is the CI environment stagehand derives for a job.
type Env struct {
	DockerConfig  string
	StagesStorage string
	ImagesRepo    string
	TagStrategy   string
	// TagGitTag and TagGitBranch are the slugged tag or branch the
	// tag-or-branch strategy publishes under; only one is set.
	TagGitTag    string
	TagGitBranch string
	// Environment is CI_ENVIRONMENT_SLUG; Namespace and Release are empty
	// when the job has no environment and no override.
	Environment string
	Namespace   string
	Release     string
	// NamespaceFrom names the variable that set Namespace over the
	// derived name (DerivedNamespace): KUBE_NAMESPACE, APP_NAMESPACE or
	// STAGEHAND_NAMESPACE, the last given winning; "" when derived. The
	// runner's policy decides whether a job may do so.
	NamespaceFrom    string
	DerivedNamespace string
	Annotations      []Annotation

	Policies Policies
}

// Input is what DeriveEnv reads: the job's variables (CI_* and overrides),
// the per-job docker config directory, and what the project's config says
// of its names.
type Input struct {
	Vars         map[string]string
	DockerConfig string
	// Naming, when set, is the project's werf.yaml (or stagehand.yaml)
	// project: and deploy: — werf's names. Without it the project is the
	// GitLab project's name.
	Naming *Naming
}

// Naming is what a project's config says of its environments' names, as
// werf 1.1 read werf.yaml: the project, and deploy:'s templates of the
// namespace and release ("[[ project ]]-[[ env ]]" by default) and
// whether werf's slug applies to them (by default it does).
type Naming struct {
	Project                    string
	Namespace, Release         string
	NamespaceSlug, ReleaseSlug bool
	// File names the config in errors.
	File string
}

// DefaultNameTemplate is werf's namespace and release template.
const DefaultNameTemplate = "[[ project ]]-[[ env ]]"

// VarError says which variable is missing or malformed.
type VarError struct {
	Name   string
	Reason string
}

func (e *VarError) Error() string { return fmt.Sprintf("variable %s: %s", e.Name, e.Reason) }

// DeriveEnv computes the job's CI environment from its variables.
func DeriveEnv(in Input) (Env, error) {
	d := deriver{vars: in.Vars}
	project := d.required("CI_PROJECT_NAME")
	projectURL := d.httpURL("CI_PROJECT_URL")
	commit := d.commitSHA("CI_COMMIT_SHA")
	pipelineID := d.positiveInt("CI_PIPELINE_ID")
	jobID := d.positiveInt("CI_JOB_ID")
	if d.err != nil {
		return Env{}, d.err
	}

	env := Env{DockerConfig: d.override(VarDockerConfig, in.DockerConfig)}

	registryImage := strings.TrimSuffix(in.Vars["CI_REGISTRY_IMAGE"], "/")
	if registryImage != "" {
		env.StagesStorage = registryImage + "/stages"
		env.ImagesRepo = registryImage
	}
	env.StagesStorage = d.override(VarStagesStorage, env.StagesStorage)
	env.ImagesRepo = d.override(VarImagesRepo, env.ImagesRepo)

	env.TagStrategy = d.override(VarTagStrategy, TagStagesSignature)
	switch env.TagStrategy {
	case TagStagesSignature:
	case TagOrBranch:
		if tag := in.Vars["CI_COMMIT_TAG"]; tag != "" {
			env.TagGitTag = DockerTag(tag)
		} else {
			env.TagGitBranch = DockerTag(d.required("CI_COMMIT_REF_NAME"))
		}
		env.TagGitTag = d.override(VarTagGitTag, env.TagGitTag)
		env.TagGitBranch = d.override(VarTagGitBranch, env.TagGitBranch)
	default:
		d.fail(VarTagStrategy, fmt.Sprintf("%q is not a tag strategy; use %s or %s", env.TagStrategy, TagStagesSignature, TagOrBranch))
	}

	env.Environment = d.override(VarEnv, in.Vars["CI_ENVIRONMENT_SLUG"])
	if env.Environment != "" {
		env.Namespace, env.Release = d.names(in.Naming, project, env.Environment)
	}
	env.DerivedNamespace = env.Namespace
	for _, v := range []string{VarKubeNamespace, VarAppNamespace, VarNamespace} {
		if d.vars[v] != "" {
			env.Namespace, env.NamespaceFrom = d.namespace(v, env.Namespace), v
		}
	}
	env.Release = d.release(VarRelease, env.Release)

	pipelineURL := in.Vars["CI_PIPELINE_URL"]
	if pipelineURL == "" {
		pipelineURL = fmt.Sprintf("%s/-/pipelines/%d", projectURL, pipelineID)
	}
	jobURL := in.Vars["CI_JOB_URL"]
	if jobURL == "" {
		jobURL = fmt.Sprintf("%s/-/jobs/%d", projectURL, jobID)
	}
	env.Annotations = []Annotation{
		{AnnotationGit, projectURL},
		{AnnotationCommit, commit},
		{AnnotationPipelineURL, pipelineURL},
		{AnnotationJobURL, jobURL},
	}
	if v, ok := in.Vars[VarAnnotations]; ok {
		a, err := ParseAnnotations(v)
		if err != nil {
			d.fail(VarAnnotations, err.Error())
		}
		env.Annotations = a
	}

	env.Policies = Policies{
		GitTag:          d.policy(VarGitTagStrategyLimit, VarGitTagStrategyExpiryDays, DefaultPolicies.GitTag),
		GitCommit:       d.policy(VarGitCommitStrategyLimit, VarGitCommitStrategyExpiryDays, DefaultPolicies.GitCommit),
		StagesSignature: d.policy(VarStagesSignatureLimit, VarStagesSignatureExpiryDays, DefaultPolicies.StagesSignature),
	}

	if d.err != nil {
		return Env{}, d.err
	}
	return env, nil
}

// names are an environment's namespace and release: werf's, from the
// project's config when it has one (its project:, deploy: templates and
// slugs), else <GitLab project name>-<env> through werf's slugs.
func (d *deriver) names(n *Naming, gitlabProject, env string) (namespace, release string) {
	if n == nil {
		name := gitlabProject + "-" + env
		namespace = KubernetesNamespace(name)
		// A GitLab project's name may hold dots, which werf's project:
		// could not: a namespace is a DNS label.
		if !IsDNS1123Label(namespace) {
			namespace = slugWithHash(name, NamespaceSlugLimit)
		}
		return namespace, HelmRelease(name)
	}
	render := func(what, tmpl string, slug bool, fn func(string) string) string {
		if tmpl == "" {
			tmpl = DefaultNameTemplate
		}
		out, err := renderName(tmpl, n.Project, env)
		if err != nil {
			d.fail(n.File+" deploy."+what, err.Error())
			return ""
		}
		if slug {
			return fn(out)
		}
		return out
	}
	namespace = render("namespace", n.Namespace, n.NamespaceSlug, KubernetesNamespace)
	release = render("helmRelease", n.Release, n.ReleaseSlug, HelmRelease)
	if namespace != "" && !IsDNS1123Label(namespace) {
		d.fail(n.File+" deploy.namespace", fmt.Sprintf("gives %q, which is not a valid namespace name (lowercase letters, digits and '-', at most %d characters): set namespaceSlug: true or change the template", namespace, NamespaceSlugLimit))
	}
	if release != "" && (len(release) > ReleaseSlugLimit || !isDNS1123Subdomain(release)) {
		d.fail(n.File+" deploy.helmRelease", fmt.Sprintf("gives %q, which is not a valid Helm release name: set helmReleaseSlug: true or change the template", release))
	}
	return namespace, release
}

// renderName renders a deploy: template as werf 1.1 did: [[ project ]]
// and [[ env ]] between [[ ]] delimiters.
func renderName(tmpl, project, env string) (string, error) {
	t, err := template.New("name").Delims("[[", "]]").Funcs(template.FuncMap{
		"project": func() string { return project },
		"env":     func() string { return env },
	}).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("template %q: %v", tmpl, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("template %q: %v", tmpl, err)
	}
	return strings.TrimSpace(b.String()), nil
}

// deriver reads variables and keeps the first error, so DeriveEnv reads
// as a list of rules.
type deriver struct {
	vars map[string]string
	err  error
}

func (d *deriver) fail(name, reason string) {
	if d.err == nil {
		d.err = &VarError{Name: name, Reason: reason}
	}
}

func (d *deriver) required(name string) string {
	v := d.vars[name]
	if v == "" {
		d.fail(name, "is missing; GitLab sets it for every job, so the runner is not passing the job's variables")
	}
	return v
}

func (d *deriver) httpURL(name string) string {
	v := d.required(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		d.fail(name, fmt.Sprintf("%q is not an http(s) URL", v))
		return ""
	}
	return strings.TrimSuffix(v, "/")
}

func (d *deriver) commitSHA(name string) string {
	v := d.required(name)
	if v == "" {
		return ""
	}
	if (len(v) != 40 && len(v) != 64) || strings.Trim(v, "0123456789abcdef") != "" {
		d.fail(name, fmt.Sprintf("%q is not a full lowercase hex commit SHA (40 or 64 digits)", v))
		return ""
	}
	return v
}

func (d *deriver) positiveInt(name string) int64 {
	v := d.required(name)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		d.fail(name, fmt.Sprintf("%q is not a positive integer", v))
		return 0
	}
	return n
}

// override returns the job's variable name when it is set and not empty,
// else def.
func (d *deriver) override(name, def string) string {
	if v := d.vars[name]; v != "" {
		return v
	}
	return def
}

func (d *deriver) namespace(name, def string) string {
	v := d.override(name, def)
	if v != def && !IsDNS1123Label(v) {
		d.fail(name, fmt.Sprintf("%q is not a valid namespace name (lowercase letters, digits and '-', at most %d characters, starting and ending with a letter or digit)", v, NamespaceSlugLimit))
	}
	return v
}

func (d *deriver) release(name, def string) string {
	v := d.override(name, def)
	if v != def && (len(v) > ReleaseSlugLimit || !IsDNS1123Label(v)) {
		d.fail(name, fmt.Sprintf("%q is not a valid Helm release name (lowercase letters, digits and '-', at most %d characters)", v, ReleaseSlugLimit))
	}
	return v
}

func (d *deriver) policy(limitName, expiryName string, def Policy) Policy {
	return Policy{
		Limit:      d.policyValue(limitName, def.Limit),
		ExpiryDays: d.policyValue(expiryName, def.ExpiryDays),
	}
}

func (d *deriver) policyValue(name string, def int) int {
	v := d.vars[name]
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1 {
		d.fail(name, fmt.Sprintf("%q is not a number of at least -1 (-1 means no bound)", v))
		return def
	}
	return n
}

// FormatAnnotations writes annotations as comma-separated key=value pairs;
// commas inside values are written as %2C (and '%' as %25) so that
// ParseAnnotations gives them back.
func FormatAnnotations(as []Annotation) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.Key + "=" + escapeAnnotation(a.Value)
	}
	return strings.Join(parts, ",")
}

var annotationEscaper = strings.NewReplacer("%", "%25", ",", "%2C")

func escapeAnnotation(s string) string { return annotationEscaper.Replace(s) }

// ParseAnnotations reads what FormatAnnotations wrote.
func ParseAnnotations(s string) ([]Annotation, error) {
	if s == "" {
		return nil, nil
	}
	var as []Annotation
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", part)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("value of %s: %w", k, err)
		}
		as = append(as, Annotation{Key: k, Value: val})
	}
	return as, nil
}

// Var is one exported variable.
type Var struct {
	Name, Value string
}

// Vars lists the environment as variables in a fixed order, leaving out
// the empty ones.
func (e Env) Vars() []Var {
	all := []Var{
		{VarDockerConfig, e.DockerConfig},
		{VarStagesStorage, e.StagesStorage},
		{VarImagesRepo, e.ImagesRepo},
		{VarTagStrategy, e.TagStrategy},
		{VarTagGitTag, e.TagGitTag},
		{VarTagGitBranch, e.TagGitBranch},
		{VarEnv, e.Environment},
		{VarNamespace, e.Namespace},
		{VarRelease, e.Release},
		{VarAnnotations, FormatAnnotations(e.Annotations)},
		{VarGitTagStrategyLimit, strconv.Itoa(e.Policies.GitTag.Limit)},
		{VarGitTagStrategyExpiryDays, strconv.Itoa(e.Policies.GitTag.ExpiryDays)},
		{VarGitCommitStrategyLimit, strconv.Itoa(e.Policies.GitCommit.Limit)},
		{VarGitCommitStrategyExpiryDays, strconv.Itoa(e.Policies.GitCommit.ExpiryDays)},
		{VarStagesSignatureLimit, strconv.Itoa(e.Policies.StagesSignature.Limit)},
		{VarStagesSignatureExpiryDays, strconv.Itoa(e.Policies.StagesSignature.ExpiryDays)},
	}
	out := all[:0]
	for _, v := range all {
		if v.Value != "" {
			out = append(out, v)
		}
	}
	return out
}

// FormatExports writes vars as POSIX shell `export NAME='value'` lines.
func FormatExports(vars []Var) string {
	var b strings.Builder
	for _, v := range vars {
		fmt.Fprintf(&b, "export %s='%s'\n", v.Name, strings.ReplaceAll(v.Value, "'", `'\''`))
	}
	return b.String()
}

// EnvironmentNames are the namespace and release a job of environment env
// (its slug) gets (see DeriveEnv), for an operator's command.
func EnvironmentNames(n *Naming, gitlabProject, env string) (namespace, release string, err error) {
	d := deriver{vars: map[string]string{}}
	namespace, release = d.names(n, gitlabProject, env)
	return namespace, release, d.err
}
