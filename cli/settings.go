package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/request"
)

// Flag groups: each binds a group of host settings to a command's flags,
// so that every command that needs a setting declares it the same way.

// jobFlags are the hooks' own: where jobs run.
func jobFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.BuildsRoot, "builds-root", s.BuildsRoot, "directory for job checkouts (per runner, project and concurrent slot)")
	f.StringVar(&s.CacheRoot, "cache-root", s.CacheRoot, "directory for the runner's local cache")
	f.StringVar(&s.PullPolicy, "pull-policy", s.PullPolicy, "when to pull job images: if-not-present, always, never")
	f.DurationVar(&s.ServicesTimeout, "wait-for-services-timeout", s.ServicesTimeout, "how long a job's services get to listen on their exposed ports")
	f.StringSliceVar(&s.AllowedPullPolicies, "allowed-pull-policies", s.AllowedPullPolicies, "the pull policies a job's image: pull_policy: may ask for (default: only --pull-policy)")
	f.DurationVar(&s.StopTimeout, "stop-timeout", s.StopTimeout, "time a cancelled script gets after SIGTERM before SIGKILL")
}

// engineFlags: the Docker Engine builds and job containers use.
func engineFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.DockerHost, "docker-host", s.DockerHost, "Docker Engine for image: jobs and builds")
	f.StringVar(&s.DockerNetwork, "docker-network", s.DockerNetwork, "network mode of job and build containers (empty: the engine's default)")
}

// buildDirFlags: the host directories of builds (werf.yaml's mount:
// directories, the copies of remote git repositories).
func buildDirFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.GitCacheDir, "git-cache-dir", s.GitCacheDir, "directory of the copies of remote repositories werf.yaml's git: url: names (per project)")
	f.StringVar(&s.MountsDir, "mounts-dir", s.MountsDir, "directory of the build_dir mounts (per project, kept between builds)")
	f.StringSliceVar(&s.AllowedMountPaths, "allowed-mount-paths", s.AllowedMountPaths, "host paths (comma-separated) a mount: fromPath may bind; none by default")
}

// workerFlags: the heavy half.
func workerFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.Worker, "worker", s.Worker, "the stagehand-worker program (default: next to stagehand)")
}

// syncFlags: how builds and cleanups on several hosts coordinate.
func syncFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.Synchronization, "synchronization", s.Synchronization, "how builds coordinate across hosts: :local (file locks on this host), kubernetes://NAMESPACE or none")
	f.StringVar(&s.LocksDir, "locks-dir", s.LocksDir, "directory of :local synchronization's file locks")
}

// localStagesFlags: the :local stages storage.
func localStagesFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.BlockDir, "block-dir", s.BlockDir, "directory of switch-from-local block files")
}

// clusterFlags: the Kubernetes cluster of deploys, in-use images and
// kubernetes:// locks.
func clusterFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.Kubeconfig, "kubeconfig", s.Kubeconfig, "the cluster (empty: $KUBECONFIG, else in-cluster)")
	f.StringSliceVar(&s.InUseContexts, "in-use-contexts", s.InUseContexts, "further kubeconfig contexts cleanup reads images in use from (all: every one)")
}

// deployFlags: environments.
func deployFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.PullSecretFrom, "pull-secret-from", s.PullSecretFrom, "image pull secret (namespace/name) copied into environment namespaces when a job has no deploy token")
	f.DurationVar(&s.DeployTimeout, "deploy-timeout", s.DeployTimeout, "how long a deploy waits for its workloads, a dismiss for its namespace (jobs: STAGEHAND_DEPLOY_TIMEOUT)")
	f.StringSliceVar(&s.ProtectedNamespaces, "protected-namespaces", s.ProtectedNamespaces, "namespaces jobs never deploy into nor remove (the synchronization namespace is added)")
	f.StringVar(&s.NamespacePattern, "namespace-pattern", s.NamespacePattern, "when set, a regular expression every environment namespace must match whole")
	f.BoolVar(&s.AllowNamespaceOverride, "allow-namespace-override", s.AllowNamespaceOverride, "let jobs name their namespace (STAGEHAND_NAMESPACE, APP_NAMESPACE, KUBE_NAMESPACE)")
	f.StringVar(&s.AdoptNamespaces, "adopt-namespaces", s.AdoptNamespaces, "a regular expression of existing namespaces without an owner that a project's first deploy takes over (moving from werf)")
	f.BoolVar(&s.AllowDeployFreeze, "allow-deploy-during-freeze", s.AllowDeployFreeze, "deploy even while GitLab says a deploy freeze is active (CI_DEPLOY_FREEZE)")
}

// builderFlags: the bounds of a host's builder cache.
func builderFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.IntVar(&s.BuilderThreshold, "builder-threshold", s.BuilderThreshold, "cleanup removes local stage images while the engine data root's filesystem is fuller than this percentage")
	f.Int64Var(&s.BuilderMaxBytes, "builder-max-bytes", s.BuilderMaxBytes, "when set, bound the local stage images' total size instead of --builder-threshold")
}

// defaultSettings are the settings a command starts from.
func defaultSettings() *executor.Settings {
	s := executor.DefaultSettings()
	// The docker CLI's variable, as the docker CLI reads it.
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		s.DockerHost = h
	}
	return &s
}

// EnvName is the variable that sets a flag's default: STAGEHAND_<FLAG>.
func EnvName(flag string) string {
	return "STAGEHAND_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// envDefaults lets STAGEHAND_<FLAG> in the environment set any flag of any
// command that the command line does not give, and says so in the help.
func envDefaults(root *cobra.Command) {
	seen := map[*pflag.Flag]bool{}
	apply := func(fl *pflag.Flag) {
		if seen[fl] || fl.Name == "help" || fl.Name == "version" {
			return
		}
		seen[fl] = true
		name := EnvName(fl.Name)
		if v, ok := os.LookupEnv(name); ok && v != "" {
			if err := fl.Value.Set(v); err != nil {
				fmt.Fprintf(os.Stderr, "stagehand: ignoring %s=%q: %v\n", name, v, err)
			} else {
				fl.DefValue = v
			}
		}
		fl.Usage += " (env " + name + ")"
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.PersistentFlags().VisitAll(apply)
		c.LocalNonPersistentFlags().VisitAll(apply)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// locks are the locks of a shell command's operation.
func locks(s *executor.Settings, project, what string) (request.Locks, error) {
	sync, err := request.ParseSynchronization("--synchronization", s.Synchronization)
	if err != nil {
		return request.Locks{}, err
	}
	return request.Locks{
		Sync:    sync,
		Project: project,
		Dir:     s.LocksDir,
		Cluster: request.Cluster{Kubeconfig: s.Kubeconfig},
		Holder:  request.Holder(fmt.Sprintf("`stagehand %s` by pid %d", what, os.Getpid())),
	}, nil
}

// engine is the settings' Docker Engine with the operator's logins.
func engine(s *executor.Settings) request.Engine {
	return request.Engine{Host: s.DockerHost, Network: s.DockerNetwork, DockerConfig: dockerConfigDir()}
}
