// Package docker is stagehand's use of the Docker Engine for job images:
// pulling them and running the user's stages in job containers. Only the
// stagehand-worker program links it (see package worker for why).
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/dockercfg"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/worker"
)

// Labels on job containers, so that cleanup finds them even after a crash.
const (
	LabelJob   = "io.stagehand.job"
	labelStage = "io.stagehand.stage"
)

// dockerPingTimeout bounds the reachability check, so that a dead engine
// fails the job in seconds instead of hanging the hook.
const dockerPingTimeout = 10 * time.Second

// Docker is the host's Docker Engine as the executor uses it for job images.
type Docker struct {
	cli  *client.Client
	host string
}

// NewDocker connects to the engine at host (not yet contacted).
func NewDocker(host string) (*Docker, error) {
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	return &Docker{cli: cli, host: host}, nil
}

// Client is the engine's API client, for the packages that build images.
func (d *Docker) Client() *client.Client { return d.cli }

// Host is the engine's address.
func (d *Docker) Host() string { return d.host }

// Close releases the client's connections.
func (d *Docker) Close() error { return d.cli.Close() }

// Ping checks that the engine answers.
func (d *Docker) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerPingTimeout)
	defer cancel()
	if _, err := d.cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("Docker Engine at %s is unreachable (is dockerd running? set --docker-host): %w", d.host, err)
	}
	return nil
}

// EnsureImage makes the job image available per the pull policy. An image
// that does not exist is the job's fault; an unreachable registry is not.
func (d *Docker) EnsureImage(ctx context.Context, ref, policy, dockerConfigDir string, log io.Writer) error {
	if policy != worker.PullAlways {
		_, err := d.cli.ImageInspect(ctx, ref)
		if err == nil {
			fmt.Fprintf(log, "Using image %s (present on this host)\n", ref)
			return nil
		}
		if !errdefs.IsNotFound(err) {
			return fmt.Errorf("inspect image %s: %w", ref, err)
		}
		if policy == worker.PullNever {
			return fault.Jobf("image %s is not on this runner host and the pull policy is %q: pre-load it or change --pull-policy", ref, worker.PullNever)
		}
	}
	fmt.Fprintf(log, "Pulling image %s ...\n", ref)
	start := time.Now()
	if err := d.Pull(ctx, ref, dockerConfigDir); err != nil {
		if errdefs.IsNotFound(err) || strings.Contains(err.Error(), "manifest unknown") || strings.Contains(err.Error(), "not found") {
			return fault.Jobf("%w (check the image name in `image:`)", err)
		}
		return err
	}
	fmt.Fprintf(log, "Pulled image %s in %s\n", ref, time.Since(start).Round(time.Millisecond))
	return nil
}

// Pull has the engine pull ref with the login dockerConfigDir holds for
// its registry.
func (d *Docker) Pull(ctx context.Context, ref, dockerConfigDir string) error {
	auth, err := RegistryAuth(dockerConfigDir, ref)
	if err != nil {
		return err
	}
	resp, err := d.cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err == nil {
		err = resp.Wait(ctx)
		resp.Close()
	}
	if err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	return nil
}

// RegistryAuth returns the engine's encoded credentials for the registry of
// ref, taken from the job's docker config; empty credentials when it has
// none (the push API refuses a request without any).
func RegistryAuth(dockerConfigDir, ref string) (string, error) {
	host := dockercfg.RegistryHost(ref)
	user, pass, ok, err := dockercfg.Credentials(dockerConfigDir, host)
	if err != nil {
		return "", err
	}
	if !ok {
		return authconfig.Encode(registry.AuthConfig{})
	}
	return authconfig.Encode(registry.AuthConfig{Username: user, Password: pass, ServerAddress: host})
}

// containerShell starts the script with bash when the image has it, else
// with sh: the runner's bash scripts are written to run in both.
const containerShell = `for s in /usr/local/bin/bash /usr/bin/bash /bin/bash /bin/sh /usr/bin/sh; do if [ -x "$s" ]; then exec "$s" "$@"; fi; done; echo "stagehand: no bash or sh in the job image" >&2; exit 127`

// RunScript runs a runner script in a fresh container of image, one
// container per stage, with s.Binds mounted and the script mounted at its
// host path. It returns the script's exit status. When ctx ends, the
// container is stopped (SIGTERM, SIGKILL after s.StopTimeout) and removed.
func (d *Docker) RunScript(ctx context.Context, image, jobKey string, s worker.Script, stdout, stderr io.Writer) (int, error) {
	cli := d.cli
	name := "stagehand-" + jobKey + "-" + s.Stage
	// A leftover of an earlier attempt of this stage would block the name.
	_, _ = cli.ContainerRemove(context.WithoutCancel(ctx), name, client.ContainerRemoveOptions{Force: true})

	binds := append(append([]string{}, s.Binds...), s.Path+":"+s.Path+":ro")
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:        image,
			Cmd:          []string{"sh", "-c", containerShell, "stagehand", s.Path},
			Entrypoint:   []string{},
			Env:          s.Env,
			AttachStdout: true,
			AttachStderr: true,
			Labels:       map[string]string{LabelJob: jobKey, labelStage: s.Stage},
		},
		HostConfig: &container.HostConfig{
			Binds:       binds,
			NetworkMode: container.NetworkMode(s.Network),
		},
	})
	if err != nil {
		return -1, fmt.Errorf("create container for %s from %s: %w", s.Stage, image, err)
	}
	id := created.ID
	// Removal must happen even when the job is being cancelled.
	defer func() {
		_, _ = cli.ContainerRemove(context.WithoutCancel(ctx), id, client.ContainerRemoveOptions{Force: true})
	}()

	att, err := cli.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return -1, fmt.Errorf("attach to container %s: %w", name, err)
	}
	defer att.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(stdout, stderr, att.Reader)
	}()

	waited := cli.ContainerWait(context.WithoutCancel(ctx), id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return -1, fmt.Errorf("start container %s: %w", name, err)
	}

	stopped := false
	var cause error
	for {
		select {
		case res := <-waited.Result:
			<-copied
			if stopped {
				return -1, fmt.Errorf("%s stopped: %w", s.Stage, cause)
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
			secs := int(s.StopTimeout.Seconds())
			_, _ = cli.ContainerStop(context.WithoutCancel(ctx), id, client.ContainerStopOptions{Timeout: &secs})
			ctx = context.WithoutCancel(ctx)
		}
	}
}

// RemoveJobContainers removes every container of the job, running or not.
func (d *Docker) RemoveJobContainers(ctx context.Context, jobKey string) (int, error) {
	list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelJob+"="+jobKey),
	})
	if err != nil {
		return 0, fmt.Errorf("list containers of job %s: %w", jobKey, err)
	}
	n := 0
	var errs []error
	for _, c := range list.Items {
		if _, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID[:12], err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
