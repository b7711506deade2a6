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
)

// DeployAction builds the images when needed, then deploys the job's
// environment with Helm and waits until its workloads are ready.
type DeployAction struct{}

// DismissAction removes the job's environment (a stop job).
type DismissAction struct{}

// Check verifies the environment's names and the deploy's settings.
func (DeployAction) Check(ctx context.Context, a *ActionContext) error {
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
	_, err := deployTimeout(a)
	return err
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
		Timeout: timeout,
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
	return request.Dismiss{Cluster: cluster, Namespace: a.Env.Namespace, Release: a.Env.Release, Timeout: timeout}, nil
}

// jobCluster is the job's KUBECONFIG (a file variable, as GitLab's agent
// gives it: its contents are written into the job's private state,
// removed by cleanup), else the runner's --kubeconfig.
func jobCluster(a *ActionContext) (request.Cluster, error) {
	v := a.Job.Vars[VarKubeconfig]
	switch {
	case v == "":
		return request.Cluster{Kubeconfig: a.Settings.Kubeconfig}, nil
	case !strings.Contains(v, "\n") && filepath.IsAbs(v):
		if _, err := os.Stat(v); err != nil {
			return request.Cluster{}, fault.Jobf("%s=%s: %v", VarKubeconfig, v, err)
		}
		return request.Cluster{Kubeconfig: v}, nil
	}
	dir := a.Job.StateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return request.Cluster{}, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
		return request.Cluster{}, fmt.Errorf("write the job's kubeconfig: %w", err)
	}
	return request.Cluster{Kubeconfig: path}, nil
}
