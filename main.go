// Command stagehand is a GitLab Runner custom executor: `stagehand hook ...`
// are the four hooks gitlab-runner calls; the other commands are for
// operators.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/worker"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := &cobra.Command{
		Use:           "stagehand",
		Short:         "GitLab Runner custom executor: ci-env, distributed stages, per-environment deploys, scheduled cleanup",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	code := 0
	root.AddCommand(hookCommand(&code), ciEnvCommand(), buildCommand(), stagesCommand(), dismissCommand(), cleanupCommand())
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "stagehand:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// hookCommand holds the four hooks. Their settings come from flags in
// config.toml's *_args, or from STAGEHAND_* variables of the runner process.
func hookCommand(code *int) *cobra.Command {
	s := executor.DefaultSettings()
	hook := &cobra.Command{
		Use:   "hook",
		Short: "The custom executor hooks gitlab-runner calls (config, prepare, run, cleanup)",
	}
	f := hook.PersistentFlags()
	f.StringVar(&s.BuildsRoot, "builds-root", s.BuildsRoot, "directory for job checkouts (per runner, project and concurrent slot)")
	f.StringVar(&s.CacheRoot, "cache-root", s.CacheRoot, "directory for the runner's local cache")
	f.StringVar(&s.DockerHost, "docker-host", dockerHostDefault(s.DockerHost), "Docker Engine for image: jobs and builds")
	f.StringVar(&s.Worker, "worker", s.Worker, "the stagehand-worker program (default: next to stagehand)")
	f.StringVar(&s.DockerNetwork, "docker-network", s.DockerNetwork, "network mode of job containers (empty: the engine's default)")
	f.StringVar(&s.PullPolicy, "pull-policy", s.PullPolicy, "when to pull job images: if-not-present, always, never")
	f.DurationVar(&s.StopTimeout, "stop-timeout", s.StopTimeout, "time a cancelled script gets after SIGTERM before SIGKILL")
	f.StringVar(&s.Synchronization, "synchronization", s.Synchronization, "how builds coordinate across hosts: :local, kubernetes://NAMESPACE or none")
	f.StringVar(&s.Kubeconfig, "kubeconfig", s.Kubeconfig, "kubeconfig of kubernetes:// synchronization (empty: $KUBECONFIG, else in-cluster)")
	f.StringVar(&s.LocksDir, "locks-dir", s.LocksDir, "directory of :local synchronization's file locks")
	f.StringVar(&s.BlockDir, "block-dir", s.BlockDir, "directory of switch-from-local block files")
	f.StringVar(&s.PullSecretFrom, "pull-secret-from", s.PullSecretFrom, "image pull secret (namespace/name) copied into environment namespaces when a job has no deploy token")
	f.DurationVar(&s.DeployTimeout, "deploy-timeout", s.DeployTimeout, "how long a deploy waits for its workloads (jobs: STAGEHAND_DEPLOY_TIMEOUT)")
	f.IntVar(&s.BuilderThreshold, "builder-threshold", s.BuilderThreshold, "cleanup removes local stage images while the engine data root's filesystem is fuller than this percentage")
	f.Int64Var(&s.BuilderMaxBytes, "builder-max-bytes", s.BuilderMaxBytes, "when set, bound the local stage images' total size instead of --builder-threshold")
	envDefaults(f)

	// do runs one hook: it loads the job, runs fn, reports and sets the
	// exit code the runner expects.
	do := func(fn func(ctx context.Context, e *executor.Executor) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			e, err := executor.New(s, version, os.Environ(), os.Stdout, os.Stderr)
			if e != nil {
				e.Register(executor.ActionBuild, executor.BuildAction{})
				e.Register(executor.ActionDeploy, executor.DeployAction{})
				e.Register(executor.ActionDismiss, executor.DismissAction{})
				e.Register(executor.ActionCleanup, executor.CleanupAction{})
			}
			if err != nil {
				e.Report(fault.System(err))
				*code = e.ExitCode(fault.System(err))
				return nil
			}
			if err := fn(ctx, e); err != nil {
				e.Report(err)
				*code = e.ExitCode(err)
			}
			return nil
		}
	}
	hook.AddCommand(
		&cobra.Command{
			Use:   "config",
			Short: "Print the job's executor configuration as JSON (config_exec)",
			Args:  cobra.NoArgs,
			RunE:  do(func(ctx context.Context, e *executor.Executor) error { return e.Config(ctx) }),
		},
		&cobra.Command{
			Use:   "prepare",
			Short: "Check what the job needs and set up its private state (prepare_exec)",
			Args:  cobra.NoArgs,
			RunE:  do(func(ctx context.Context, e *executor.Executor) error { return e.Prepare(ctx) }),
		},
		&cobra.Command{
			Use:   "run SCRIPT STAGE",
			Short: "Run one stage's script, performing the job's action first (run_exec)",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return do(func(ctx context.Context, e *executor.Executor) error { return e.Run(ctx, args[0], args[1]) })(cmd, args)
			},
		},
		&cobra.Command{
			Use:   "cleanup",
			Short: "Remove the job's containers, secrets and temporary files (cleanup_exec); never fails",
			Args:  cobra.NoArgs,
			RunE: do(func(ctx context.Context, e *executor.Executor) error {
				// A cancelled job still gets its cleanup.
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				defer cancel()
				e.Cleanup(ctx)
				return nil
			}),
		},
	)
	return hook
}

