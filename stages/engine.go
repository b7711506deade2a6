package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/dockercfg"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/worker/docker"
)

// Engine is the runner host's Docker Engine as the builder uses it: the
// local stages cache, shell stages, Dockerfile builds and pushes.
type Engine struct {
	d *docker.Docker
	// Network is the network mode of stage containers ("" for the
	// engine's default).
	Network string
	// DockerConfig holds the registry logins (the job's DOCKER_CONFIG).
	DockerConfig string
	// Trace, when set, is told of retried pushes and pulls.
	Trace io.Writer
}

// NewEngine opens the engine at host and checks that it answers.
func NewEngine(ctx context.Context, host, network, dockerConfig string) (*Engine, error) {
	d, err := docker.Connect(ctx, host, true)
	if err != nil {
		return nil, err
	}
	return &Engine{d: d, Network: network, DockerConfig: dockerConfig}, nil
}

// Close releases the engine's connections.
func (e *Engine) Close() error { return e.d.Close() }

func (e *Engine) cli() *client.Client { return e.d.Client() }

// Has tells whether the engine has an image.
func (e *Engine) Has(ctx context.Context, ref string) (bool, error) {
	_, err := e.cli().ImageInspect(ctx, ref)
	if err == nil {
		return true, nil
	}
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return false, fmt.Errorf("inspect %s on %s: %w", ref, e.d.Host(), err)
}

// Pull pulls an image into the engine, again when the registry fails
// for a moment (see retryRegistry).
func (e *Engine) Pull(ctx context.Context, ref string) error {
	return retryRegistry(ctx, e.Trace, "pulling "+ref, func() error { return e.d.Pull(ctx, ref, e.DockerConfig) })
}

// Push tags image as ref and pushes it. The engine uploads the layers the
// registry lacks, then the manifest; a push the registry failed for a
// moment is made again (what was uploaded stays uploaded).
func (e *Engine) Push(ctx context.Context, image, ref string) error {
	if _, err := e.cli().ImageTag(ctx, client.ImageTagOptions{Source: image, Target: ref}); err != nil {
		return fmt.Errorf("tag %s as %s: %w", image, ref, err)
	}
	auth, err := docker.RegistryAuth(e.DockerConfig, ref)
	if err != nil {
		return err
	}
	return retryRegistry(ctx, e.Trace, "pushing "+ref, func() error {
		resp, err := e.cli().ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
		if err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		defer resp.Close()
		if err := resp.Wait(ctx); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		return nil
	})
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

// BuildDockerfile builds a Dockerfile from a context tar with the engine's
// build API (Dockerfile images and shell stages). A failing build step is
// the job's fault.
//
// from is the image the Dockerfile starts from, when known: if the build is
// stopped (a cancelled job), the engine's classic builder leaves its RUN
// container running, so the containers descending from it that appeared
// during the build are removed.
func (e *Engine) BuildDockerfile(ctx context.Context, stage string, contextTar io.Reader, d *Dockerfile, labels map[string]string, from string, trace io.Writer) (id string, err error) {
	started := time.Now()
	defer func() {
		if ctx.Err() != nil && from != "" {
			e.removeBuildContainers(from, started)
		}
	}()
	args := map[string]*string{}
	for _, a := range d.Args {
		v := a.Value
		args[a.Key] = &v
	}
	auths := map[string]registry.AuthConfig{}
	if e.DockerConfig != "" {
		if err := addAuths(auths, e.DockerConfig); err != nil {
			return "", err
		}
	}
	resp, err := e.cli().ImageBuild(ctx, contextTar, client.ImageBuildOptions{
		Dockerfile:  d.Path,
		BuildArgs:   args,
		Target:      d.Target,
		Labels:      labels,
		Remove:      true,
		ForceRemove: true,
		NetworkMode: e.Network,
		AuthConfigs: auths,
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", stage, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return "", fmt.Errorf("build %s: read the engine's output: %w", stage, err)
		}
		if m.Error != nil {
			// A step's command failing is the job's; the engine failing to
			// fetch a FROM image from a flaky registry is not.
			if msg := m.Error.Message; !strings.HasPrefix(msg, "The command ") && transient(errors.New(msg)) {
				return "", fault.System(fmt.Errorf("stage %s: the engine could not fetch what the build needs: %s", stage, msg))
			}
			return "", fault.Jobf("stage %s failed: %s", stage, m.Error.Message)
		}
		if m.Stream != "" {
			io.WriteString(trace, m.Stream)
		}
		if m.Aux != nil {
			var aux struct{ ID string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		}
	}
	if id == "" {
		return "", fmt.Errorf("build %s: the engine named no image", stage)
	}
	return id, nil
}

// removeBuildContainers force-removes the containers descending from image
// created since started (a stopped build's RUN container).
func (e *Engine) removeBuildContainers(image string, started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := e.cli().ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("ancestor", image)})
	if err != nil {
		return
	}
	for _, c := range list.Items {
		if time.Unix(c.Created, 0).Before(started.Add(-time.Second)) {
			continue
		}
		_, _ = e.cli().ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	}
}

// addAuths gives the build API the logins it may need for FROM images.
func addAuths(auths map[string]registry.AuthConfig, dir string) error {
	hosts, err := dockercfg.Hosts(dir)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		user, pass, ok, err := dockercfg.Credentials(dir, h)
		if err != nil {
			return err
		}
		if ok {
			auths[h] = registry.AuthConfig{Username: user, Password: pass, ServerAddress: h}
		}
	}
	return nil
}
