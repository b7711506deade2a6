package stages

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/fault"
)

// SyncOptions copy stages between two storages: ":local" (the engine at
// DockerHost) or registry repositories.
type SyncOptions struct {
	From, To     string
	Project      string
	DockerHost   string
	DockerConfig string
	Trace        io.Writer
	Transport    http.RoundTripper
	// RemoveSource removes each local stage once it is copied (switch
	// from :local).
	RemoveSource bool
}

// SyncResult counts what a sync did.
type SyncResult struct {
	Copied, Present int
}

// stageSet is a storage as sync sees it.
type stageSet interface {
	Store
	All(ctx context.Context) ([]StoredStage, error)
}

// Sync copies the stages From has and To lacks (by signature), oldest
// first. Each copy is complete before the next starts (blobs, then the
// manifest), so an interrupted sync is resumed by running it again.
func Sync(ctx context.Context, o SyncOptions) (SyncResult, error) {
	var res SyncResult
	if o.From == o.To {
		return res, fault.Jobf("--from and --to are both %s", o.From)
	}
	regOpts := RegistryOptions(ctx, Keychain{Dir: o.DockerConfig}, o.Transport)
	var engine *Engine
	open := func(spec string) (stageSet, error) {
		if spec == LocalStorageName {
			if engine == nil {
				e, err := NewEngine(ctx, o.DockerHost, "", o.DockerConfig)
				if err != nil {
					return nil, fault.System(err)
				}
				engine = e
			}
			return NewLocalStorage(engine, o.Project), nil
		}
		st, err := NewStorage(spec, regOpts)
		if err != nil {
			return nil, fault.Job(err)
		}
		return st, nil
	}
	defer func() {
		if engine != nil {
			engine.Close()
		}
	}()
	from, err := open(o.From)
	if err != nil {
		return res, err
	}
	to, err := open(o.To)
	if err != nil {
		return res, err
	}
	stages, err := from.All(ctx)
	if err != nil {
		return res, fault.System(err)
	}
	if err := to.Refresh(ctx); err != nil {
		return res, fault.System(err)
	}
	fmt.Fprintf(o.Trace, "Syncing %d stages from %s to %s\n", len(stages), from, to)
	for _, st := range stages {
		if _, ok, err := to.Find(ctx, st.Signature); err != nil {
			return res, fault.System(err)
		} else if ok {
			res.Present++
			continue
		}
		start := time.Now()
		if err := copyStage(ctx, from, to, st, regOpts); err != nil {
			return res, fault.System(fmt.Errorf("copy stage %s: %w (run the sync again to resume)", st.Tag(), err))
		}
		res.Copied++
		fmt.Fprintf(o.Trace, "Copied %s (%s)\n", st.Tag(), time.Since(start).Round(time.Millisecond))
	}
	if o.RemoveSource {
		if local, ok := from.(*LocalStorage); ok {
			if err := to.Refresh(ctx); err != nil {
				return res, fault.System(err)
			}
			for _, st := range stages {
				if _, ok, _ := to.Find(ctx, st.Signature); !ok {
					return res, fault.System(fmt.Errorf("stage %s is not in %s after the sync; nothing removed", st.Tag(), to))
				}
			}
			for _, st := range stages {
				if err := local.Remove(ctx, st); err != nil {
					return res, fault.System(err)
				}
			}
			fmt.Fprintf(o.Trace, "Removed %d local stages\n", len(stages))
		}
	}
	fmt.Fprintf(o.Trace, "Sync done: %d copied, %d already in %s\n", res.Copied, res.Present, to)
	return res, nil
}

// copyStage copies one stage, keeping its tag (signature and timestamp).
func copyStage(ctx context.Context, from, to stageSet, st StoredStage, regOpts []remote.Option) error {
	switch src := from.(type) {
	case *Storage:
		switch dst := to.(type) {
		case *Storage:
			img, err := src.Image(ctx, st)
			if err != nil {
				return err
			}
			// Same registry: blobs are mounted; another one: streamed.
			return remote.Write(dst.Ref(st), img, append(regOpts, remote.WithContext(ctx))...)
		case *LocalStorage:
			ref := src.EngineRef(st)
			if err := dst.Engine.Pull(ctx, ref); err != nil {
				return err
			}
			if _, err := dst.Engine.cli().ImageTag(ctx, client.ImageTagOptions{Source: ref, Target: dst.EngineRef(st)}); err != nil {
				return err
			}
			_, _ = dst.Engine.cli().ImageRemove(ctx, ref, client.ImageRemoveOptions{})
			return nil
		}
	case *LocalStorage:
		if dst, ok := to.(*Storage); ok {
			ref := dst.EngineRef(st)
			if err := src.Engine.Push(ctx, src.EngineRef(st), ref); err != nil {
				return err
			}
			_, _ = src.Engine.cli().ImageRemove(ctx, ref, client.ImageRemoveOptions{})
			return nil
		}
	}
	return fmt.Errorf("cannot copy from %s to %s", from, to)
}
