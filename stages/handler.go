package stages

import (
	"context"
	"fmt"
	"io"

	"gitlab.com/stagehand/stagehand/worker"
)

// Handlers are the worker operations this package serves.
func Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{worker.OpBuild: handleBuild}
}

func handleBuild(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	b := req.Build
	if b == nil {
		return worker.Response{}, fmt.Errorf("%s request without a build", worker.OpBuild)
	}
	// Locks come with package lock (next step); without them a build is
	// still correct, and may build a stage on two hosts at once.
	var locker Locker
	fmt.Fprintln(trace, "Synchronization: none (hosts may build a stage twice; readers agree on the oldest copy)")
	o := Options{
		ProjectDir: b.ProjectDir, Vars: b.Vars, Project: b.Project,
		StagesRepo: b.StagesRepo, ImagesRepo: b.ImagesRepo,
		Commit: b.Commit, CommitTime: b.CommitTime,
		Branch: b.Branch, GitTag: b.GitTag, RefSlug: b.RefSlug, TagStrategy: b.TagStrategy,
		DockerHost: req.DockerHost, Network: b.Network, DockerConfig: req.DockerConfig,
		Trace: trace,
	}
	if locker != nil {
		o.Locker = locker
	}
	res, err := Run(ctx, o)
	if err != nil {
		return worker.Response{}, err
	}
	return worker.Response{Exports: res.Exports()}, nil
}
