package executor

import (
	"context"
	"fmt"
	"io"
	"strings"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/worker"
)

// ActionKind is what the executor does for a job around its script.
type ActionKind string

const (
	ActionNone    ActionKind = "none"
	ActionBuild   ActionKind = "build"
	ActionDeploy  ActionKind = "deploy"
	ActionDismiss ActionKind = "dismiss"
	ActionCleanup ActionKind = "cleanup"
)

// VarAction is the job variable that overrides the choice.
const VarAction = "STAGEHAND_ACTION"

var actionKinds = []ActionKind{ActionNone, ActionBuild, ActionDeploy, ActionDismiss, ActionCleanup}

// ChooseAction picks the job's action from its variables (the table in
// README.md). It is pure so that the table is tested as a table.
func ChooseAction(vars map[string]string) (ActionKind, error) {
	if v, ok := vars[VarAction]; ok && v != "" {
		for _, k := range actionKinds {
			if strings.EqualFold(v, string(k)) {
				return k, nil
			}
		}
		return "", fmt.Errorf("%s=%q is not an action: use one of %s", VarAction, v, joinKinds(actionKinds))
	}
	switch {
	// In a scheduled pipeline the job meant for it cleans; the others do
	// what they do in any pipeline (a nightly test pipeline tests).
	case vars["CI_PIPELINE_SOURCE"] == "schedule" && (vars["CI_JOB_NAME"] == "cleanup" || vars["CI_JOB_STAGE"] == "cleanup"):
		return ActionCleanup, nil
	case vars["CI_ENVIRONMENT_NAME"] != "" && vars["CI_ENVIRONMENT_ACTION"] == "stop":
		return ActionDismiss, nil
	case vars["CI_ENVIRONMENT_NAME"] != "" && isStartAction(vars["CI_ENVIRONMENT_ACTION"]):
		return ActionDeploy, nil
	case vars["CI_JOB_STAGE"] == "build":
		return ActionBuild, nil
	}
	return ActionNone, nil
}

// isStartAction: GitLab's environment actions are start (the default),
// prepare, verify, access and stop; only start deploys. prepare, verify and
// access jobs touch an environment without deploying it.
func isStartAction(a string) bool { return a == "" || a == "start" }

func joinKinds(ks []ActionKind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// Action is one kind of work the executor does for a job around its
// script: it checks in prepare what the work will need, and performs it in
// run by building the operation's request (package request) and handing
// it to stagehand-worker.
type Action interface {
	// Check runs in the prepare hook: it verifies early what Perform will
	// need (reachable services, required variables) and says what is
	// missing.
	Check(ctx context.Context, a *ActionContext) error
	// Perform runs in the run hook, before the user's script, and returns
	// the variables to export to that script (and to later stages).
	Perform(ctx context.Context, a *ActionContext) (map[string]string, error)
}

// ActionContext is what an action gets to work with.
type ActionContext struct {
	Job      *Job
	Settings *Settings
	// Env is the job's derived CI environment.
	Env gitlab.Env
	// Trace is the job's trace; write progress lines to it.
	Trace io.Writer
	// Worker runs heavy work in stagehand-worker.
	Worker worker.Client
	// Debug: the job asked for the engine's own output in its trace.
	Debug bool
	// BuildsDir is the builds directory stagehand gave the runner for
	// the job (its project's checkout is below it).
	BuildsDir string
}

// perform builds an operation's request from the job and runs it in the
// worker; the script gets exports of its result (nil: nothing).
func perform[Req worker.Operation, Res any](ctx context.Context, a *ActionContext, newRequest func(*ActionContext) (Req, error), exports func(Res) map[string]string) (map[string]string, error) {
	req, err := newRequest(a)
	if err != nil {
		return nil, err
	}
	res, err := worker.Call[Res](ctx, a.Worker, req)
	if err != nil || exports == nil {
		return nil, err
	}
	return exports(res), nil
}

// noAction is the action of jobs that only run their script.
type noAction struct{}

func (noAction) Check(context.Context, *ActionContext) error { return nil }
func (noAction) Perform(context.Context, *ActionContext) (map[string]string, error) {
	return nil, nil
}
