// Package cli is stagehand's command line: the four hooks gitlab-runner
// calls (`stagehand hook ...`) and the commands an operator runs from a
// shell. One file per command; the host settings every command shares are
// one type (executor.Settings), bound to flag groups (settings.go), each
// flag declared once with one default and one STAGEHAND_<FLAG> override
// from the environment.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/worker"
)

// Main runs stagehand with args and answers its exit status.
func Main(version string, args []string, stdout, stderr io.Writer) int {
	code := 0
	var root *cobra.Command
	if len(args) > 0 && args[0] == "hook" {
		// gitlab-runner starts a hook about ten times a job: build only
		// the hooks' commands, not every operator command's flags.
		root = newRoot(version)
		root.AddCommand(hookCommand(version, &code))
		envDefaults(root)
	} else {
		root = New(version, &code)
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "stagehand:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// New builds the command tree. code receives a hook's exit status, which
// gitlab-runner reads (the hooks never fail through cobra).
func New(version string, code *int) *cobra.Command {
	root := newRoot(version)
	root.AddCommand(
		hookCommand(version, code),
		ciEnvCommand(),
		buildCommand(),
		stagesCommand(),
		dismissCommand(),
		cleanupCommand(),
		configCommand(),
		planCommand(),
		secretCommand(),
		deployCommand(),
		renderCommand(),
	)
	envDefaults(root)
	return root
}

func newRoot(version string) *cobra.Command {
	return &cobra.Command{
		Use:           "stagehand",
		Short:         "GitLab Runner custom executor: ci-env, distributed stages, per-environment deploys, scheduled cleanup",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
}

// signalContext ends when the operator presses ^C or the process gets
// SIGTERM.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
}

// call runs one operation in the worker, with the trace on stderr.
func call[Out any](cmd *cobra.Command, s *executor.Settings, op worker.Operation) (Out, error) {
	ctx, stop := signalContext(cmd)
	defer stop()
	return worker.Call[Out](ctx, workerClient(cmd, s), op)
}

func workerClient(cmd *cobra.Command, s *executor.Settings) worker.Client {
	return worker.Client{Path: s.Worker, Trace: cmd.ErrOrStderr(), StopGrace: time.Minute}
}

// callPrepared is call of the operation prepare answers, the worker
// started while prepare runs (see worker.CallPrepared).
func callPrepared[In worker.Operation, Out any](cmd *cobra.Command, s *executor.Settings, prepare func() (In, error)) (Out, error) {
	ctx, stop := signalContext(cmd)
	defer stop()
	var zero In // a concrete operation type: its zero value names the program
	return worker.CallPrepared[In, Out](ctx, workerClient(cmd, s), worker.ProgramOf(zero), prepare)
}

// dockerConfigDir is where the docker CLI keeps logins.
func dockerConfigDir() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return home + "/.docker"
}

// firstEnv is the first of the variables set.
func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
