package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/worker"
)

// Script is one runner-generated script to run for one runner stage.
type Script struct {
	Path  string
	Stage string
	// Env is added to the environment the script starts with; the script
	// itself then exports the job's variables, so a job variable of the
	// same name wins.
	Env            []string
	Stdout, Stderr io.Writer
}

// ScriptRunner runs a script somewhere (host shell, job container). It
// returns the script's exit status; an error means it could not be run or
// was stopped. When ctx ends, the runner stops the script: SIGTERM first,
// SIGKILL after its stop timeout.
type ScriptRunner interface {
	Run(ctx context.Context, s Script) (int, error)
}

// userStage tells the stages that run the user's own lines (and so run in
// the job image when there is one); the runner's own stages (sources,
// caches, artifacts) stay on the host, where gitlab-runner and git are.
func userStage(stage string) bool {
	return stage == "build_script" || stage == "after_script" || strings.HasPrefix(stage, "step_")
}

// scriptStage tells the stage before which the job's action runs: the
// user's main script. This runner version names it build_script; newer
// ones step_script.
func scriptStage(stage string) bool {
	return stage == "build_script" || stage == "step_script"
}

// hostShell runs scripts with bash on the runner host.
type hostShell struct {
	baseEnv     []string
	stopTimeout time.Duration
}

func (h hostShell) Run(ctx context.Context, s Script) (int, error) {
	cmd := exec.Command("bash", s.Path)
	cmd.Env = append(append([]string{}, h.baseEnv...), s.Env...)
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	// Own process group, so that stopping the job stops everything the
	// script started, not only bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start bash for %s: %w", s.Stage, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	select {
	case err := <-done:
		return exitStatus(err)
	case <-ctx.Done():
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(h.stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// Whatever survived bash in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return -1, fmt.Errorf("%s stopped: %w", s.Stage, context.Cause(ctx))
}

// exitStatus turns cmd.Wait's error into the script's exit status.
func exitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return -1, err
}

// containerShell runs scripts in job containers: the worker creates one
// container of the job image per stage, streams its output to the trace
// and removes it.
type containerShell struct {
	worker      worker.Client
	engine      request.Engine
	image       string
	jobKey      string
	binds       []string
	stopTimeout time.Duration
	// entrypoint overrides the image's when overrideEntrypoint.
	entrypoint         []string
	overrideEntrypoint bool
	// network is the services' namespace, when the job has services.
	network string
}

func (c containerShell) Run(ctx context.Context, s Script) (int, error) {
	res, err := worker.Call[request.ScriptResult](ctx, c.worker, request.JobScript{
		Engine:      c.engine,
		Image:       c.image,
		JobKey:      c.jobKey,
		Path:        s.Path,
		Stage:       s.Stage,
		Env:         s.Env,
		Binds:       c.binds,
		StopTimeout: c.stopTimeout,
		Entrypoint:  c.entrypoint, OverrideEntrypoint: c.overrideEntrypoint,
		Network: c.network,
	})
	if err != nil {
		return -1, err
	}
	return res.ExitCode, nil
}
