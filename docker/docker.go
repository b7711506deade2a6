// Package docker is stagehand's client of a runner host's Docker Engine:
// images (inspect, pull, push, tag, list, remove), builds from a context
// and a Dockerfile, and containers (run one to its end, remove by label).
// Builds (package stages), the builder cleanup and job containers use it;
// its API speaks in its own types, so that no caller handles the engine
// API's. Only the stagehand-worker program links it: see package worker.
package docker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/dockercfg"
)

// pingTimeout bounds the reachability check, so that a dead engine fails
// the job in seconds instead of hanging the hook.
const pingTimeout = 10 * time.Second

// Engine is one Docker Engine.
type Engine struct {
	cli  *client.Client
	host string
}

// Open makes a client of the engine at host without contacting it.
func Open(host string) (*Engine, error) {
	if host == "" {
		return nil, errors.New("no Docker Engine address: set --docker-host")
	}
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	return &Engine{cli: cli, host: host}, nil
}

// Connect opens the engine at host and checks that it answers.
func Connect(ctx context.Context, host string) (*Engine, error) {
	e, err := Open(host)
	if err != nil {
		return nil, err
	}
	if err := e.Ping(ctx); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// Host is the engine's address.
func (e *Engine) Host() string { return e.host }

// Close releases the client's connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Ping checks that the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if _, err := e.cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("Docker Engine at %s is unreachable (is dockerd running? set --docker-host): %w", e.host, err)
	}
	return nil
}

// IsNotFound tells the engine's answer that an image or container does
// not exist.
func IsNotFound(err error) bool { return errdefs.IsNotFound(err) }

// RegistryAuth is the engine's encoded login for the registry of ref,
// from the docker config directory dockerConfig; empty credentials when it
// has none (the push API refuses a request without any).
func RegistryAuth(dockerConfig, ref string) (string, error) {
	host := dockercfg.RegistryHost(ref)
	user, pass, ok, err := dockercfg.Credentials(dockerConfig, host)
	if err != nil {
		return "", err
	}
	if !ok {
		return authconfig.Encode(registry.AuthConfig{})
	}
	return authconfig.Encode(registry.AuthConfig{Username: user, Password: pass, ServerAddress: host})
}

// buildAuths gives the build API every login of dockerConfig: a build may
// pull FROM images of several registries.
func buildAuths(dockerConfig string) (map[string]registry.AuthConfig, error) {
	auths := map[string]registry.AuthConfig{}
	if dockerConfig == "" {
		return auths, nil
	}
	hosts, err := dockercfg.Hosts(dockerConfig)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		user, pass, ok, err := dockercfg.Credentials(dockerConfig, h)
		if err != nil {
			return nil, err
		}
		if ok {
			auths[h] = registry.AuthConfig{Username: user, Password: pass, ServerAddress: h}
		}
	}
	return auths, nil
}
