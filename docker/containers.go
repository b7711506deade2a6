package docker

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// ContainerSpec is a container to create.
type ContainerSpec struct {
	Name  string
	Image string
	// Entrypoint replaces the image's when not nil (an empty list clears
	// it); Cmd is the command.
	Entrypoint []string
	Cmd        []string
	Env        []string
	// User runs the process ("" the image's); WorkingDir likewise.
	User       string
	WorkingDir string
	Labels     map[string]string
	// Binds are host:container[:ro] mounts.
	Binds   []string
	Network string
	// ExtraHosts are "name:address" lines for the container's /etc/hosts
	// (not with a container: network, which shares its owner's).
	ExtraHosts []string
	// StopTimeout is how long the container gets after SIGTERM, when the
	// context of Wait ends, before SIGKILL.
	StopTimeout time.Duration
}

// ImageConfig is the part of an image's config stagehand sets when it
// commits a container (see Commit).
type ImageConfig struct {
	User       string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	Labels     map[string]string
}

// Container is a created container.
type Container struct {
	e    *Engine
	ID   string
	spec ContainerSpec
}

// Create creates a container; a container of the same name left by an
// earlier attempt is removed, and the container created again. (Asking
// the engine to remove it first would cost every container one more
// call, for a name that is almost always free.)
func (e *Engine) Create(ctx context.Context, s ContainerSpec) (*Container, error) {
	cfg := &container.Config{
		Image:        s.Image,
		Cmd:          s.Cmd,
		Env:          s.Env,
		User:         s.User,
		WorkingDir:   s.WorkingDir,
		AttachStdout: true,
		AttachStderr: true,
		Labels:       s.Labels,
	}
	if s.Entrypoint != nil {
		cfg.Entrypoint = s.Entrypoint
	}
	opts := client.ContainerCreateOptions{
		Name:       s.Name,
		Config:     cfg,
		HostConfig: &container.HostConfig{Binds: s.Binds, NetworkMode: container.NetworkMode(s.Network), ExtraHosts: s.ExtraHosts},
	}
	created, err := e.cli.ContainerCreate(ctx, opts)
	if s.Name != "" && errdefs.IsConflict(err) {
		_, _ = e.cli.ContainerRemove(context.WithoutCancel(ctx), s.Name, client.ContainerRemoveOptions{Force: true})
		created, err = e.cli.ContainerCreate(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("create container %s from %s: %w", s.Name, s.Image, err)
	}
	return &Container{e: e, ID: created.ID, spec: s}, nil
}

// Remove removes the container, even when ctx has ended.
func (c *Container) Remove(ctx context.Context) {
	_, _ = c.e.cli.ContainerRemove(context.WithoutCancel(ctx), c.ID, client.ContainerRemoveOptions{Force: true})
}

// CopyTo unpacks a tar into the container at dir. The owners of the tar's
// entries are kept.
func (c *Container) CopyTo(ctx context.Context, dir string, content io.Reader) error {
	_, err := c.e.cli.CopyToContainer(ctx, c.ID, client.CopyToContainerOptions{DestinationPath: dir, Content: content})
	if err != nil {
		return fmt.Errorf("copy into container %s: %w", c.spec.Name, err)
	}
	return nil
}

// ReadFile reads a regular file of the container's filesystem (of a
// created container too: nothing runs); ok is false when it has none.
func (c *Container) ReadFile(ctx context.Context, p string) (data []byte, ok bool, err error) {
	res, err := c.e.cli.CopyFromContainer(ctx, c.ID, client.CopyFromContainerOptions{SourcePath: p})
	if IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s of container %s: %w", p, c.spec.Name, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("read %s of container %s: %w", p, c.spec.Name, err)
		}
		if h.Typeflag == tar.TypeReg && path.Base(h.Name) == path.Base(p) {
			b, err := io.ReadAll(io.LimitReader(tr, 16<<20))
			return b, err == nil, err
		}
	}
}

