package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"gitlab.com/stagehand/stagehand/config"
	"io"
	"strings"

	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
)

// Engine is the runner host's Docker Engine as the builder uses it: the
// local stages cache, shell stages, Dockerfile builds, pushes and pulls
// (retried when the registry fails for a moment, see registry.Retry).
type Engine struct {
	*docker.Engine
	// Network is the network mode of stage containers ("" for the
	// engine's default).
	Network string
	// DockerConfig holds the registry logins (the job's DOCKER_CONFIG).
	DockerConfig string
	// Trace is told of retried pushes and pulls, and gets the builds'
	// output.
	Trace io.Writer
}

// NewEngine opens the engine of a request and checks that it answers.
func NewEngine(ctx context.Context, r request.Engine, trace io.Writer) (*Engine, error) {
	d, err := docker.Connect(ctx, r.Host)
	if err != nil {
		return nil, err
	}
	return &Engine{Engine: d, Network: r.Network, DockerConfig: r.DockerConfig, Trace: trace}, nil
}

// Has tells whether the engine has an image.
func (e *Engine) Has(ctx context.Context, ref string) (bool, error) {
	_, ok, err := e.Inspect(ctx, ref)
	return ok, err
}

// Pull pulls an image into the engine, again when the registry fails for
// a moment.
func (e *Engine) Pull(ctx context.Context, ref string) error {
	return registry.Retry(ctx, e.Trace, "pulling "+ref, func() error { return e.Engine.Pull(ctx, ref, e.DockerConfig) })
}

// Push tags image as ref and pushes it; a push the registry failed for a
// moment is made again (what was uploaded stays uploaded).
func (e *Engine) Push(ctx context.Context, image, ref string) error {
	if err := e.Tag(ctx, image, ref); err != nil {
		return err
	}
	return registry.Retry(ctx, e.Trace, "pushing "+ref, func() error { return e.Engine.Push(ctx, ref, e.DockerConfig) })
}

// imageConfig reads the labels and user of an image the engine has.
func (e *Engine) imageConfig(ctx context.Context, ref string) (map[string]string, string, error) {
	info, ok, err := e.Inspect(ctx, ref)
	if err == nil && !ok {
		err = fmt.Errorf("no image %s on %s", ref, e.Host())
	}
	if err != nil {
		return nil, "", fault.System(err)
	}
	return info.Labels, info.User, nil
}

// shellScript is how a shell stage's commands run: under sh -e, after
// removing the git files the stage's patch deletes.
func shellScript(commands, remove []string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, p := range remove {
		b.WriteString("rm -rf -- " + shellQuote(p) + "\n")
	}
	for _, c := range commands {
		b.WriteString(c + "\n")
	}
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shellDockerfile is the Dockerfile of a shell stage: the engine's builder
// runs the commands as root on the parent and commits the result with the
// parent's config intact (a container commit would merge the build
// container's entrypoint into it). copies are the context directories
// holding each git mapping's changed files, with their owners.
func shellDockerfile(parent, parentUser, script string, copies []contextCopy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "FROM %s\n", parent)
	switched := parentUser != "" && parentUser != "root" && parentUser != "0" && parentUser != "0:0"
	if switched {
		b.WriteString("USER root\n")
	}
	for _, c := range copies {
		b.WriteString(c.instruction())
	}
	run, _ := json.Marshal([]string{"/bin/sh", "-c", script})
	fmt.Fprintf(&b, "RUN %s\n", run)
	if switched {
		fmt.Fprintf(&b, "USER %s\n", parentUser)
	}
	return b.String()
}

// contextCopy is one COPY of a stage's Dockerfile: a context directory
// laid out as the image's root, with its files' owner.
type contextCopy struct {
	Dir      string
	UID, GID int
}

func (c contextCopy) instruction() string {
	return fmt.Sprintf("COPY --chown=%d:%d %s/ /\n", c.UID, c.GID, c.Dir)
}

func mergeLabels(base, add map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range add {
		out[k] = v
	}
	return out
}

// BuildDockerfile builds a Dockerfile from a context tar with the engine
// (Dockerfile images and shell stages). A failing build step is the job's
// fault; the engine failing to fetch a FROM image from a flaky registry is
// the machinery's. from is the image the Dockerfile starts from, when
// known (see docker.BuildOptions).
func (e *Engine) BuildDockerfile(ctx context.Context, stage string, contextTar io.Reader, d *config.Dockerfile, labels map[string]string, from string) (string, error) {
	args := map[string]string{}
	for _, a := range d.Args {
		args[a.Key] = a.Value
	}
	id, err := e.Build(ctx, docker.BuildOptions{
		Context: contextTar, Dockerfile: d.Path, Args: args, Target: d.Target, Labels: labels,
		Network: e.Network, DockerConfig: e.DockerConfig, From: from, Output: e.Trace,
	})
	var step *docker.StepError
	switch {
	case errors.As(err, &step):
		if msg := step.Message; !strings.HasPrefix(msg, "The command ") && registry.Transient(errors.New(msg)) {
			return "", fault.System(fmt.Errorf("stage %s: the engine could not fetch what the build needs: %s", stage, msg))
		}
		return "", fault.Jobf("stage %s failed: %s", stage, step.Message)
	case err != nil:
		return "", fmt.Errorf("build %s: %w", stage, err)
	}
	return id, nil
}
