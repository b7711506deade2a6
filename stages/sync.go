package stages

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// Sync copies the stages req.From has and req.To lacks (by signature),
// oldest first; each storage is ":local" (the engine of req.Engine) or a
// registry repository. Each copy is complete before the next starts
// (blobs, then the manifest), so an interrupted sync is resumed by
// running it again. With req.SwitchFromLocal it moves the project off
// :local instead (see SwitchFromLocal).
func Sync(ctx context.Context, req request.StagesSync, trace io.Writer, opts ...Option) (request.SyncResult, error) {
	if req.SwitchFromLocal {
		return SwitchFromLocal(ctx, req, trace, opts...)
	}
	if req.From == req.To {
		return request.SyncResult{}, fault.Jobf("--from and --to are both %s", req.From)
	}
	s, err := openStorages(ctx, req, trace, opts)
	if err != nil {
		return request.SyncResult{}, err
	}
	defer s.close()
	from, err := s.open(req.From)
	if err != nil {
		return request.SyncResult{}, err
	}
	to, err := s.open(req.To)
	if err != nil {
		return request.SyncResult{}, err
	}
	res, _, err := copyStages(ctx, from, to, trace)
	return res, err
}

// SwitchFromLocal moves a project's stages from :local to a registry: it
// blocks later :local builds first (so none starts while the stages
// move), then copies the local stages and removes them once every one is
// in the registry.
func SwitchFromLocal(ctx context.Context, req request.StagesSync, trace io.Writer, opts ...Option) (request.SyncResult, error) {
	if req.To == "" || req.To == LocalStorageName {
		return request.SyncResult{}, fault.Jobf("--to must be a registry repository, e.g. $CI_REGISTRY_IMAGE/stages")
	}
	s, err := openStorages(ctx, req, trace, opts)
	if err != nil {
		return request.SyncResult{}, err
	}
	defer s.close()
	to, err := s.open(req.To)
	if err != nil {
		return request.SyncResult{}, err
	}
	local, err := s.local()
	if err != nil {
		return request.SyncResult{}, err
	}
	block := SwitchBlock{Dir: req.BlockDir, Project: req.Project}
	if err := block.Write(req.To); err != nil {
		return request.SyncResult{}, err
	}
	fmt.Fprintf(trace, "Blocked :local builds of %s (%s)\n", req.Project, block.Path())
	res, moved, err := copyStages(ctx, local, to, trace)
	if err != nil {
		return res, err
	}
	if err := to.Refresh(ctx); err != nil {
		return res, fault.System(err)
	}
	for _, st := range moved {
		if _, ok, _ := to.Find(ctx, st.Signature); !ok {
			return res, fault.System(fmt.Errorf("stage %s is not in %s after the sync; nothing removed", st, to))
		}
	}
	for _, st := range moved {
		if err := local.Remove(ctx, st); err != nil {
			return res, fault.System(err)
		}
	}
	fmt.Fprintf(trace, "Removed %d local stages\n", len(moved))
	fmt.Fprintf(trace, "Switched %s from :local to %s. To roll back: stagehand stages sync --from %s --to :local, then rm %s\n", req.Project, req.To, req.To, block.Path())
	return res, nil
}

// storages opens the storages of a sync: the engine once, for :local.
type storages struct {
	ctx     context.Context
	req     request.StagesSync
	trace   io.Writer
	regOpts []remote.Option
	engine  *Engine
}

func openStorages(ctx context.Context, req request.StagesSync, trace io.Writer, opts []Option) (*storages, error) {
	o := collect(opts)
	return &storages{ctx: ctx, req: req, trace: trace, regOpts: registry.Options(ctx, req.Engine.DockerConfig, o.transport)}, nil
}

func (s *storages) local() (*LocalStorage, error) {
	if s.engine == nil {
		e, err := NewEngine(s.ctx, s.req.Engine, s.trace)
		if err != nil {
			return nil, fault.System(err)
		}
		s.engine = e
	}
	return NewLocalStorage(s.engine, s.req.Project, s.regOpts), nil
}

func (s *storages) open(spec string) (Store, error) {
	if spec == LocalStorageName {
		return s.local()
	}
	st, err := NewStorage(spec, s.regOpts, s.trace)
	if err != nil {
		return nil, fault.Job(err)
	}
	return st, nil
}

func (s *storages) close() {
	if s.engine != nil {
		s.engine.Close()
	}
}

// copyStages copies what from has and to lacks, answering the counts and
// every stage of from.
func copyStages(ctx context.Context, from, to Store, trace io.Writer) (request.SyncResult, []stagesrepo.StageTag, error) {
	var res request.SyncResult
	all, err := from.All(ctx)
	if err != nil {
		return res, nil, fault.System(err)
	}
	if err := to.Refresh(ctx); err != nil {
		return res, nil, fault.System(err)
	}
	fmt.Fprintf(trace, "Syncing %d stages from %s to %s\n", len(all), from, to)
	for _, st := range all {
		if _, ok, err := to.Find(ctx, st.Signature); err != nil {
			return res, nil, fault.System(err)
		} else if ok {
			res.Present++
			continue
		}
		start := time.Now()
		if err := from.sendTo(ctx, st, to); err != nil {
			return res, nil, fault.System(fmt.Errorf("copy stage %s: %w (run the sync again to resume)", st, err))
		}
		res.Copied++
		fmt.Fprintf(trace, "Copied %s (%s)\n", st, time.Since(start).Round(time.Millisecond))
	}
	fmt.Fprintf(trace, "Sync done: %d copied, %d already in %s\n", res.Copied, res.Present, to)
	return res, all, nil
}
