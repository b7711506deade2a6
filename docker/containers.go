package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// ContainerSpec is a container to run to its end.
type ContainerSpec struct {
	Name  string
	Image string
	// Entrypoint replaces the image's when not nil (an empty list clears
	// it); Cmd is the command.
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
	// Binds are host:container[:ro] mounts.
	Binds   []string
	Network string
	// StopTimeout is how long the container gets after SIGTERM, when ctx
	// ends, before SIGKILL.
	StopTimeout time.Duration
}

// Run runs a container to its end, with its output copied to stdout and
// stderr, and removes it. It answers the exit status. When ctx ends the
// container is stopped (SIGTERM, then SIGKILL after StopTimeout) and the
// error wraps ctx's cause. A container of the same name left by an
// earlier attempt is removed first.
func (e *Engine) Run(ctx context.Context, s ContainerSpec, stdout, stderr io.Writer) (int, error) {
	cli := e.cli
	// Removal must happen even when the job is being cancelled.
	keep := context.WithoutCancel(ctx)
	if s.Name != "" {
		_, _ = cli.ContainerRemove(keep, s.Name, client.ContainerRemoveOptions{Force: true})
	}
	cfg := &container.Config{
		Image:        s.Image,
		Cmd:          s.Cmd,
		Env:          s.Env,
		AttachStdout: true,
		AttachStderr: true,
		Labels:       s.Labels,
	}
	if s.Entrypoint != nil {
		cfg.Entrypoint = s.Entrypoint
	}
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       s.Name,
		Config:     cfg,
		HostConfig: &container.HostConfig{Binds: s.Binds, NetworkMode: container.NetworkMode(s.Network)},
	})
	if err != nil {
		return -1, fmt.Errorf("create container %s from %s: %w", s.Name, s.Image, err)
	}
	id := created.ID
	defer func() {
		_, _ = cli.ContainerRemove(keep, id, client.ContainerRemoveOptions{Force: true})
	}()

	att, err := cli.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return -1, fmt.Errorf("attach to container %s: %w", s.Name, err)
	}
	defer att.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(stdout, stderr, att.Reader)
	}()

	waited := cli.ContainerWait(keep, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return -1, fmt.Errorf("start container %s: %w", s.Name, err)
	}

	stopped := false
	var cause error
	for {
		select {
		case res := <-waited.Result:
			<-copied
			if stopped {
				return -1, fmt.Errorf("%s stopped: %w", s.Name, cause)
			}
			if res.Error != nil && res.Error.Message != "" {
				return -1, fmt.Errorf("container %s: %s", s.Name, res.Error.Message)
			}
			return int(res.StatusCode), nil
		case err := <-waited.Error:
			return -1, fmt.Errorf("wait for container %s: %w", s.Name, err)
		case <-ctx.Done():
			if stopped {
				continue
			}
			stopped, cause = true, context.Cause(ctx)
			secs := int(s.StopTimeout.Seconds())
			_, _ = cli.ContainerStop(keep, id, client.ContainerStopOptions{Timeout: &secs})
			ctx = keep
		}
	}
}

// RemoveContainers removes every container, running or not, whose label
// key has value, and answers how many.
func (e *Engine) RemoveContainers(ctx context.Context, key, value string) (int, error) {
	list, err := e.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", key+"="+value),
	})
	if err != nil {
		return 0, fmt.Errorf("list containers labelled %s=%s: %w", key, value, err)
	}
	n := 0
	var errs []error
	for _, c := range list.Items {
		if _, err := e.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID[:12], err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
