package executor

import (
	"context"
	"fmt"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// VarSynchronization lets a job choose how its build synchronizes with
// other hosts (":local", "kubernetes://NAMESPACE" or "none"); the runner's
// --synchronization is the default.
const VarSynchronization = "STAGEHAND_SYNCHRONIZATION"

// BuildAction builds the project's images as stages and publishes them
// (the stagehand-worker does the work); the script gets
// STAGEHAND_IMAGE_<NAME>.
type BuildAction struct{}

// Check verifies, before the checkout, that the job knows where stages
// and images go.
func (BuildAction) Check(_ context.Context, a *ActionContext) error {
	for _, v := range []struct{ name, value string }{
		{gitlab.VarStagesStorage, a.Env.StagesStorage},
		{gitlab.VarImagesRepo, a.Env.ImagesRepo},
	} {
		if v.value == "" {
			return fault.Jobf("the build needs %s: the project has no container registry (CI_REGISTRY_IMAGE is empty); enable it or set %s on the job", v.name, v.name)
		}
	}
	_, err := jobLocks(a, "job")
	return err
}

// Perform runs the build in the worker.
func (BuildAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	return perform(ctx, a, buildRequest, request.BuildResult.Exports)
}

// jobLocks are the locks of a job's operation: the job's synchronization
// (STAGEHAND_SYNCHRONIZATION), else the runner's; what names the holder
// ("job 42", "cleanup job 7").
func jobLocks(a *ActionContext, what string) (request.Locks, error) {
	spec, name := a.Settings.Synchronization, "--synchronization"
	if v := a.Job.Vars[VarSynchronization]; v != "" {
		spec, name = v, VarSynchronization
	}
	sync, err := request.ParseSynchronization(name, spec)
	if err != nil {
		return request.Locks{}, fault.Job(err)
	}
	// A job may take fewer locks than the runner's (none, or this host's),
	// never write them elsewhere: a kubernetes:// namespace of its own
	// choosing would be written with the runner's credentials.
	if runner, err := request.ParseSynchronization("--synchronization", a.Settings.Synchronization); err == nil && sync.Kind == request.SyncKubernetes && sync != runner {
		return request.Locks{}, fault.Jobf("%s=%s: a job may choose none or :local, or the runner's own %s", VarSynchronization, spec, runner)
	}
	return request.Locks{
		Sync:    sync,
		Project: request.ProjectName(a.Job.ProjectPath()),
		Dir:     a.Settings.LocksDir,
		Cluster: request.Cluster{Kubeconfig: a.Settings.Kubeconfig},
		Holder:  request.Holder(fmt.Sprintf("%s %s", what, a.Job.Vars["CI_JOB_ID"])),
	}, nil
}

// engine is the runner's Docker Engine, with the job's logins.
func (a *ActionContext) engine() request.Engine {
	return request.Engine{Host: a.Settings.DockerHost, Network: a.Settings.DockerNetwork, DockerConfig: a.Job.DockerConfigDir()}
}

// buildRequest is a job's build: where the project is, where its stages
// and images go, which ref it is (the pipeline's).
func buildRequest(a *ActionContext) (request.Build, error) {
	v := a.Job.Vars
	locks, err := jobLocks(a, "job")
	if err != nil {
		return request.Build{}, err
	}
	ref, _ := request.RefFromCI(v)
	refSlug := a.Env.TagGitTag
	if refSlug == "" {
		refSlug = a.Env.TagGitBranch
	}
	// The config's templates see the job's variables and the derived ones.
	vars := map[string]string{}
	for k, val := range v {
		vars[k] = val
	}
	for _, ev := range a.Env.Vars() {
		vars[ev.Name] = ev.Value
	}
	return request.Build{
		Dir:           v["CI_PROJECT_DIR"],
		Vars:          vars,
		Project:       locks.Project,
		StagesStorage: a.Env.StagesStorage,
		ImagesRepo:    a.Env.ImagesRepo,
		Commit:        v["CI_COMMIT_SHA"],
		CommitTime:    v["CI_COMMIT_TIMESTAMP"],
		Ref:           ref,
		RefSlug:       refSlug,
		TagStrategy:   a.Env.TagStrategy,
		Engine:        a.engine(),
		Locks:         locks,
		BlockDir:      a.Settings.BlockDir,
		Mounts:        a.Settings.Mounts(),
		Debug:         a.Debug,
		Sections:      true,
	}, nil
}