// dockerHostDefault prefers the runner process's DOCKER_HOST, as the docker
// CLI does.
func dockerHostDefault(def string) string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return def
}

// envDefaults lets STAGEHAND_<FLAG> in the runner process's environment
// set a flag the command line does not give.
func envDefaults(f *pflag.FlagSet) {
	f.VisitAll(func(fl *pflag.Flag) {
		name := "STAGEHAND_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && v != "" {
			if err := fl.Value.Set(v); err != nil {
				fmt.Fprintf(os.Stderr, "stagehand: ignoring %s=%q: %v\n", name, v, err)
				return
			}
			fl.DefValue = v
		}
		fl.Usage += " (env " + name + ")"
	})
}

// operatorFlags are the host settings operator commands share with the
// hooks.
func operatorFlags(f *pflag.FlagSet, s *executor.Settings) {
	f.StringVar(&s.DockerHost, "docker-host", dockerHostDefault(s.DockerHost), "Docker Engine to build with")
	f.StringVar(&s.DockerNetwork, "docker-network", s.DockerNetwork, "network mode of build containers (empty: the engine's default)")
	f.StringVar(&s.Worker, "worker", s.Worker, "the stagehand-worker program (default: next to stagehand)")
	f.StringVar(&s.Synchronization, "synchronization", "none", "how builds coordinate across hosts: :local, kubernetes://NAMESPACE or none")
	f.StringVar(&s.Kubeconfig, "kubeconfig", s.Kubeconfig, "kubeconfig of kubernetes:// synchronization")
	f.StringVar(&s.LocksDir, "locks-dir", s.LocksDir, "directory of :local synchronization's file locks")
	f.StringVar(&s.BlockDir, "block-dir", s.BlockDir, "directory of switch-from-local block files")
}

// callWorker runs one worker request with the trace on stderr; ^C stops it.
func callWorker(cmd *cobra.Command, s executor.Settings, req worker.Request) (worker.Response, error) {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	req.DockerHost = s.DockerHost
	if req.DockerConfig == "" {
		req.DockerConfig = dockerConfigDir()
	}
	return worker.Client{Path: s.Worker, Trace: cmd.ErrOrStderr(), StopGrace: time.Minute}.Call(ctx, req)
}

// dockerConfigDir is where the docker CLI keeps logins.
func dockerConfigDir() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".docker")
}

func buildCommand() *cobra.Command {
	s := executor.DefaultSettings()
	b := executor.ShellBuild{Dir: "."}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build and publish the project's images from a checkout, as a build job does",
		Long: "Builds the images of stagehand.yaml or werf.yaml in --dir as stages in the stages storage " +
			"and publishes them to --repo. The build's progress goes to stderr; the published references " +
			"go to stdout as export lines, for `eval \"$(stagehand build ...)\"`. Registry logins come from " +
			"DOCKER_CONFIG (docker login).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b.Settings = s
			req, err := b.Request()
			if err != nil {
				return err
			}
			resp, err := callWorker(cmd, s, worker.Request{Op: worker.OpBuild, Build: req})
			if err != nil {
				return err
			}
			var vars []gitlab.Var
			for k, v := range resp.Exports {
				vars = append(vars, gitlab.Var{Name: k, Value: v})
			}
			sort.Slice(vars, func(i, j int) bool { return vars[i].Name < vars[j].Name })
			_, err = fmt.Fprint(cmd.OutOrStdout(), gitlab.FormatExports(vars))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&b.Dir, "dir", b.Dir, "the project's checkout")
	f.StringVar(&b.ImagesRepo, "repo", firstEnv("STAGEHAND_IMAGES_REPO", "CI_REGISTRY_IMAGE"), "images repository to publish to")
	f.StringVar(&b.StagesStorage, "stages-storage", os.Getenv("STAGEHAND_STAGES_STORAGE"), "stages storage: a repository (default REPO/stages) or :local")
	f.StringVar(&b.TagStrategy, "tag-strategy", os.Getenv("STAGEHAND_TAG_STRATEGY"), "stages-signature or tag-or-branch")
	f.StringVar(&b.Project, "project", "", "project name for locks and labels (default: the repository's last element)")
	operatorFlags(f, &s)
	return cmd
}

