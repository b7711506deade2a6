package executor

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/worker"
)

// Settings are the operator's choices for this runner host, given as flags
// of `stagehand hook` in config.toml (or STAGEHAND_* variables of the runner
// process). Jobs cannot change them.
type Settings struct {
	// BuildsRoot is where job checkouts live; each project and concurrent
	// slot gets its own directory below it.
	BuildsRoot string
	// CacheRoot is the runner's local cache directory (cache: in jobs).
	CacheRoot string
	// DockerHost is the Docker Engine for image: jobs and builds.
	DockerHost string
	// DockerNetwork is the network mode of job containers ("" = the
	// engine's default).
	DockerNetwork string
	// PullPolicy decides when a job image is pulled: if-not-present,
	// always or never.
	PullPolicy string
	// AllowedPullPolicies are the pull policies a job may ask for
	// (gitlab-runner's allowed_pull_policies); none: only PullPolicy.
	AllowedPullPolicies []string
	// ServicesTimeout bounds the wait for a service's ports
	// (gitlab-runner's wait_for_services_timeout).
	ServicesTimeout time.Duration
	// Worker is the stagehand-worker program, which does the Docker work.
	Worker string
	// StopTimeout is how long the user's script gets after SIGTERM before
	// it is killed.
	StopTimeout time.Duration
	// Synchronization is how builds on this host coordinate with other
	// hosts: ":local" (file locks here), "kubernetes://NAMESPACE" or
	// "none". Jobs may override it with STAGEHAND_SYNCHRONIZATION.
	Synchronization string
	// Kubeconfig is the cluster of kubernetes:// synchronization ("" =
	// $KUBECONFIG of the runner, else in-cluster).
	Kubeconfig string
	// LocksDir holds the file locks of :local synchronization.
	LocksDir string
	// BlockDir holds the switch-from-local block files that stop :local
	// builds of projects moved to a registry.
	BlockDir string
	// PullSecretFrom is the secret ("namespace/name") copied into
	// environment namespaces when the job has no deploy token.
	PullSecretFrom string
	// DeployTimeout bounds the wait for a release's workloads; jobs may
	// set STAGEHAND_DEPLOY_TIMEOUT.
	DeployTimeout time.Duration
	// BuilderThreshold (percent of the engine data root's filesystem) and
	// BuilderMaxBytes (total size of local stage images, when set) bound
	// the host's builder cache; cleanup removes the least recently stored
	// stages beyond them.
	BuilderThreshold int
	BuilderMaxBytes  int64
	// GitCacheDir holds the copies of the remote repositories of git
	// mappings with url: (one per project and URL).
	GitCacheDir string
	// ProtectedNamespaces are never deployed into nor dismissed (the
	// synchronization namespace is added); NamespacePattern, when set,
	// is a regexp every environment namespace must match;
	// AllowNamespaceOverride lets jobs name their namespace
	// (STAGEHAND_NAMESPACE, APP_NAMESPACE, KUBE_NAMESPACE); AdoptNamespaces
	// is a regexp of existing namespaces without an owner a project's
	// first deploy takes over (moving from werf).
	ProtectedNamespaces    []string
	NamespacePattern       string
	AllowNamespaceOverride bool
	AdoptNamespaces        string
	// AllowDeployFreeze lets deploys run while GitLab says a deploy
	// freeze is active (CI_DEPLOY_FREEZE).
	AllowDeployFreeze bool
	// InUseContexts are further kubeconfig contexts cleanup reads images
	// in use from ("all": every one).
	InUseContexts []string
	// MountsDir holds the build_dir directories of werf.yaml's mount:
	// (one per project and target, kept between builds: caches).
	MountsDir string
	// AllowedMountPaths are the host paths a mount: fromPath may bind
	// (each with what is below it); none by default, since a job could
	// otherwise read or write any file of the runner host.
	AllowedMountPaths []string
}

// DefaultSettings are used where the operator gives nothing.
func DefaultSettings() Settings {
	return Settings{
		BuildsRoot:      "/var/lib/stagehand/builds",
		CacheRoot:       "/var/lib/stagehand/cache",
		DockerHost:      "unix:///var/run/docker.sock",
		PullPolicy:      request.PullIfNotPresent,
		ServicesTimeout: 30 * time.Second,
		Worker:          worker.DefaultPath(),
		StopTimeout:     10 * time.Second,
		// Hosts of one runner fleet share no files: without a cluster,
		// locks only spare this host's concurrent jobs duplicate work.
		Synchronization:     ":local",
		LocksDir:            request.DefaultLocksDir,
		BlockDir:            "/var/lib/stagehand/switch-from-local",
		PullSecretFrom:      "kube-system/registrysecret",
		DeployTimeout:       5 * time.Minute,
		BuilderThreshold:    80,
		MountsDir:           "/var/lib/stagehand/mounts",
		ProtectedNamespaces: slices.Clone(request.DefaultProtectedNamespaces),
		GitCacheDir:         "/var/lib/stagehand/git",
	}
}

// NamespacePolicy is the runner's rule of environment namespaces: the
// protected ones include the namespace of kubernetes:// synchronization.
func (s *Settings) NamespacePolicy() request.NamespacePolicy {
	p := request.NamespacePolicy{Protected: slices.Clone(s.ProtectedNamespaces), Pattern: s.NamespacePattern, AllowOverride: s.AllowNamespaceOverride}
	if sync, err := request.ParseSynchronization("--synchronization", s.Synchronization); err == nil && sync.Namespace != "" {
		p.Protected = append(p.Protected, sync.Namespace)
	}
	return p
}

// Mounts are the host directories of builds.
func (s *Settings) Mounts() request.Mounts {
	return request.Mounts{Dir: s.MountsDir, AllowedPaths: s.AllowedMountPaths, GitCache: s.GitCacheDir}
}

// Validate says which setting is wrong and how to fix it.
func (s *Settings) Validate() error {
	if !filepath.IsAbs(s.BuildsRoot) {
		return fmt.Errorf("--builds-root %q must be an absolute path", s.BuildsRoot)
	}
	if !filepath.IsAbs(s.CacheRoot) {
		return fmt.Errorf("--cache-root %q must be an absolute path", s.CacheRoot)
	}
	switch s.PullPolicy {
	case request.PullIfNotPresent, request.PullAlways, request.PullNever:
	default:
		return fmt.Errorf("--pull-policy %q: use %s, %s or %s", s.PullPolicy, request.PullIfNotPresent, request.PullAlways, request.PullNever)
	}
	if !filepath.IsAbs(s.MountsDir) {
		return fmt.Errorf("--mounts-dir %q must be an absolute path", s.MountsDir)
	}
	for _, re := range []struct{ flag, value string }{{"--namespace-pattern", s.NamespacePattern}, {"--adopt-namespaces", s.AdoptNamespaces}} {
		if _, err := regexp.Compile(re.value); err != nil {
			return fmt.Errorf("%s %q is not a regular expression: %v", re.flag, re.value, err)
		}
	}
	if !filepath.IsAbs(s.GitCacheDir) {
		return fmt.Errorf("--git-cache-dir %q must be an absolute path", s.GitCacheDir)
	}
	for _, p := range s.AllowedMountPaths {
		if !filepath.IsAbs(p) || filepath.Clean(p) == "/" {
			return fmt.Errorf("--allowed-mount-paths: %q must be an absolute path other than /", p)
		}
	}
	if s.StopTimeout <= 0 {
		return fmt.Errorf("--stop-timeout %s must be positive", s.StopTimeout)
	}
	return nil
}