// Wait starts the container with its output copied to stdout and stderr
// and answers its exit status. When ctx ends the container is stopped
// (SIGTERM, then SIGKILL after the spec's StopTimeout) and the error
// wraps ctx's cause.
func (c *Container) Wait(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	cli := c.e.cli
	keep := context.WithoutCancel(ctx)
	name := c.spec.Name
	att, err := cli.ContainerAttach(ctx, c.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return -1, fmt.Errorf("attach to container %s: %w", name, err)
	}
	defer att.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(stdout, stderr, att.Reader)
	}()

	waited := cli.ContainerWait(keep, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return -1, fmt.Errorf("start container %s: %w", name, err)
	}
	stopped := false
	var cause error
	for {
		select {
		case res := <-waited.Result:
			<-copied
			if stopped {
				return -1, fmt.Errorf("%s stopped: %w", name, cause)
			}
			if res.Error != nil && res.Error.Message != "" {
				return -1, fmt.Errorf("container %s: %s", name, res.Error.Message)
			}
			return int(res.StatusCode), nil
		case err := <-waited.Error:
			return -1, fmt.Errorf("wait for container %s: %w", name, err)
		case <-ctx.Done():
			if stopped {
				continue
			}
			stopped, cause = true, context.Cause(ctx)
			secs := int(c.spec.StopTimeout.Seconds())
			_, _ = cli.ContainerStop(keep, c.ID, client.ContainerStopOptions{Timeout: &secs})
			ctx = keep
		}
	}
}

// Commit makes an image of the container's filesystem with exactly cfg as
// its config's user, environment, entrypoint, command, working directory
// and labels (nothing of how the container was run leaks into it), the
// rest of the config coming from the container's image. It answers the
// image id.
func (c *Container) Commit(ctx context.Context, cfg ImageConfig) (string, error) {
	conf := &container.Config{
		User: cfg.User, Env: cfg.Env, Cmd: cfg.Cmd, WorkingDir: cfg.WorkingDir, Labels: cfg.Labels,
		// An empty (not nil) entrypoint is kept as it is by the engine,
		// which would otherwise take the container's.
		Entrypoint: cfg.Entrypoint,
	}
	if conf.Entrypoint == nil {
		conf.Entrypoint = []string{}
	}
	res, err := c.e.cli.ContainerCommit(ctx, c.ID, client.ContainerCommitOptions{Config: conf, NoPause: true})
	if err != nil {
		return "", fmt.Errorf("commit container %s: %w", c.spec.Name, err)
	}
	return res.ID, nil
}

// Run runs a container to its end and removes it: Create, Wait, Remove.
func (e *Engine) Run(ctx context.Context, s ContainerSpec, stdout, stderr io.Writer) (int, error) {
	c, err := e.Create(ctx, s)
	if err != nil {
		return -1, err
	}
	defer c.Remove(ctx)
	return c.Wait(ctx, stdout, stderr)
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

// Start starts the container in the background (a job's service).
func (c *Container) Start(ctx context.Context) error {
	if _, err := c.e.cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", c.spec.Name, err)
	}
	return nil
}

// ContainerState is what a started container is doing.
type ContainerState struct {
	Running  bool
	ExitCode int
	// Pid is its main process's on the engine's host (0 when stopped).
	Pid int
}

// State reads the container's state.
func (c *Container) State(ctx context.Context) (ContainerState, error) {
	res, err := c.e.cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		return ContainerState{}, fmt.Errorf("inspect container %s: %w", c.spec.Name, err)
	}
	st := res.Container.State
	if st == nil {
		return ContainerState{}, nil
	}
	return ContainerState{Running: st.Running, ExitCode: st.ExitCode, Pid: st.Pid}, nil
}

// Logs answers the last lines of the container's output (stdout and
// stderr interleaved), at most limit bytes.
func (c *Container) Logs(ctx context.Context, lines int, limit int64) (string, error) {
	rc, err := c.e.cli.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(lines)})
	if err != nil {
		return "", fmt.Errorf("logs of container %s: %w", c.spec.Name, err)
	}
	defer rc.Close()
	var out strings.Builder
	lw := &limitedWriter{w: &out, left: limit}
	_, err = stdcopy.StdCopy(lw, lw, rc)
	return out.String(), err
}

// limitedWriter keeps the first left bytes and drops the rest.
type limitedWriter struct {
	w    io.Writer
	left int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	n := len(p)
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	l.left -= int64(len(p))
	if len(p) > 0 {
		if _, err := l.w.Write(p); err != nil {
			return 0, err
		}
	}
	return n, nil
}
