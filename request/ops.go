package request

import (
	"fmt"
	"strings"
	"time"

	"gitlab.com/stagehand/stagehand/gitlab"
)

// Build is one build of a project's images at one commit, and their
// publication (a build job; the first half of a deploy; `stagehand
// build`).
type Build struct {
	// Dir is the project's checkout.
	Dir string
	// Vars are the variables the config's templates see (a job's: they
	// hold secrets, and travel on the worker's pipe only).
	Vars map[string]string
	// Project is the project's name in locks, labels and the :local
	// storage (see ProjectName).
	Project string
	// StagesStorage is a repository ($CI_REGISTRY_IMAGE/stages) or :local.
	StagesStorage string
	// ImagesRepo is where images are published ($CI_REGISTRY_IMAGE).
	ImagesRepo string
	Commit     string
	// CommitTime is the commit's time (RFC 3339), the images' age for
	// cleanup.
	CommitTime string
	// Ref is the ref being built (its names go into annotations); RefSlug
	// is the tag-or-branch strategy's tag for it.
	Ref     Ref
	RefSlug string
	// TagStrategy is gitlab.TagStagesSignature or gitlab.TagOrBranch.
	TagStrategy string
	Engine      Engine
	Locks       Locks
	// BlockDir holds switch-from-local block files.
	BlockDir string
	// Mounts are where the config's mount: directories may come from.
	Mounts Mounts
	// Debug shows the engine's own output (STAGEHAND_LOG_LEVEL=debug).
	Debug bool
	// Sections puts each stage's output in a collapsed section of the
	// GitLab job log (jobs; a shell's output has no sections).
	Sections bool
}

// Op names the operation in the worker protocol.
func (Build) Op() string { return "build" }

// Mounts are the runner's host directories of builds: werf's mount:
// directories and the copies of remote repositories.
type Mounts struct {
	// Dir holds the build_dir directories, one per project and target,
	// kept between builds.
	Dir string
	// AllowedPaths are the host paths (and what is below them) a
	// fromPath mount may bind; none by default.
	AllowedPaths []string
	// GitCache holds the copies of remote repositories (git: url:), one
	// per project and URL.
	GitCache string
}

// Image is one image a build published.
type Image struct {
	// Name is the image's name in the config; "" for the unnamed image.
	Name       string
	Repository string
	// Tag is the tag jobs use (the strategy's); Digest is the manifest's;
	// ID is the image's ID (its config's digest, werf's docker_image_id).
	Tag    string
	Digest string
	ID     string `json:",omitempty"`
}

// Reference is repository:tag.
func (i Image) Reference() string { return i.Repository + ":" + i.Tag }

// BuildResult is what a build published, and for a deploy the
// environment's URL it found (its Ingress's host).
type BuildResult struct {
	Images         []Image
	EnvironmentURL string `json:",omitempty"`
}

// Exports are the variables a job's script gets: STAGEHAND_IMAGE_<NAME>
// (the reference) and STAGEHAND_IMAGE_<NAME>_DIGEST.
func (r BuildResult) Exports() map[string]string {
	out := map[string]string{}
	for _, img := range r.Images {
		v := ExportName(img.Name)
		out[v] = img.Reference()
		out[v+"_DIGEST"] = img.Digest
	}
	if r.EnvironmentURL != "" {
		// GitLab's name: `environment: url: $DYNAMIC_ENVIRONMENT_URL`
		// with the deploy's dotenv report.
		out["DYNAMIC_ENVIRONMENT_URL"] = r.EnvironmentURL
	}
	return out
}

// ExportName is the variable holding an image's reference: the name
// upper-cased with every other character than A-Z and 0-9 made "_";
// STAGEHAND_IMAGE for the unnamed image.
func ExportName(image string) string {
	if image == "" {
		return "STAGEHAND_IMAGE"
	}
	b := []byte(strings.ToUpper(image))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "STAGEHAND_IMAGE_" + string(b)
}

// Environment is a GitLab environment as a deploy names it.
type Environment struct {
	// Name is STAGEHAND_ENV (CI_ENVIRONMENT_SLUG): global.env.
	Name      string
	Namespace string
	Release   string
	// URL is CI_ENVIRONMENT_URL.
	URL string
}

