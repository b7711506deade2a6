package stages

import (
	"context"
	"fmt"
	"io"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/worker"
)

// Handlers are the worker operations this package serves.
func Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{
		worker.OpBuild:           handleBuild,
		worker.OpStagesSync:      handleSync,
		worker.OpSwitchFromLocal: handleSwitchFromLocal,
	}
}

func handleSync(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	o := req.Stages
	if o == nil {
		return worker.Response{}, fmt.Errorf("%s request without stages", worker.OpStagesSync)
	}
	res, err := Sync(ctx, SyncOptions{From: o.From, To: o.To, Project: o.Project, DockerHost: req.DockerHost, DockerConfig: req.DockerConfig, Trace: trace})
	return worker.Response{Copied: res.Copied, Present: res.Present}, err
}

// handleSwitchFromLocal blocks :local builds first (so none starts while
// the stages move), then copies the local stages and removes them.
func handleSwitchFromLocal(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	o := req.Stages
	if o == nil {
		return worker.Response{}, fmt.Errorf("%s request without stages", worker.OpSwitchFromLocal)
	}
	if o.To == "" || o.To == LocalStorageName {
		return worker.Response{}, fault.Jobf("--to must be a registry repository, e.g. $CI_REGISTRY_IMAGE/stages")
	}
	block := SwitchBlock{Dir: o.BlockDir, Project: o.Project}
	if err := block.Write(o.To); err != nil {
		return worker.Response{}, err
	}
	fmt.Fprintf(trace, "Blocked :local builds of %s (%s)\n", o.Project, block.Path())
	res, err := Sync(ctx, SyncOptions{From: LocalStorageName, To: o.To, Project: o.Project, DockerHost: req.DockerHost, DockerConfig: req.DockerConfig, Trace: trace, RemoveSource: true})
	if err == nil {
		fmt.Fprintf(trace, "Switched %s from :local to %s. To roll back: stagehand stages sync --from %s --to :local, then rm %s\n", o.Project, o.To, o.To, block.Path())
	}
	return worker.Response{Copied: res.Copied, Present: res.Present}, err
}

func handleBuild(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	res, err := RunRequest(ctx, req, req.Build, trace)
	if err != nil {
		return worker.Response{}, err
	}
	return worker.Response{Exports: res.Exports()}, nil
}

// RunRequest runs the build of a worker request (a build job's, or the
// one a deploy makes first).
func RunRequest(ctx context.Context, req worker.Request, b *worker.Build, trace io.Writer) (*Result, error) {
	if b == nil {
		return nil, fmt.Errorf("%s request without a build", req.Op)
	}
	locker, err := NewLocker(b.Synchronization, b.Project, b.LocksDir, b.Kubeconfig, b.Holder)
	if err != nil {
		return nil, fault.System(err)
	}
	if locker != nil {
		defer locker.Close()
		fmt.Fprintf(trace, "Synchronization: %s\n", locker.Describe())
	} else {
		fmt.Fprintln(trace, "Synchronization: none (hosts may build a stage twice; readers agree on the oldest copy)")
	}
	o := Options{
		ProjectDir: b.ProjectDir, Vars: b.Vars, Project: b.Project,
		StagesRepo: b.StagesRepo, ImagesRepo: b.ImagesRepo,
		Commit: b.Commit, CommitTime: b.CommitTime,
		Branch: b.Branch, GitTag: b.GitTag, RefSlug: b.RefSlug, TagStrategy: b.TagStrategy,
		DockerHost: req.DockerHost, Network: b.Network, DockerConfig: req.DockerConfig, BlockDir: b.BlockDir,
		Trace: trace,
	}
	if locker != nil {
		o.Locker = locker
	}
	return Run(ctx, o)
}
