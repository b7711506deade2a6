package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// BuildOptions is one build from a context.
type BuildOptions struct {
	// Context is a tar of the build context.
	Context io.Reader
	// Dockerfile is its path inside the context.
	Dockerfile string
	Args       map[string]string
	Target     string
	Labels     map[string]string
	// ExtraHosts are host:ip entries of the build's containers.
	ExtraHosts []string
	// Network is the network mode of the build's RUN containers ("" for
	// the engine's default).
	Network string
	// DockerConfig holds the logins for the FROM images.
	DockerConfig string
	// From is the image the Dockerfile starts from, when known: a stopped
	// build's RUN container (the classic builder leaves it running) is
	// removed.
	From string
	// Output receives the engine's output as it comes, line by line.
	Output io.Writer
}

// StepError is a build the engine ran and refused: a step's command
// failed, or the engine could not fetch what a step needs. Message is the
// engine's.
type StepError struct{ Message string }

func (e *StepError) Error() string { return e.Message }

// Build builds an image and answers its id.
func (e *Engine) Build(ctx context.Context, o BuildOptions) (id string, err error) {
	started := time.Now()
	defer func() {
		if ctx.Err() != nil && o.From != "" {
			e.removeContainersFrom(o.From, started)
		}
	}()
	args := map[string]*string{}
	for k, v := range o.Args {
		args[k] = &v
	}
	auths, err := buildAuths(o.DockerConfig)
	if err != nil {
		return "", err
	}
	resp, err := e.cli.ImageBuild(ctx, o.Context, client.ImageBuildOptions{
		Dockerfile:  o.Dockerfile,
		BuildArgs:   args,
		Target:      o.Target,
		Labels:      o.Labels,
		Remove:      true,
		ForceRemove: true,
		NetworkMode: o.Network,
		ExtraHosts:  o.ExtraHosts,
		AuthConfigs: auths,
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	out := o.Output
	if out == nil {
		out = io.Discard
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return "", fmt.Errorf("read the engine's output: %w", err)
		}
		if m.Error != nil {
			return "", &StepError{Message: m.Error.Message}
		}
		if m.Stream != "" {
			io.WriteString(out, m.Stream)
		}
		if m.Aux != nil {
			var aux struct{ ID string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		}
	}
	if id == "" {
		return "", errors.New("the engine named no image")
	}
	return id, nil
}

// removeContainersFrom force-removes the containers descending from image
// created since started (a stopped build's RUN container).
func (e *Engine) removeContainersFrom(image string, started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("ancestor", image)})
	if err != nil {
		return
	}
	for _, c := range list.Items {
		if time.Unix(c.Created, 0).Before(started.Add(-time.Second)) {
			continue
		}
		_, _ = e.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	}
}
