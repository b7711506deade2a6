package docker

import (
	"context"
	"fmt"
	"io"
	"time"

	"gitlab.com/stagehand/stagehand/worker"
)

// Handlers are the worker operations this package serves.
func Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{
		worker.OpEnsureImage:         ensureImage,
		worker.OpRunScript:           runScript,
		worker.OpRemoveJobContainers: removeJobContainers,
	}
}

// Connect opens the engine and, when ping is set, checks that it answers.
func Connect(ctx context.Context, host string, ping bool) (*Docker, error) {
	if host == "" {
		return nil, fmt.Errorf("no Docker Engine address: set --docker-host")
	}
	d, err := NewDocker(host)
	if err != nil {
		return nil, err
	}
	if ping {
		if err := d.Ping(ctx); err != nil {
			_ = d.Close()
			return nil, err
		}
	}
	return d, nil
}

func ensureImage(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	d, err := Connect(ctx, req.DockerHost, true)
	if err != nil {
		return worker.Response{}, err
	}
	defer d.Close()
	return worker.Response{}, d.EnsureImage(ctx, req.Image, req.PullPolicy, req.DockerConfig, trace)
}

func runScript(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	if req.Script == nil {
		return worker.Response{}, fmt.Errorf("%s request without a script", worker.OpRunScript)
	}
	d, err := Connect(ctx, req.DockerHost, false)
	if err != nil {
		return worker.Response{}, err
	}
	defer d.Close()
	code, err := d.RunScript(ctx, req.Image, req.JobKey, *req.Script, trace, trace)
	return worker.Response{ExitCode: code}, err
}

// removeContainersTimeout bounds cleanup, which must not hang the runner.
const removeContainersTimeout = 60 * time.Second

func removeJobContainers(ctx context.Context, req worker.Request, _ io.Writer) (worker.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, removeContainersTimeout)
	defer cancel()
	d, err := Connect(ctx, req.DockerHost, false)
	if err != nil {
		return worker.Response{}, err
	}
	defer d.Close()
	n, err := d.RemoveJobContainers(ctx, req.JobKey)
	return worker.Response{Removed: n}, err
}
