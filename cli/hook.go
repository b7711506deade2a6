package cli

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/fault"
)

// hookCommand holds the four hooks. Their settings come from flags in
// config.toml's *_args, or from STAGEHAND_* variables of the runner
// process; jobs cannot change them.
func hookCommand(version string, code *int) *cobra.Command {
	s := defaultSettings()
	hook := &cobra.Command{
		Use:   "hook",
		Short: "The custom executor hooks gitlab-runner calls (config, prepare, run, cleanup)",
	}
	f := hook.PersistentFlags()
	jobFlags(f, s)
	engineFlags(f, s)
	buildDirFlags(f, s)
	workerFlags(f, s)
	syncFlags(f, s)
	localStagesFlags(f, s)
	clusterFlags(f, s)
	deployFlags(f, s)
	builderFlags(f, s)

	// do runs one hook: it loads the job, runs fn, reports and sets the
	// exit code the runner expects.
	do := func(fn func(ctx context.Context, e *executor.Executor) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd)
			defer stop()
			e, err := executor.New(*s, version, os.Environ(), cmd.OutOrStdout(), cmd.ErrOrStderr())
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
