package main

import (
	"context"
	"io"

	"gitlab.com/stagehand/stagehand/jobcontainer"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/worker"
)

// handlers are the operations the worker serves: each hands its request,
// as it came, to the package that does the work.
func handlers() worker.Handlers {
	h := worker.Handlers{}
	worker.Handle(h, build)
	worker.Handle(h, syncStages)
	worker.Handle(h, ensureJobImage)
	worker.Handle(h, jobcontainer.StartServices)
	worker.Handle(h, jobcontainer.RunScript)
	worker.Handle(h, removeJobContainers)
	return h
}

func build(ctx context.Context, req request.Build, trace io.Writer) (request.BuildResult, error) {
	res, err := stages.Build(ctx, req, trace)
	if err != nil {
		return request.BuildResult{}, err
	}
	return res.Published(), nil
}

func syncStages(ctx context.Context, req request.StagesSync, trace io.Writer) (request.SyncResult, error) {
	return stages.Sync(ctx, req, trace)
}

func ensureJobImage(ctx context.Context, req request.JobImage, trace io.Writer) (struct{}, error) {
	return struct{}{}, jobcontainer.EnsureImage(ctx, req, trace)
}

func removeJobContainers(ctx context.Context, req request.JobContainers, _ io.Writer) (request.Removed, error) {
	return jobcontainer.RemoveAll(ctx, req)
}
