package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/trace"
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
	return registry.Retry(ctx, e.Trace, "pulling "+ref, func() error {
		return e.Engine.Pull(ctx, ref, e.DockerConfig, trace.NewProgress(e.Trace, "Pulling "+ref).Update)
	})
}

// Push tags image as ref and pushes it; a push the registry failed for a
// moment is made again (what was uploaded stays uploaded).
func (e *Engine) Push(ctx context.Context, image, ref string) error {
	if err := e.Tag(ctx, image, ref); err != nil {
		return err
	}
	return registry.Retry(ctx, e.Trace, "pushing "+ref, func() error {
		return e.Engine.Push(ctx, ref, e.DockerConfig, trace.NewProgress(e.Trace, "Pushing "+ref).Update)
	})
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

// dockerfileBuild is one build of a Dockerfile with the engine.
type dockerfileBuild struct {
	Stage   string
	Context io.Reader
	// Dockerfile is its path in Context.
	Dockerfile string
	Args       []config.KeyValue
	Target     string
	AddHost    []string
	// From is the image the Dockerfile starts from, when known (see
	// docker.BuildOptions).
	From string
}

// engineChatter are the classic builder's lines about itself, which the
// trace leaves out unless debugging: the user reads what their commands
// print.
var engineChatter = regexp.MustCompile(`^(Step \d+/\d+ : |\s*---> |Removing intermediate container |Successfully (built|tagged) )`)

// BuildDockerfile builds a Dockerfile (a Dockerfile image, or a :local
// stage). What its steps print goes to the trace, each line marked as the
// stage's; the engine's own lines only with debug. A failing step is the
// job's fault; the engine failing to fetch a FROM image from a flaky
// registry is the machinery's.
func (e *Engine) BuildDockerfile(ctx context.Context, d dockerfileBuild, debug bool) (string, error) {
	args := map[string]string{}
	for _, a := range d.Args {
		args[a.Key] = a.Value
	}
	out := trace.NewLines(e.Trace, keepLines)
	if !debug {
		out.Drop = engineChatter.MatchString
	}
	id, err := e.Build(ctx, docker.BuildOptions{
		Context: d.Context, Dockerfile: d.Dockerfile, Args: args, Target: d.Target, ExtraHosts: d.AddHost,
		Network: e.Network, DockerConfig: e.DockerConfig, From: d.From, Output: out,
	})
	out.Flush()
	var step *docker.StepError
	switch {
	case errors.As(err, &step):
		if msg := step.Message; !strings.HasPrefix(msg, "The command ") && registry.Transient(errors.New(msg)) {
			return "", fault.System(fmt.Errorf("stage %s: the engine could not fetch what the build needs: %s", d.Stage, msg))
		}
		return "", fault.Job(&StageFailure{Stage: d.Stage, Message: step.Message, Last: out.Last()})
	case err != nil:
		return "", fmt.Errorf("build %s: %w", d.Stage, err)
	}
	return id, nil
}
