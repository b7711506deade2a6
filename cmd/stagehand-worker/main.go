// Command stagehand-worker does the stagehand hooks' heavy work (the Docker
// Engine for job images, builds, deploys) in a process of its own, so that the hooks, which
// gitlab-runner starts for every stage of every job, stay quick to start.
// It is started by stagehand, never by hand: see package worker.
package main

import (
	"context"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/logs"

	"gitlab.com/stagehand/stagehand/cleanup"
	"gitlab.com/stagehand/stagehand/deploy"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/worker"
	"gitlab.com/stagehand/stagehand/worker/docker"
)

func main() {
	handlers := docker.Handlers()
	for op, h := range stages.Handlers() {
		handlers[op] = h
	}
	for op, h := range cleanup.Handlers() {
		handlers[op] = h
	}
	for op, h := range deploy.Handlers(buildImages) {
		handlers[op] = h
	}
	// go-containerregistry says when it retries a registry request; the
	// trace (stderr) is where a job's people look for why a build is slow.
	logs.Warn.SetOutput(os.Stderr)
	logs.Warn.SetPrefix("Registry: ")
	logs.Warn.SetFlags(0)
	os.Exit(worker.Serve(handlers, os.Stdin, os.Stderr))
}

// buildImages is the build a deploy makes first: an idle build when the
// build job already published this commit.
func buildImages(ctx context.Context, req worker.Request, trace io.Writer) ([]deploy.Image, map[string]string, error) {
	res, err := stages.RunRequest(ctx, req, req.Deploy.Build, trace)
	if err != nil {
		return nil, nil, err
	}
	var images []deploy.Image
	for _, p := range res.Images {
		images = append(images, deploy.Image{Name: p.Image, Repository: p.Repo, Tag: p.Tags[0], Digest: p.Digest})
	}
	return images, res.Exports(), nil
}
