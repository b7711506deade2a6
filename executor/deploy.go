package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// Job variables of deploys.
const (
	VarDeployTimeout = "STAGEHAND_DEPLOY_TIMEOUT"
	VarChartDir      = "STAGEHAND_CHART_DIR"
	VarKubeconfig    = "KUBECONFIG"
	// VarKubeContext picks a context of the job's kubeconfig (GitLab's
	// agent gives one per agent).
	VarKubeContext = "KUBE_CONTEXT"
)

// DeployAction builds the images when needed, then deploys the job's
// environment with Helm and waits until its workloads are ready.
type DeployAction struct{}

// DismissAction removes the job's environment (a stop job).
type DismissAction struct{}

// VarDeployFreeze is GitLab's: set while a deploy freeze is active.
const VarDeployFreeze = "CI_DEPLOY_FREEZE"

// Check verifies the environment's names and the deploy's settings.
func (DeployAction) Check(ctx context.Context, a *ActionContext) error {
	if a.Job.Vars[VarDeployFreeze] != "" && !a.Settings.AllowDeployFreeze {
		return fault.Jobf("GitLab says a deploy freeze is active (%s): this runner does not deploy during a freeze (an operator allows it with --allow-deploy-during-freeze)", VarDeployFreeze)
	}
	if err := (BuildAction{}).Check(ctx, a); err != nil {
		return err
	}
	return checkEnvironment(a)
}

// Check verifies the environment's names.
func (DismissAction) Check(_ context.Context, a *ActionContext) error { return checkEnvironment(a) }

func checkEnvironment(a *ActionContext) error {
	for _, v := range []struct{ name, value string }{
		{gitlab.VarNamespace, a.Env.Namespace},
		{gitlab.VarRelease, a.Env.Release},
	} {
		if v.value == "" {
			return fault.Jobf("the job has no %s: give it an environment: (or set %s)", v.name, v.name)
		}
	}
	if err := a.Settings.NamespacePolicy().Check(a.Env.Namespace, a.Env.NamespaceFrom); err != nil {
		return fault.Job(err)
	}
	if _, err := jobCluster(a); err != nil {
		return err
	}
	_, err := deployTimeout(a)
	return err
}

// owner is the project a job's deploy or dismiss acts for (its id comes
// from GitLab's job payload: see Job.Trusted).
func owner(a *ActionContext) request.Owner {
	return request.Owner{ProjectID: a.Job.Vars["CI_PROJECT_ID"], ProjectPath: a.Job.Vars["CI_PROJECT_PATH"], Adopt: a.Settings.AdoptNamespaces}
}

func deployTimeout(a *ActionContext) (time.Duration, error) {
	v := a.Job.Vars[VarDeployTimeout]
	if v == "" {
		return a.Settings.DeployTimeout, nil
	}
	d, err := request.ParseDuration(v)
	if err != nil {
		return 0, fault.Jobf("%s=%w", VarDeployTimeout, err)
	}
	return d, nil
}

// Perform runs the deploy in the worker.
func (DeployAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	return perform(ctx, a, deployRequest, request.BuildResult.Exports)
}

// Perform runs the dismiss in the worker.
func (DismissAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	return perform[request.Dismiss, struct{}](ctx, a, dismissRequest, nil)
}

// deployRequest is a job's deploy: its build, then its environment.
func deployRequest(a *ActionContext) (request.Deploy, error) {
	timeout, err := deployTimeout(a)
	if err != nil {
		return request.Deploy{}, err
	}
	cluster, err := jobCluster(a)
	if err != nil {
		return request.Deploy{}, err
	}
	build, err := buildRequest(a)
	if err != nil {
		return request.Deploy{}, err
	}
	v := a.Job.Vars
	return request.Deploy{
		Build: build,
		Environment: request.Environment{
			Name: a.Env.Environment, Namespace: a.Env.Namespace, Release: a.Env.Release, URL: v["CI_ENVIRONMENT_URL"],
		},
		ChartDir:    v[VarChartDir],
		Cluster:     cluster,
		Sets:        request.SetsFrom(v),
		Annotations: a.Env.Annotations,
		PullSecret: request.PullSecret{
			Registry: v["CI_REGISTRY"], User: v["CI_DEPLOY_USER"], Password: v["CI_DEPLOY_PASSWORD"], From: a.Settings.PullSecretFrom,
		},
		Timeout:   timeout,
		Owner:     owner(a),
		Protected: a.Settings.NamespacePolicy().Protected,
	}, nil
}

// dismissRequest is a stop job's dismiss.
func dismissRequest(a *ActionContext) (request.Dismiss, error) {
	timeout, err := deployTimeout(a)
	if err != nil {
		return request.Dismiss{}, err
	}
	cluster, err := jobCluster(a)
	if err != nil {
		return request.Dismiss{}, err
	}
	locks, err := jobLocks(a, "dismiss job")
	if err != nil {
		return request.Dismiss{}, err
	}
	return request.Dismiss{Cluster: cluster, Namespace: a.Env.Namespace, Release: a.Env.Release, Timeout: timeout,
		Owner: owner(a), Protected: a.Settings.NamespacePolicy().Protected, Locks: locks}, nil
}

// jobCluster is the job's KUBECONFIG (a file variable, as GitLab's agent
// gives it: its contents are written into the job's private state,
// removed by cleanup), else the runner's --kubeconfig.
func jobCluster(a *ActionContext) (request.Cluster, error) {
	v := a.Job.Vars[VarKubeconfig]
	cl := request.Cluster{Context: a.Job.Vars[VarKubeContext], ScanContexts: a.Settings.InUseContexts}
	switch {
	case v == "":
		cl.Kubeconfig = a.Settings.Kubeconfig
		return cl, nil
	case !strings.Contains(v, "\n") && filepath.IsAbs(v):
		// A file variable's file, which the runner writes below the
		// job's directories; never another file of the runner host
		// (another cluster's credentials).
		if !a.jobFile(v) {
			return request.Cluster{}, fault.Jobf("%s=%s is not a file of this job (a file variable): a job may not use another kubeconfig of the runner host", VarKubeconfig, v)
		}
		if _, err := os.Stat(v); err != nil {
			return request.Cluster{}, fault.Jobf("%s=%s: %v", VarKubeconfig, v, err)
		}
		cl.Kubeconfig = v
		return cl, nil
	}
	dir := a.Job.StateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return request.Cluster{}, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
		return request.Cluster{}, fmt.Errorf("write the job's kubeconfig: %w", err)
	}
	cl.Kubeconfig = path
	return cl, nil
}

// jobFile tells whether path is one of the job's own files: below its
// checkout or the checkout's temporary directory (where gitlab-runner
// writes file variables), both in the builds directory stagehand gave the
// runner for this project (not CI_PROJECT_DIR, which a job variable can
// change), or the runner's per-job TMPDIR.
func (a *ActionContext) jobFile(path string) bool {
	clean := filepath.Clean(path)
	var roots []string
	if p := a.Job.Vars["CI_PROJECT_PATH"]; p != "" && a.BuildsDir != "" {
		dir := filepath.Join(a.BuildsDir, filepath.FromSlash(p))
		roots = append(roots, dir+".tmp", dir)
	}
	roots = append(roots, a.Job.TempDir)
	for _, r := range roots {
		if r != "" && strings.HasPrefix(clean, filepath.Clean(r)+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
