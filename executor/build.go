package executor

import (
	"context"
	"fmt"
	"os"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/worker"
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
	for _, v := range []string{gitlab.VarStagesStorage, gitlab.VarImagesRepo} {
		if a.Env[v] == "" {
			return fault.Jobf("the build needs %s: the project has no container registry (CI_REGISTRY_IMAGE is empty); enable it or set %s on the job", v, v)
		}
	}
	if _, err := synchronization(a); err != nil {
		return err
	}
	return nil
}

// Perform runs the build in the worker.
func (BuildAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	req, err := BuildRequest(a)
	if err != nil {
		return nil, err
	}
	resp, err := a.Worker.Call(ctx, worker.Request{
		Op:           worker.OpBuild,
		DockerHost:   a.Settings.DockerHost,
		DockerConfig: a.Job.DockerConfigDir(),
		Build:        req,
	})
	if err != nil {
		return nil, err
	}
	return resp.Exports, nil
}

// synchronization is the job's choice, else the runner's; "none" turns
// locking off.
func synchronization(a *ActionContext) (string, error) {
	s := a.Settings.Synchronization
	if v, ok := a.Job.Vars[VarSynchronization]; ok && v != "" {
		s = v
	}
	switch {
	case s == "none" || s == "":
		return "", nil
	case s == ":local":
		return s, nil
	case len(s) > len("kubernetes://") && s[:len("kubernetes://")] == "kubernetes://":
		return s, nil
	}
	return "", fault.Jobf("%s=%q: use :local, kubernetes://NAMESPACE or none", VarSynchronization, s)
}

// lockProject names the project in locks and stage labels. Builds (shared
// project lock) and cleanups (exclusive) must name it alike.
func lockProject(vars map[string]string) string {
	if p := vars["CI_PROJECT_PATH_SLUG"]; p != "" {
		return p
	}
	return vars["CI_PROJECT_NAME"]
}

// BuildRequest is the worker's build request for a job: where the project
// is, where its stages and images go, which ref it is.
func BuildRequest(a *ActionContext) (*worker.Build, error) {
	v := a.Job.Vars
	sync, err := synchronization(a)
	if err != nil {
		return nil, err
	}
	project := lockProject(v)
	ref := a.Env[gitlab.VarTagGitTag]
	if ref == "" {
		ref = a.Env[gitlab.VarTagGitBranch]
	}
	branch := ""
	if v["CI_COMMIT_TAG"] == "" {
		branch = v["CI_COMMIT_BRANCH"]
		if branch == "" {
			branch = v["CI_COMMIT_REF_NAME"]
		}
	}
	host, _ := os.Hostname()
	vars := map[string]string{}
	for k, val := range v {
		vars[k] = val
	}
	for k, val := range a.Env {
		vars[k] = val
	}
	return &worker.Build{
		ProjectDir:      v["CI_PROJECT_DIR"],
		Vars:            vars,
		Project:         project,
		StagesRepo:      a.Env[gitlab.VarStagesStorage],
		ImagesRepo:      a.Env[gitlab.VarImagesRepo],
		Commit:          v["CI_COMMIT_SHA"],
		CommitTime:      v["CI_COMMIT_TIMESTAMP"],
		Branch:          branch,
		GitTag:          v["CI_COMMIT_TAG"],
		RefSlug:         ref,
		TagStrategy:     a.Env[gitlab.VarTagStrategy],
		Network:         a.Settings.DockerNetwork,
		Synchronization: sync,
		Kubeconfig:      a.Settings.Kubeconfig,
		LocksDir:        a.Settings.LocksDir,
		BlockDir:        a.Settings.BlockDir,
		Holder:          fmt.Sprintf("host %s, job %s", host, v["CI_JOB_ID"]),
	}, nil
}
