// Command stagehand-deploy deploys and dismisses environments (Helm and
// the Kubernetes API) for stagehand's hooks and operator commands. It is
// stagehand-worker's sibling: Helm costs every start of a program that
// links it some 70 ms, which builds, cleanups and job containers need not
// pay. Started by stagehand, never by hand (see package worker).
package main

import (
	"context"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/logs"

	"gitlab.com/stagehand/stagehand/deploy"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/worker"
)

func main() {
	logs.Warn.SetOutput(os.Stderr)
	logs.Warn.SetPrefix("Registry: ")
	logs.Warn.SetFlags(0)
	h := worker.Handlers{}
	worker.Handle(h, deployEnvironment)
	worker.Handle(h, dismiss)
	os.Exit(worker.Serve(h, os.Stdin, os.Stderr))
}

// deployEnvironment builds first (an idle build when the build job already
// published this commit), then deploys what the build published.
func deployEnvironment(ctx context.Context, req request.Deploy, trace io.Writer) (request.BuildResult, error) {
	res, err := stages.Build(ctx, req.Build, trace)
	if err != nil {
		return request.BuildResult{}, err
	}
	published := res.Published()
	if req.ChartDir == "" {
		req.ChartDir = res.ChartDir
	}
	return published, deploy.Deploy(ctx, req, deploy.Built{Images: published.Images, Project: res.Project}, trace)
}

func dismiss(ctx context.Context, req request.Dismiss, trace io.Writer) (struct{}, error) {
	return struct{}{}, deploy.Dismiss(ctx, req, trace)
}
