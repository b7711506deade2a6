// Package jobcontainer runs the user's stages of an `image:` job the way
// the docker executor does: the job's image made available per its pull
// policy, one fresh container of it per runner stage with the builds
// directory mounted at the same path, and every container of the job
// removed in cleanup, even after a crash (they carry the job's label).
package jobcontainer

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/trace"
)

// Labels on job containers, so that cleanup finds them even after a crash.
const (
	LabelJob   = "io.stagehand.job"
	labelStage = "io.stagehand.stage"
)

// EnsureImage makes the job image available per its pull policies, tried
// in order as the docker executor does: a policy that fails hands over to
// the next, and the last one's failure is the answer. An image that does
// not exist is the job's fault; an unreachable registry is not.
func EnsureImage(ctx context.Context, r request.JobImage, w io.Writer) error {
	e, err := docker.Connect(ctx, r.Engine.Host)
	if err != nil {
		return err
	}
	defer e.Close()
	policies := r.PullPolicies
	if len(policies) == 0 {
		policies = []string{request.PullIfNotPresent}
	}
	for i, p := range policies {
		err = ensureImage(ctx, e, r, p, w)
		if err == nil || i == len(policies)-1 || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(w, "Pull policy %s failed (%v): trying %s\n", p, err, policies[i+1])
	}
	return err
}

func ensureImage(ctx context.Context, e *docker.Engine, r request.JobImage, policy string, w io.Writer) error {
	if policy != request.PullAlways {
		_, ok, err := e.Inspect(ctx, r.Image)
		if err != nil {
			return err
		}
		if ok {
			fmt.Fprintf(w, "Using image %s (present on this host)\n", r.Image)
			return nil
		}
		if policy == request.PullNever {
			return fault.Jobf("image %s is not on this runner host and the pull policy is %q: pre-load it or use another pull_policy", r.Image, request.PullNever)
		}
	}
	fmt.Fprintf(w, "Pulling image %s ...\n", r.Image)
	start := time.Now()
	if err := e.Pull(ctx, r.Image, r.Engine.DockerConfig, trace.NewProgress(w, "Pulling "+r.Image).Update); err != nil {
		if docker.IsNotFound(err) || strings.Contains(err.Error(), "manifest unknown") || strings.Contains(err.Error(), "not found") {
			return fault.Jobf("%w (check the image name in `image:`)", err)
		}
		return err
	}
	fmt.Fprintf(w, "Pulled image %s in %s\n", r.Image, time.Since(start).Round(time.Millisecond))
	return nil
}

// shellLauncher starts the script with bash when the image has it, else
// with sh: the runner's bash scripts are written to run in both.
const shellLauncher = `for s in /usr/local/bin/bash /usr/bin/bash /bin/bash /bin/sh /usr/bin/sh; do if [ -x "$s" ]; then exec "$s" "$@"; fi; done; echo "stagehand: no bash or sh in the job image" >&2; exit 127`

// RunScript runs a runner script in a fresh container of the job image,
// one container per stage, with the binds and the script (at its host
// path) mounted. It answers the script's exit status. When ctx ends, the
// container is stopped (SIGTERM, SIGKILL after StopTimeout) and removed.
func RunScript(ctx context.Context, r request.JobScript, trace io.Writer) (request.ScriptResult, error) {
	e, err := docker.Open(r.Engine.Host)
	if err != nil {
		return request.ScriptResult{ExitCode: -1}, err
	}
	defer e.Close()
	// The image's entrypoint runs unless the job overrides it; [""]
	// clears it (Docker's own spelling).
	var entrypoint []string
	if r.OverrideEntrypoint {
		entrypoint = entrypointOf(r.Entrypoint)
	}
	network := r.Engine.Network
	if r.Network != "" {
		network = r.Network
	}
	code, err := e.Run(ctx, docker.ContainerSpec{
		Name:        "stagehand-" + r.JobKey + "-" + r.Stage,
		Image:       r.Image,
		Entrypoint:  entrypoint,
		Cmd:         []string{"sh", "-c", shellLauncher, "stagehand", r.Path},
		Env:         r.Env,
		Labels:      map[string]string{LabelJob: r.JobKey, labelStage: r.Stage},
		Binds:       append(append([]string{}, r.Binds...), r.Path+":"+r.Path+":ro"),
		Network:     network,
		StopTimeout: r.StopTimeout,
	}, trace, trace)
	if err != nil && r.Network != "" && strings.Contains(err.Error(), "cannot join network of a non running container") {
		return request.ScriptResult{ExitCode: -1}, fault.Jobf("the job's services stopped (their first container is not running): %w", err)
	}
	return request.ScriptResult{ExitCode: code}, err
}

// removeTimeout bounds cleanup, which must not hang the runner.
const removeTimeout = 60 * time.Second

// RemoveAll removes every container of the job, running or not.
func RemoveAll(ctx context.Context, r request.JobContainers) (request.Removed, error) {
	ctx, cancel := context.WithTimeout(ctx, removeTimeout)
	defer cancel()
	e, err := docker.Open(r.Engine.Host)
	if err != nil {
		return request.Removed{}, err
	}
	defer e.Close()
	n, err := e.RemoveContainers(ctx, LabelJob, r.JobKey)
	return request.Removed{Count: n}, err
}