// PullSecret is where an environment's image pull secret comes from:
// GitLab's deploy token for Registry, else a copy of From
// ("namespace/name").
type PullSecret struct {
	Registry string
	User     string
	Password string
	From     string
}

// SetPrefix marks job variables that set chart values:
// STAGEHAND_SET_<ANYTHING>=path.to.key=value, as `helm --set`.
const SetPrefix = "STAGEHAND_SET_"

// SetsFrom picks the STAGEHAND_SET_* variables.
func SetsFrom(vars map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range vars {
		if strings.HasPrefix(k, SetPrefix) {
			out[k] = v
		}
	}
	return out
}

// Deploy is one deploy of an environment: its build first, then the
// release.
type Deploy struct {
	Build       Build
	Environment Environment
	// ChartDir is the chart, relative to the checkout or absolute ("":
	// .helm).
	ChartDir string
	Cluster  Cluster
	// Sets are STAGEHAND_SET_* variables, applied in name order.
	Sets map[string]string
	// Annotations go on every object of the release.
	Annotations []gitlab.Annotation
	PullSecret  PullSecret
	// Timeout bounds the wait for the release's workloads.
	Timeout time.Duration
	// Owner is the project the deploy acts for; Protected the runner's
	// protected namespaces.
	Owner     Owner
	Protected []string
}

// Op names the operation in the worker protocol.
func (Deploy) Op() string { return "deploy" }

// Program names the program that serves deploys (it links Helm).
func (Deploy) Program() string { return DeployProgram }

// Render is a deploy that applies nothing: the build, then the release's
// manifests as the deploy would apply them (stagehand render).
type Render struct {
	Deploy Deploy
}

// Op names the operation in the worker protocol.
func (Render) Op() string { return "render" }

// Program names the program that serves renders (it links Helm).
func (Render) Program() string { return DeployProgram }

// RenderResult is a render's answer: the images built, and the manifests.
type RenderResult struct {
	BuildResult
	Manifest string
}

// Dismiss removes an environment: its release and its namespace.
type Dismiss struct {
	Cluster   Cluster
	Namespace string
	Release   string
	// Timeout bounds the wait for the namespace to go.
	Timeout time.Duration
	// Owner is the project the dismiss acts for; Protected the runner's
	// protected namespaces.
	Owner     Owner
	Protected []string
	// Locks: a dismiss takes the release's lock, as deploys do.
	Locks Locks
}

// Op names the operation in the worker protocol.
func (Dismiss) Op() string { return "dismiss" }

// Program names the program that serves dismisses (it links Helm).
func (Dismiss) Program() string { return DeployProgram }

// Cleanup is one cleanup of a project: registry images by its git
// policies, then its stages, then (Builder) a host's builder cache.
type Cleanup struct {
	// APIURL is GitLab's API (CI_API_V4_URL); Token may list and delete
	// registry tags (STAGEHAND_CLEANUP_TOKEN); Project is the project's
	// path or id.
	APIURL  string
	Token   string
	Project string
	// Locks.Project names the project lock builds take.
	Locks         Locks
	StagesStorage string
	// Cluster's workloads' images stay; Namespaces are where to look when
	// listing across namespaces is forbidden.
	Cluster    Cluster
	Namespaces []string
	// Policies are ci-env's; the project's config (Dir, rendered with
	// Vars) may override them.
	Policies gitlab.Policies
	Dir      string
	Vars     map[string]string
	DryRun   bool
	// Engine.DockerConfig holds the registry logins; Engine.Host is the
	// engine Builder cleans.
	Engine  Engine
	Builder *BuilderLimits
}

// Op names the operation in the worker protocol.
func (Cleanup) Op() string { return "cleanup" }

// Program names the program that serves cleanups: the GitLab API client
// and Kubernetes' typed client they link would cost every build's start
// in stagehand-worker some 35 ms.
func (Cleanup) Program() string { return DeployProgram }

