package cleanup

import (
	"context"
	"errors"
	"fmt"
	"io"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/worker"
)

// Handlers are the worker operations this package serves.
func Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{worker.OpCleanup: handleCleanup}
}

func handleCleanup(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
	c := req.Cleanup
	if c == nil {
		return worker.Response{}, fmt.Errorf("%s request without a cleanup", worker.OpCleanup)
	}
	o := Options{
		APIURL: c.APIURL, Token: c.Token, Project: c.Project, StagesRepo: c.StagesRepo,
		Kubeconfig: c.Kubeconfig, Namespaces: c.Namespaces, DryRun: c.DryRun,
		DockerConfig: req.DockerConfig, LockProject: c.LockProject, Trace: trace,
		Policies: Policies{
			GitTag:          Policy{Limit: c.GitTagLimit, ExpiryDays: c.GitTagExpiryDays},
			GitCommit:       Policy{Limit: c.GitCommitLimit, ExpiryDays: c.GitCommitExpiryDays},
			StagesSignature: Policy{Limit: c.SignatureLimit, ExpiryDays: c.SignatureExpiryDays},
		},
	}
	if c.ProjectDir != "" {
		cfg, err := stages.LoadConfig(c.ProjectDir, c.Vars)
		switch {
		case errors.Is(err, stages.ErrNoConfig):
		case err != nil:
			return worker.Response{}, fault.Job(err)
		case cfg.Cleanup != nil:
			o.Policies = Override(o.Policies, cfg.Cleanup)
			fmt.Fprintf(trace, "Cleanup policies from %s: commits %+v, stages-signature %+v\n", cfg.File, o.Policies.GitCommit, o.Policies.StagesSignature)
		}
	}
	if req.DockerHost != "" {
		o.Builder = &BuilderOptions{DockerHost: req.DockerHost, ThresholdPercent: c.BuilderThresholdPercent, MaxBytes: c.BuilderMaxBytes}
	}
	locker, err := stages.NewLocker(c.Synchronization, c.LockProject, c.LocksDir, c.Kubeconfig, c.Holder)
	if err != nil {
		return worker.Response{}, err
	}
	if locker != nil {
		defer locker.Close()
		o.Locker = locker
	}
	rep, err := Run(ctx, o)
	if rep != nil {
		fmt.Fprintf(trace, "Cleanup: %d deleted in the registry, %d local stage images removed; %d GitLab API requests\n", len(rep.Deleted), len(rep.Builder.Removed), rep.APIRequests)
	}
	return worker.Response{}, err
}

// Override applies the project's stagehand.yaml policies over ci-env's.
func Override(p Policies, c *stages.CleanupPolicies) Policies {
	one := func(dst *Policy, src stages.CleanupPolicy) {
		if src.Limit != nil {
			dst.Limit = *src.Limit
		}
		if src.ExpiryDays != nil {
			dst.ExpiryDays = *src.ExpiryDays
		}
	}
	one(&p.GitTag, c.GitTag)
	one(&p.GitCommit, c.GitCommit)
	one(&p.StagesSignature, c.StagesSignature)
	return p
}
