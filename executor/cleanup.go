package executor

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/worker"
)

// Job variables of cleanups.
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
	if a.Env[gitlab.VarStagesStorage] == "" {
		return fault.Jobf("cleanup needs %s: the project has no container registry", gitlab.VarStagesStorage)
	}
	_, err := synchronization(a)
	return err
}

// Perform runs the cleanup in the worker.
func (CleanupAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	v := a.Job.Vars
	kubeconfig, err := jobKubeconfig(a)
	if err != nil {
		return nil, err
	}
	sync, err := synchronization(a)
	if err != nil {
		return nil, err
	}
	project := v["CI_PROJECT_PATH"]
	if project == "" {
		project = v["CI_PROJECT_ID"]
	}
	var namespaces []string
	for _, ns := range strings.Split(v[VarCleanupNamespaces], ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	num := func(name string) int {
		n, _ := strconv.Atoi(a.Env[name])
		return n
	}
	host, _ := os.Hostname()
	c := &worker.Cleanup{
		APIURL: v["CI_API_V4_URL"], Token: v[VarCleanupToken], Project: project, LockProject: lockProject(v),
		StagesRepo: a.Env[gitlab.VarStagesStorage], Kubeconfig: kubeconfig, Namespaces: namespaces,
		DryRun:          v[VarCleanupDryRun] == "true" || v[VarCleanupDryRun] == "1",
		Synchronization: sync, LocksDir: a.Settings.LocksDir,
		Holder:                  fmt.Sprintf("host %s, cleanup job %s", host, v["CI_JOB_ID"]),
		GitTagLimit:             num(gitlab.VarGitTagStrategyLimit),
		GitTagExpiryDays:        num(gitlab.VarGitTagStrategyExpiryDays),
		GitCommitLimit:          num(gitlab.VarGitCommitStrategyLimit),
		GitCommitExpiryDays:     num(gitlab.VarGitCommitStrategyExpiryDays),
		SignatureLimit:          num(gitlab.VarStagesSignatureLimit),
		SignatureExpiryDays:     num(gitlab.VarStagesSignatureExpiryDays),
		ProjectDir:              v["CI_PROJECT_DIR"],
		Vars:                    v,
		BuilderThresholdPercent: a.Settings.BuilderThreshold,
		BuilderMaxBytes:         a.Settings.BuilderMaxBytes,
	}
	_, err = a.Worker.Call(ctx, worker.Request{Op: worker.OpCleanup, DockerHost: a.Settings.DockerHost, DockerConfig: a.Job.DockerConfigDir(), Cleanup: c})
	return nil, err
}
