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
	"gitlab.com/stagehand/stagehand/worker"
)

// Job variables of deploys.
const (
	VarDeployTimeout = "STAGEHAND_DEPLOY_TIMEOUT"
	VarChartDir      = "STAGEHAND_CHART_DIR"
	VarKubeconfig    = "KUBECONFIG"
	setPrefix        = "STAGEHAND_SET_"
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
	for _, v := range []string{gitlab.VarNamespace, gitlab.VarRelease} {
		if a.Env[v] == "" {
			return fault.Jobf("the job has no %s: give it an environment: (or set %s)", v, v)
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
	d, err := time.ParseDuration(v)
	if err != nil {
		if n, nerr := time.ParseDuration(v + "s"); nerr == nil {
			return n, nil // plain seconds, as werf took them
		}
		return 0, fault.Jobf("%s=%q is not a duration (e.g. 300s, 5m)", VarDeployTimeout, v)
	}
	if d <= 0 {
		return 0, fault.Jobf("%s=%q must be positive", VarDeployTimeout, v)
	}
	return d, nil
}

// Perform runs the deploy in the worker.
func (DeployAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	d, err := deployRequest(a)
	if err != nil {
		return nil, err
	}
	if d.Build, err = BuildRequest(a); err != nil {
		return nil, err
	}
	resp, err := a.Worker.Call(ctx, worker.Request{Op: worker.OpDeploy, DockerHost: a.Settings.DockerHost, DockerConfig: a.Job.DockerConfigDir(), Deploy: d})
	if err != nil {
		return nil, err
	}
	return resp.Exports, nil
}

// Perform runs the dismiss in the worker.
func (DismissAction) Perform(ctx context.Context, a *ActionContext) (map[string]string, error) {
	d, err := deployRequest(a)
	if err != nil {
		return nil, err
	}
	_, err = a.Worker.Call(ctx, worker.Request{Op: worker.OpDismiss, Deploy: d})
	return nil, err
}

func deployRequest(a *ActionContext) (*worker.Deploy, error) {
	timeout, err := deployTimeout(a)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := jobKubeconfig(a)
	if err != nil {
		return nil, err
	}
	anns, err := gitlab.ParseAnnotations(a.Env[gitlab.VarAnnotations])
	if err != nil {
		return nil, fault.Jobf("%s: %w", gitlab.VarAnnotations, err)
	}
	annotations := map[string]string{}
	for _, an := range anns {
		annotations[an.Key] = an.Value
	}
	sets := map[string]string{}
	for k, v := range a.Job.Vars {
		if strings.HasPrefix(k, setPrefix) {
			sets[k] = v
		}
	}
	v := a.Job.Vars
	return &worker.Deploy{
		Namespace: a.Env[gitlab.VarNamespace], Release: a.Env[gitlab.VarRelease],
		ChartDir: v[VarChartDir], Env: a.Env[gitlab.VarEnv], CIURL: v["CI_ENVIRONMENT_URL"],
		Kubeconfig: kubeconfig, Sets: sets, Annotations: annotations,
		Registry: v["CI_REGISTRY"], DeployUser: v["CI_DEPLOY_USER"], DeployPassword: v["CI_DEPLOY_PASSWORD"],
		PullSecretFrom: a.Settings.PullSecretFrom, Timeout: timeout,
	}, nil
}

// jobKubeconfig is the job's KUBECONFIG (a file variable, as GitLab's
// agent gives it: its contents are written into the job's private state,
// removed by cleanup), else the runner's --kubeconfig.
func jobKubeconfig(a *ActionContext) (string, error) {
	v := a.Job.Vars[VarKubeconfig]
	switch {
	case v == "":
		return a.Settings.Kubeconfig, nil
	case !strings.Contains(v, "\n") && filepath.IsAbs(v):
		if _, err := os.Stat(v); err != nil {
			return "", fault.Jobf("%s=%s: %v", VarKubeconfig, v, err)
		}
		return v, nil
	}
	dir := a.Job.StateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
		return "", fmt.Errorf("write the job's kubeconfig: %w", err)
	}
	return path, nil
}