func dismissCommand() *cobra.Command {
	s := executor.DefaultSettings()
	d := worker.Deploy{}
	cmd := &cobra.Command{
		Use:   "dismiss --namespace NS --release NAME",
		Short: "Remove an environment: uninstall its release, delete its namespace and wait until it is gone",
		Long: "What a stop job does, from a shell. The namespace is never re-created; an environment " +
			"that does not exist is dismissed with a note. The cluster comes from --kubeconfig, else " +
			"KUBECONFIG, else the pod's service account.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d.Kubeconfig, d.Timeout = s.Kubeconfig, s.DeployTimeout
			if d.Release == "" {
				d.Release = d.Namespace
			}
			_, err := callWorker(cmd, s, worker.Request{Op: worker.OpDismiss, Deploy: &d})
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&d.Namespace, "namespace", os.Getenv("STAGEHAND_NAMESPACE"), "the environment's namespace")
	f.StringVar(&d.Release, "release", os.Getenv("STAGEHAND_RELEASE"), "the environment's Helm release (default: the namespace)")
	f.StringVar(&s.Kubeconfig, "kubeconfig", s.Kubeconfig, "the cluster")
	f.DurationVar(&s.DeployTimeout, "timeout", s.DeployTimeout, "how long to wait for the namespace to go")
	f.StringVar(&s.Worker, "worker", s.Worker, "the stagehand-worker program (default: next to stagehand)")
	_ = cmd.MarkFlagRequired("namespace")
	return cmd
}

