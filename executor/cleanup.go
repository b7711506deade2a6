package executor

import (
	"context"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// Job variables of cleanups. The token is never a flag of `stagehand
// cleanup` either: it would show in ps.
const (
	VarCleanupToken      = "STAGEHAND_CLEANUP_TOKEN"
	VarCleanupNamespaces = "STAGEHAND_CLEANUP_NAMESPACES"
	VarCleanupDryRun     = "STAGEHAND_CLEANUP_DRY_RUN"
)

// CleanupAction cleans the project's registry images by the git policies,
// then its stages, then this host's builder cache (scheduled pipelines).
type CleanupAction struct{}

// Check fails before anything is touched when the job lacks the token or
// the API address.
func (CleanupAction) Check(_ context.Context, a *ActionContext) error {
	if a.Job.Vars[VarCleanupToken] == "" {
		return fault.Jobf("cleanup needs %s: a project or personal access token with the api scope, as a masked CI/CD variable (the job token may not delete registry tags); nothing was deleted", VarCleanupToken)
	}
	if a.Job.Vars["CI_API_V4_URL"] == "" {
		return fault.Jobf("cleanup needs CI_API_V4_URL (GitLab sets it); nothing was deleted")
	}
	if a.Env.StagesStorage == "" {
		return fault.Jobf("cleanup needs %s: the project has no container registry", gitlab.VarStagesStorage)
	}
	_, err := jobLocks(a, "cleanup job")
	return err
}

// Perform runs the cleanup in the worker.
func (CleanupAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	return perform[request.Cleanup, struct{}](ctx, a, cleanupRequest, nil)
}

// cleanupRequest is a scheduled job's cleanup of its project.
func cleanupRequest(a *ActionContext) (request.Cleanup, error) {
	v := a.Job.Vars
	cluster, err := jobCluster(a)
	if err != nil {
		return request.Cleanup{}, err
	}
	locks, err := jobLocks(a, "cleanup job")
	if err != nil {
		return request.Cleanup{}, err
	}
	project := v["CI_PROJECT_PATH"]
	if project == "" {
		project = v["CI_PROJECT_ID"]
	}
	return request.Cleanup{
		APIURL: v["CI_API_V4_URL"], Token: v[VarCleanupToken], Project: project,
		Locks:         locks,
		StagesStorage: a.Env.StagesStorage,
		Cluster:       cluster,
		Namespaces:    request.ParseList(v[VarCleanupNamespaces]),
		Policies:      a.Env.Policies,
		Dir:           v["CI_PROJECT_DIR"],
		Vars:          v,
		DryRun:        v[VarCleanupDryRun] == "true" || v[VarCleanupDryRun] == "1",
		Engine:        a.engine(),
		Builder:       &request.BuilderLimits{ThresholdPercent: a.Settings.BuilderThreshold, MaxBytes: a.Settings.BuilderMaxBytes},
	}, nil
}