// BuilderLimits bound a host's builder cache: the least recently stored
// stage images go while the engine data root's filesystem is fuller than
// ThresholdPercent, or, when MaxBytes is set, while they take more.
type BuilderLimits struct {
	ThresholdPercent int
	MaxBytes         int64
}

// StagesSync copies the stages one storage has and another lacks
// (`stagehand stages sync`), or moves a project off :local
// (SwitchFromLocal: block :local builds, copy, remove the local stages).
type StagesSync struct {
	From, To string
	Project  string
	Engine   Engine
	// BlockDir holds switch-from-local block files.
	BlockDir        string
	SwitchFromLocal bool
}

// Op names the operation in the worker protocol.
func (StagesSync) Op() string { return "stages-sync" }

// SyncResult counts the stages a sync copied and found present.
type SyncResult struct {
	Copied, Present int
}

// Pull policies of job images.
const (
	PullIfNotPresent = "if-not-present"
	PullAlways       = "always"
	PullNever        = "never"
)

// JobImage makes a job's image available on the engine, per the first of
// PullPolicies that succeeds (see PullPolicies), pulling with the job's
// logins.
type JobImage struct {
	Engine       Engine
	Image        string
	PullPolicies []string
}

// Op names the operation in the worker protocol.
func (JobImage) Op() string { return "job-image" }

// JobScript runs one runner stage's script in a fresh container of the
// job's image.
type JobScript struct {
	Engine Engine
	Image  string
	// JobKey names the job's containers on the host.
	JobKey string
	// Path is the runner's script, mounted at the same path; Stage its
	// runner stage (build_script, after_script, ...).
	Path  string
	Stage string
	// Env is the container's environment (it holds the job's secrets: it
	// travels on a pipe, never on a command line or in a file).
	Env []string
	// Binds are host:container[:ro] mounts.
	Binds       []string
	StopTimeout time.Duration
	// Entrypoint overrides the image's (`image: entrypoint:`; [""]
	// clears it) when OverrideEntrypoint; else the image's own runs, as
	// with the docker executor, and gets the shell command as arguments.
	Entrypoint         []string `json:",omitempty"`
	OverrideEntrypoint bool     `json:",omitempty"`
	// Network, when set, replaces the engine's network mode: the job's
	// services' namespace ("container:NAME").
	Network string `json:",omitempty"`
}

// Op names the operation in the worker protocol.
func (JobScript) Op() string { return "job-script" }

// Service is one of a job's `services:` (from GitLab's job payload).
type Service struct {
	Image string
	// Aliases are the names the job reaches it by: its `alias:`es and
	// the docker executor's names derived from the image.
	Aliases []string
	// Entrypoint overrides the image's when OverrideEntrypoint (as for
	// job images); Command replaces its CMD when not empty.
	Entrypoint         []string `json:",omitempty"`
	OverrideEntrypoint bool     `json:",omitempty"`
	Command            []string `json:",omitempty"`
	// Env is the service's environment: the job's variables and the
	// service's own (it holds secrets: it travels on a pipe only).
	Env          []string
	PullPolicies []string
}

// ServiceContainer names the container of a job's i-th service; the
// first one's network namespace is the job's.
func ServiceContainer(jobKey string, i int) string {
	return fmt.Sprintf("stagehand-%s-service-%d", jobKey, i)
}

// JobServices starts a job's services beside its containers, in one
// network namespace, and waits until each listens on its exposed ports.
type JobServices struct {
	Engine   Engine
	JobKey   string
	Services []Service
	// Timeout bounds the wait for each service's ports.
	Timeout time.Duration
}

// Op names the operation in the worker protocol.
func (JobServices) Op() string { return "job-services" }

// ServicesStarted names the container whose network namespace the job's
// containers join ("container:NAME").
type ServicesStarted struct {
	Network string
}

// ScriptResult is a script's exit status.
type ScriptResult struct {
	ExitCode int
}

// JobContainers removes every container of a job (cleanup).
type JobContainers struct {
	Engine Engine
	JobKey string
}

// Op names the operation in the worker protocol.
func (JobContainers) Op() string { return "job-containers-remove" }

// Removed counts what was removed.
type Removed struct {
	Count int
}
