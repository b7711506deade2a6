package stages

import (
	"context"
	"fmt"
	"io"
	"time"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitmirror"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/request"
)

// remoteSource is a remote repository at the commit a mapping's ref is at.
type remoteSource struct {
	plan.Source
	commit string
}

// fetchRemotes brings the remote repositories of the config's git
// mappings (git: - url:) up to date in the runner's copies and opens each
// at its mapping's ref, by plan.RemoteKey. The job's token authenticates
// to the job's own GitLab, as werf 1.1's CI users relied on. What it
// answers must be closed, also with an error.
func fetchRemotes(ctx context.Context, cfg *config.Config, req request.Build, trace io.Writer) (map[string]*remoteSource, error) {
	out := map[string]*remoteSource{}
	auth := gitmirror.Auth{Host: req.Vars["CI_SERVER_HOST"], User: "gitlab-ci-token", Password: req.Vars["CI_JOB_TOKEN"]}
	for _, img := range cfg.Images {
		for _, m := range img.Git {
			if m.URL == "" {
				continue
			}
			key := plan.RemoteKey(m)
			if _, ok := out[key]; ok {
				continue
			}
			if req.Mounts.GitCache == "" {
				return out, fault.Job(&config.ConfigError{File: cfg.File, Line: m.Line, Msg: "git: url: needs the runner's --git-cache-dir"})
			}
			mirror, err := gitmirror.New(req.Mounts.GitCache, req.Project, m.URL, auth)
			if err != nil {
				return out, fault.Job(&config.ConfigError{File: cfg.File, Line: m.Line, Msg: err.Error()})
			}
			ref := gitmirror.Ref{Commit: m.Commit, Tag: m.Tag, Branch: m.Branch}
			start := time.Now()
			commit, err := mirror.Fetch(ctx, ref)
			if err != nil {
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
				return out, fault.Job(&config.ConfigError{File: cfg.File, Line: m.Line, Msg: err.Error()})
			}
			src, err := plan.OpenGitSource(mirror.Dir, commit)
			if err != nil {
				return out, fault.System(err)
			}
			out[key] = &remoteSource{Source: src, commit: commit}
			fmt.Fprintf(trace, "Remote repository %s: %s is %s (%d files, fetched in %s)\n",
				gitmirror.Redact(m.URL), ref, short(commit), len(src.Tree()), time.Since(start).Round(time.Millisecond))
		}
	}
	return out, nil
}

// sources are the remote repositories as the builder reads them.
func sources(remotes map[string]*remoteSource) map[string]plan.Source {
	out := make(map[string]plan.Source, len(remotes))
	for k, r := range remotes {
		out[k] = r
	}
	return out
}
