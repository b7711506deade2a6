// Command stagehand-config reads and plans a project's stage config for
// stagehand: a project's environment names (for the hooks), `stagehand
// config render` and `stagehand plan`. It links werf's template functions
// (sprig) and the planner, nothing that talks to an engine, a registry or
// a cluster, so that it starts quickly; the hooks binary, which starts for
// every stage of every job, links neither. It is started by stagehand,
// never by hand: see package worker for the protocol.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	"sort"
	"strings"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/worker"
)

func main() {
	h := worker.Handlers{}
	worker.Handle(h, names)
	worker.Handle(h, render)
	worker.Handle(h, planProject)
	os.Exit(worker.Serve(h, os.Stdin, os.Stderr))
}

func names(_ context.Context, req request.ConfigNames, _ io.Writer) (request.NamesResult, error) {
	cfg, err := config.LoadConfig(req.Dir, req.Vars)
	if errors.Is(err, config.ErrNoConfig) {
		return request.NamesResult{}, nil
	}
	if err != nil {
		return request.NamesResult{}, fault.Job(err)
	}
	return request.NamesResult{Naming: cfg.Naming()}, nil
}

func render(_ context.Context, req request.ConfigRender, _ io.Writer) (request.Rendered, error) {
	src, err := config.ReadSource(req.Dir)
	if err != nil {
		return request.Rendered{}, fault.Job(err)
	}
	r, err := config.Render(src, req.Vars)
	if err != nil {
		return request.Rendered{}, fault.Job(err)
	}
	return request.Rendered{File: src.File, Text: string(r.Text), Warnings: r.Warnings}, nil
}

// planProject plans from the checkout alone: fromLatest bases and remote
// repositories are named, not resolved (that needs a registry and the
// network, which a build has).
func planProject(_ context.Context, req request.Plan, _ io.Writer) (request.PlanResult, error) {
	cfg, err := config.LoadConfig(req.Dir, req.Vars)
	if err != nil {
		return request.PlanResult{}, fault.Job(err)
	}
	src, err := plan.OpenSource(req.Dir)
	if err != nil {
		return request.PlanResult{}, fault.System(err)
	}
	defer src.Close()
	ignores, err := plan.DockerIgnores(cfg, src)
	if err != nil {
		return request.PlanResult{}, fault.System(err)
	}
	res := request.PlanResult{File: cfg.File, Project: cfg.Project, Notes: append(cfg.Warnings, cfg.Notes...)}
	bases := plan.BaseDigests{}
	for _, ref := range cfg.LatestBases() {
		bases[ref] = "unresolved"
		res.Unresolved = append(res.Unresolved, ref+" (fromLatest: its digest is the registry's)")
	}
	p, err := plan.New(cfg, plan.Inputs{Tree: src.Tree(), Bases: bases, DockerIgnore: ignores})
	if err != nil {
		return request.PlanResult{}, fault.Job(err)
	}
	for _, m := range p.Missing {
		res.Notes = append(res.Notes, "WARNING: "+strings.TrimPrefix(m, cfg.File+":")+"; a build fails until it is")
	}
	for _, k := range p.Unresolved {
		res.Unresolved = append(res.Unresolved, k+" (a remote repository: its files are fetched by the build)")
	}
	sort.Strings(res.Unresolved)
	for _, ip := range p.Images {
		pi := request.PlannedImage{Name: ip.Image.Name, Artifact: ip.Image.Artifact}
		for _, s := range ip.Stages {
			pi.Stages = append(pi.Stages, request.PlannedStage{Name: string(s.Name), Signature: s.Signature})
		}
		res.Images = append(res.Images, pi)
	}
	return res, nil
}