func cleanupCommand() *cobra.Command {
	s := executor.DefaultSettings()
	c := worker.Cleanup{
		GitTagLimit: gitlab.DefaultGitTagPolicy.Limit, GitTagExpiryDays: gitlab.DefaultGitTagPolicy.ExpiryDays,
		GitCommitLimit: gitlab.DefaultGitCommitPolicy.Limit, GitCommitExpiryDays: gitlab.DefaultGitCommitPolicy.ExpiryDays,
		SignatureLimit: gitlab.DefaultStagesSignaturePolicy.Limit, SignatureExpiryDays: gitlab.DefaultStagesSignaturePolicy.ExpiryDays,
	}
	var namespaces string
	var builder bool
	cmd := &cobra.Command{
		Use:   "cleanup --project GROUP/NAME --stages-storage REPO",
		Short: "Clean a project's registry images by its git policies, its stages and (--builder) this host's cache",
		Long: "What a scheduled pipeline's job does, from a shell. The token comes from STAGEHAND_CLEANUP_TOKEN " +
			"(never a flag: it would show in ps); registry logins from DOCKER_CONFIG. --dry-run prints the plan only.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Token = os.Getenv("STAGEHAND_CLEANUP_TOKEN")
			c.Kubeconfig, c.LocksDir = s.Kubeconfig, s.LocksDir
			if c.Synchronization == "none" {
				c.Synchronization = ""
			}
			if c.LockProject == "" {
				c.LockProject = gitlab.Slug(c.Project, gitlab.NamespaceSlugLimit)
			}
			for _, ns := range strings.Split(namespaces, ",") {
				if ns = strings.TrimSpace(ns); ns != "" {
					c.Namespaces = append(c.Namespaces, ns)
				}
			}
			host, _ := os.Hostname()
			c.Holder = fmt.Sprintf("host %s, `stagehand cleanup` by pid %d", host, os.Getpid())
			c.BuilderThresholdPercent, c.BuilderMaxBytes = s.BuilderThreshold, s.BuilderMaxBytes
			if !builder {
				s.DockerHost = ""
			}
			_, err := callWorker(cmd, s, worker.Request{Op: worker.OpCleanup, Cleanup: &c})
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.APIURL, "api-url", os.Getenv("CI_API_V4_URL"), "GitLab's API (CI_API_V4_URL)")
	f.StringVar(&c.Project, "project", os.Getenv("CI_PROJECT_PATH"), "the project (group/name or id)")
	f.StringVar(&c.LockProject, "lock-project", os.Getenv("CI_PROJECT_PATH_SLUG"), "the project's name in locks (default: its path slugged)")
	f.StringVar(&c.StagesRepo, "stages-storage", os.Getenv("STAGEHAND_STAGES_STORAGE"), "the stages storage ($CI_REGISTRY_IMAGE/stages)")
	f.StringVar(&namespaces, "namespaces", os.Getenv("STAGEHAND_CLEANUP_NAMESPACES"), "namespaces to look in for images in use when cluster-wide listing is forbidden (comma-separated)")
	f.BoolVar(&c.DryRun, "dry-run", false, "print the plan, delete nothing")
	f.BoolVar(&builder, "builder", false, "also clean this host's Docker Engine (--docker-host)")
	f.StringVar(&c.Synchronization, "synchronization", "none", "where the project lock is: :local, kubernetes://NAMESPACE or none")
	f.IntVar(&c.GitCommitLimit, "git-commit-strategy-limit", c.GitCommitLimit, "commit images to keep (-1: no limit)")
	f.IntVar(&c.GitCommitExpiryDays, "git-commit-strategy-expiry-days", c.GitCommitExpiryDays, "days commit images are kept (-1: no limit)")
	f.IntVar(&c.SignatureLimit, "stages-signature-strategy-limit", c.SignatureLimit, "stages-signature images to keep (-1: no limit)")
	f.IntVar(&c.SignatureExpiryDays, "stages-signature-strategy-expiry-days", c.SignatureExpiryDays, "days stages-signature images are kept (-1: no limit)")
	f.StringVar(&s.DockerHost, "docker-host", dockerHostDefault(s.DockerHost), "the Docker Engine of --builder")
	f.IntVar(&s.BuilderThreshold, "builder-threshold", s.BuilderThreshold, "percent of the engine data root's filesystem to clean down to")
	f.Int64Var(&s.BuilderMaxBytes, "builder-max-bytes", s.BuilderMaxBytes, "bound the local stage images' size instead")
	f.StringVar(&s.Kubeconfig, "kubeconfig", s.Kubeconfig, "the cluster whose workloads' images stay")
	f.StringVar(&s.LocksDir, "locks-dir", s.LocksDir, "directory of :local locks")
	f.StringVar(&s.Worker, "worker", s.Worker, "the stagehand-worker program (default: next to stagehand)")
	return cmd
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func stagesCommand() *cobra.Command {
	stagesCmd := &cobra.Command{Use: "stages", Short: "Operate on a project's stages storage"}
	{
		s := executor.DefaultSettings()
		var o worker.Stages
		sync := &cobra.Command{
			Use:   "sync --from A --to B",
			Short: "Copy the stages A has and B lacks (A, B: :local or a repository); run again to resume",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				resp, err := callWorker(cmd, s, worker.Request{Op: worker.OpStagesSync, Stages: &o})
				if err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "copied %d stages, %d already there\n", resp.Copied, resp.Present)
				}
				return err
			},
		}
		f := sync.Flags()
		f.StringVar(&o.From, "from", "", "source storage (:local or a repository)")
		f.StringVar(&o.To, "to", "", "destination storage (:local or a repository)")
		f.StringVar(&o.Project, "project", "", "project of the :local stages (werf.yaml's project)")
		_ = sync.MarkFlagRequired("from")
		_ = sync.MarkFlagRequired("to")
		operatorFlags(f, &s)
		stagesCmd.AddCommand(sync)
	}
	{
		s := executor.DefaultSettings()
		var o worker.Stages
		sw := &cobra.Command{
			Use:   "switch-from-local --to REPO",
			Short: "Move a project's :local stages to a registry and block later :local builds",
			Long: "Blocks :local builds of the project on this host (a block file in --block-dir), copies its " +
				"local stages to --to and removes them from the engine. Roll back with " +
				"`stagehand stages sync --from REPO --to :local` and removing the block file.",
			Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				o.BlockDir = s.BlockDir
				resp, err := callWorker(cmd, s, worker.Request{Op: worker.OpSwitchFromLocal, Stages: &o})
				if err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "moved %d stages (%d were already there)\n", resp.Copied, resp.Present)
				}
				return err
			},
		}
		f := sw.Flags()
		f.StringVar(&o.To, "to", "", "the registry stages storage ($CI_REGISTRY_IMAGE/stages)")
		f.StringVar(&o.Project, "project", "", "the project (werf.yaml's project)")
		_ = sw.MarkFlagRequired("to")
		_ = sw.MarkFlagRequired("project")
		operatorFlags(f, &s)
		stagesCmd.AddCommand(sw)
	}
	return stagesCmd
}

func ciEnvCommand() *cobra.Command {
	var dockerConfig string
	cmd := &cobra.Command{
		Use:   "ci-env",
		Short: "Print the derived CI environment of the current shell's CI_* variables as export lines",
		Long: "Reads GitLab's CI_* variables (and STAGEHAND_* overrides) from the environment, " +
			"as a job sees them, and prints what stagehand derives from them as `export NAME='value'` " +
			"lines, for `eval \"$(stagehand ci-env)\"`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vars := map[string]string{}
			for _, kv := range os.Environ() {
				if k, v, ok := strings.Cut(kv, "="); ok {
					vars[k] = v
				}
			}
			env, err := gitlab.DeriveEnv(gitlab.Input{Vars: vars, DockerConfig: dockerConfig})
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), gitlab.FormatExports(env.Vars()))
			return err
		},
	}
	cmd.Flags().StringVar(&dockerConfig, "docker-config", os.Getenv("DOCKER_CONFIG"), "DOCKER_CONFIG to export")
	return cmd
}
