// Command stagehand-deploy deploys and dismisses environments (Helm and
// the Kubernetes API), and cleans up projects (the GitLab API), for
// stagehand's hooks and operator commands. It is
// stagehand-worker's sibling: Helm costs every start of a program that
// links it some 70 ms, which builds, cleanups and job containers need not
// pay. Started by stagehand, never by hand (see package worker).
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/logs"

	"gitlab.com/stagehand/stagehand/cleanup"
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
	worker.Handle(h, render)
	worker.Handle(h, cleanupProject)
	os.Exit(worker.Serve(h, os.Stdin, os.Stderr))
}

// built runs the deploy's build (an idle one when the build job already
// published this commit) and gives the deploy the chart the config names
// when the job named none.
func built(ctx context.Context, req *request.Deploy, trace io.Writer) (request.BuildResult, deploy.Built, error) {
	res, err := stages.Build(ctx, req.Build, trace)
	if err != nil {
		return request.BuildResult{}, deploy.Built{}, err
	}
	if req.ChartDir == "" {
		req.ChartDir = res.ChartDir
	}
	published := res.Published()
	return published, deploy.Built{Images: published.Images, Project: res.Project}, nil
}

// deployEnvironment builds, then deploys what the build published.
func deployEnvironment(ctx context.Context, req request.Deploy, trace io.Writer) (request.BuildResult, error) {
	published, b, err := built(ctx, &req, trace)
	if err != nil {
		return published, err
	}
	d, err := deploy.Deploy(ctx, req, b, trace)
	published.EnvironmentURL = d.URL
	return published, err
}

// render builds, then renders what a deploy would apply.
func render(ctx context.Context, req request.Render, trace io.Writer) (request.RenderResult, error) {
	published, b, err := built(ctx, &req.Deploy, trace)
	if err != nil {
		return request.RenderResult{BuildResult: published}, err
	}
	manifest, err := deploy.Render(req.Deploy, b, trace)
	return request.RenderResult{BuildResult: published, Manifest: manifest}, err
}

// cleanupProject cleans the project's registry and this host's stage
// images.
func cleanupProject(ctx context.Context, req request.Cleanup, trace io.Writer) (struct{}, error) {
	rep, err := cleanup.Run(ctx, req, trace)
	if rep != nil {
		fmt.Fprintf(trace, "Cleanup: %d deleted in the registry, %d local stage images removed; %d GitLab API requests\n", len(rep.Deleted), len(rep.Builder.Removed), rep.APIRequests)
	}
	return struct{}{}, err
}

func dismiss(ctx context.Context, req request.Dismiss, trace io.Writer) (struct{}, error) {
	return struct{}{}, deploy.Dismiss(ctx, req, trace)
}
