package stages

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"gitlab.com/stagehand/stagehand/fault"
)

// Locker is what a build needs of package lock: named locks across hosts,
// shared or exclusive, whose lease can be lost.
type Locker interface {
	// Acquire blocks until the lock is held or ctx ends; onWait is called
	// once when the lock is busy, with who holds it ("" when unknown).
	Acquire(ctx context.Context, name string, shared bool, onWait func(holder string)) (Lease, error)
}

// WhileHeld is ctx for work a lease protects: it ends, with the lease's
// error as its cause, when the lease is lost.
func WhileHeld(ctx context.Context, lease Lease) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-lease.Lost():
			cancel(lease.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Lease is a held lock.
type Lease interface {
	Release() error
	// Lost is closed when the lock was lost; Err says why.
	Lost() <-chan struct{}
	Err() error
}

// Outcome is what a build did for one stage.
type Outcome string

const (
	// OutcomeStored: the storage had the stage; nothing was read but its
	// tag (and, to build on it, its manifest).
	OutcomeStored Outcome = "used from storage"
	// OutcomeWaited: another host was building it; this one waited for
	// its lock and then used the stored stage.
	OutcomeWaited Outcome = "waited, then used from storage"
	// OutcomeBuilt: built here and stored.
	OutcomeBuilt Outcome = "built"
	// OutcomeDiscarded: built here, but another host stored it first; its
	// copy is used and this one dropped.
	OutcomeDiscarded Outcome = "built, another host's copy used"
)

// StageReport is one line of the build summary.
type StageReport struct {
	Stage   *Stage
	Stored  StoredStage
	Outcome Outcome
	// Pulled says the stage's parent was pulled into the engine to build
	// on it.
	Pulled   bool
	Waited   time.Duration
	Duration time.Duration
}

// Builder builds a plan's stages into the storage.
type Builder struct {
	Plan   *Plan
	Source Source
	// Storage is a registry repository (*Storage) or :local
	// (*LocalStorage), where every stage is built by the engine.
	Storage Store
	// Engine builds shell and Dockerfile stages; a build with nothing to
	// run on an engine does not contact it.
	Engine func(ctx context.Context) (*Engine, error)
	// Locker, when set, makes hosts wait for each other instead of
	// building the same stage twice. The result is correct without it.
	Locker  Locker
	Project string
	Commit  string
	// Registry holds the options of registry calls (auth, transport).
	Registry []remote.Option
	Trace    io.Writer

	engine *Engine
	// keepEngine: the engine belongs to the caller (:local storage).
	keepEngine bool
	temps      []*tempLayer
	// written holds the images this build wrote itself, so that a stage
	// built on one reads its config from memory, not the registry.
	written map[*Stage]v1.Image
	stored  map[*Stage]StoredStage
	reports []StageReport
	mu      sync.Mutex
}

// lockName is the lock of one stage of a project across hosts.
func stageLockName(project, sig string) string { return "stagehand/" + project + "/stage/" + sig }

// ProjectLockName is the lock builds hold shared and cleanup exclusive.
func ProjectLockName(project string) string { return "stagehand/" + project }

// Build makes sure every stage of the plan is in the storage. It answers
// the stored stage of each stage.
func (b *Builder) Build(ctx context.Context) (map[*Stage]StoredStage, []StageReport, error) {
	b.stored = map[*Stage]StoredStage{}
	b.written = map[*Stage]v1.Image{}
	defer func() {
		if b.engine != nil && !b.keepEngine {
			b.engine.Close()
		}
		for _, tl := range b.temps {
			tl.Remove()
		}
	}()
	if b.Locker != nil {
		lease, err := b.Locker.Acquire(ctx, ProjectLockName(b.Project), true, func(holder string) {
			fmt.Fprintf(b.Trace, "Waiting for the project lock of %s (held exclusively by %s, a cleanup)\n", b.Project, orUnknown(holder))
		})
		if err != nil {
			return nil, nil, fmt.Errorf("take the project lock of %s: %w", b.Project, err)
		}
		defer lease.Release()
		var cancel context.CancelCauseFunc
		ctx, cancel = WhileHeld(ctx, lease)
		defer cancel(nil)
	}
	if err := b.Storage.Refresh(ctx); err != nil {
		return nil, nil, fault.System(err)
	}
	for _, ip := range b.Plan.Images {
		for _, s := range ip.Stages {
			if err := b.stage(ctx, s); err != nil {
				if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && ctx.Err() != nil {
					return b.stored, b.reports, fmt.Errorf("%s: %w", s, cause)
				}
				return b.stored, b.reports, err
			}
		}
	}
	return b.stored, b.reports, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "another build"
	}
	return s
}

func (b *Builder) report(r StageReport) {
	b.mu.Lock()
	b.reports = append(b.reports, r)
	b.mu.Unlock()
	detail := ""
	if r.Pulled {
		detail = ", parent pulled"
	}
	if r.Waited > 0 {
		detail += fmt.Sprintf(", waited %s", r.Waited.Round(time.Millisecond))
	}
	fmt.Fprintf(b.Trace, "%-32s %s (%s%s) %s\n", r.Stage.String(), r.Outcome, r.Duration.Round(time.Millisecond), detail, r.Stored.Tag())
}

// stage makes one stage available in the storage.
func (b *Builder) stage(ctx context.Context, s *Stage) error {
	start := time.Now()
	if st, ok, err := b.Storage.Find(ctx, s.Signature); err != nil {
		return fault.System(err)
	} else if ok {
		if err := b.ensureEdges(ctx, s); err != nil {
			return err
		}
		b.stored[s] = st
		b.report(StageReport{Stage: s, Stored: st, Outcome: OutcomeStored, Duration: time.Since(start)})
		return nil
	}

	var waited time.Duration
	// lost turns an error of work cut short by a lost lease into that
	// loss, which is what the trace must say.
	lost := func(err error) error { return err }
	if b.Locker != nil {
		waitStart := time.Now()
		lease, st, found, busy, err := b.lockOrStored(ctx, s)
		if err != nil {
			return fmt.Errorf("take the lock of stage %s: %w", s, err)
		}
		if busy {
			waited = time.Since(waitStart)
		}
		if found {
			if err := b.ensureEdges(ctx, s); err != nil {
				return err
			}
			b.stored[s] = st
			b.report(StageReport{Stage: s, Stored: st, Outcome: OutcomeWaited, Waited: waited, Duration: time.Since(start)})
			return nil
		}
		defer lease.Release()
		lctx, cancel := WhileHeld(ctx, lease)
		defer cancel(nil)
		parent := ctx
		ctx = lctx
		lost = func(err error) error {
			if cause := context.Cause(lctx); err != nil && lctx.Err() != nil && parent.Err() == nil && cause != nil {
				return fault.System(fmt.Errorf("stage %s stopped: %w", s, cause))
			}
			return err
		}
		// Another host may have stored it while this one waited.
		if err := b.Storage.Refresh(ctx); err != nil {
			return lost(fault.System(err))
		}
		if st, ok, _ := b.Storage.Find(ctx, s.Signature); ok {
			if err := b.ensureEdges(ctx, s); err != nil {
				return lost(err)
			}
			b.stored[s] = st
			b.report(StageReport{Stage: s, Stored: st, Outcome: OutcomeWaited, Waited: waited, Duration: time.Since(start)})
			return nil
		}
	}

	fmt.Fprintf(b.Trace, "Building stage %s (%s)\n", s, short(s.Signature))
	st, outcome, pulled, err := b.build(ctx, s)
	if err != nil {
		return lost(err)
	}
	b.stored[s] = st
	b.report(StageReport{Stage: s, Stored: st, Outcome: outcome, Pulled: pulled, Waited: waited, Duration: time.Since(start)})
	return nil
}

// tempLayer makes a temporary layer file that lives until the build ends
// (layers are read again while they are pushed).
func (b *Builder) tempLayer() (*tempLayer, error) {
	tl, err := newTempLayer()
	if err == nil {
		b.mu.Lock()
		b.temps = append(b.temps, tl)
		b.mu.Unlock()
	}
	return tl, err
}

func short(sig string) string {
	if len(sig) > 12 {
		return sig[:12]
	}
	return sig
}

// labels are the labels of a stage image.
func (b *Builder) labels(s *Stage) map[string]string {
	return map[string]string{
		LabelSignature: s.Signature,
		LabelStage:     string(s.Name),
		LabelImage:     s.Image.Name,
		LabelProject:   b.Project,
		LabelCommit:    b.Commit,
	}
}

// build builds a missing stage and stores it, unless another host stored
// it meanwhile: then that copy wins and this one is dropped.
func (b *Builder) build(ctx context.Context, s *Stage) (StoredStage, Outcome, bool, error) {
	if local, ok := b.Storage.(*LocalStorage); ok {
		st, err := b.buildLocal(ctx, s, local)
		return st, OutcomeBuilt, false, err
	}
	switch s.Kind {
	case KindShell, KindDockerfile:
		return b.buildOnEngine(ctx, s)
	}
	// Built in the registry from reads alone: a failed attempt stored
	// nothing, so the whole stage may be tried again.
	var img v1.Image
	err := retryRegistry(ctx, b.Trace, "building stage "+s.String(), func() (err error) {
		img, err = b.buildRemote(ctx, s)
		return err
	})
	if err != nil {
		return StoredStage{}, "", false, err
	}
	if st, ok, err := b.storedMeanwhile(ctx, s); err != nil || ok {
		return st, OutcomeDiscarded, false, err
	}
	if err := b.ensureEdges(ctx, s); err != nil {
		return StoredStage{}, "", false, err
	}
	st, err := b.registry().Put(ctx, s.Signature, img)
	if err != nil {
		return StoredStage{}, "", false, fault.System(err)
	}
	adopted := b.adoptOldest(ctx, s, st)
	if adopted == st {
		b.mu.Lock()
		b.written[s] = img
		b.mu.Unlock()
	}
	return adopted, OutcomeBuilt, false, nil
}

// storedPoll is how often a build waiting for another's stage looks
// whether it is stored yet.
const storedPoll = 2 * time.Second

// lockOrStored takes the lock of stage s, unless, while another build
// holds it, the stage appears in the storage: then the waiter uses it
// without ever taking the lock. With dozens of builds waiting for one
// stage, each taking the lock in turn only to find the stage stored made
// dozens of writes to the locks' one ConfigMap, whose conflicts slowed
// lease renewals until leases expired.
func (b *Builder) lockOrStored(ctx context.Context, s *Stage) (lease Lease, st StoredStage, found, busy bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type taken struct {
		lease Lease
		err   error
	}
	done := make(chan taken, 1)
	waiting := make(chan struct{})
	var once sync.Once
	go func() {
		l, err := b.Locker.Acquire(actx, stageLockName(b.Project, s.Signature), false, func(holder string) {
			once.Do(func() {
				fmt.Fprintf(b.Trace, "Waiting for stage %s (%s), held by %s\n", s, short(s.Signature), orUnknown(holder))
				close(waiting)
			})
		})
		done <- taken{l, err}
	}()
	var poll <-chan time.Time
	for {
		select {
		case t := <-done:
			return t.lease, StoredStage{}, false, poll != nil, t.err
		case <-waiting:
			waiting = nil
			ticker := time.NewTicker(storedPoll)
			defer ticker.Stop()
			poll = ticker.C
		case <-poll:
			if b.Storage.Refresh(ctx) != nil {
				continue
			}
			if st, ok, _ := b.Storage.Find(ctx, s.Signature); ok {
				cancel()
				if t := <-done; t.err == nil {
					// Taken as it was given up: give it back.
					t.lease.Release()
				}
				return nil, st, true, true, nil
			}
		}
	}
}

// ensureEdges writes the edge records of a registry stage that the
// storage lacks: before the stage's tag when storing it, so that a stored
// stage always has them, and when a stage stored by an older stagehand is
// used, so that cleanup learns its dependencies from names from then on.
func (b *Builder) ensureEdges(ctx context.Context, s *Stage) error {
	st, ok := b.Storage.(*Storage)
	if !ok {
		return nil
	}
	if err := st.EnsureRecords(ctx, edgeRecords(s)); err != nil {
		return fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	return nil
}

// adoptOldest: hosts without a lock may store the same stage at the same
// time; every reader settles on the oldest copy, and so does the writer.
func (b *Builder) adoptOldest(ctx context.Context, s *Stage, ours StoredStage) StoredStage {
	if b.Locker != nil {
		return ours
	}
	if st, ok, err := b.storedMeanwhile(ctx, s); err == nil && ok {
		return st
	}
	return ours
}

// storedMeanwhile lists the storage again just before storing.
func (b *Builder) storedMeanwhile(ctx context.Context, s *Stage) (StoredStage, bool, error) {
	if err := b.Storage.Refresh(ctx); err != nil {
		return StoredStage{}, false, fault.System(err)
	}
	return b.Storage.Find(ctx, s.Signature)
}

// parentImage opens the stored parent of s (nil for a first stage).
func (b *Builder) parentImage(ctx context.Context, s *Stage) (v1.Image, error) {
	st, ok := b.stored[s.Parent]
	if !ok {
		return nil, fmt.Errorf("stage %s: its parent %s is not built", s, s.Parent)
	}
	b.mu.Lock()
	img, ok := b.written[s.Parent]
	b.mu.Unlock()
	if ok {
		return img, nil
	}
	return b.registry().Image(ctx, st)
}

// registry is the registry storage (remote stage kinds exist only there).
func (b *Builder) registry() *Storage { return b.Storage.(*Storage) }

// ensureEngine connects to the engine on first use.
func (b *Builder) ensureEngine(ctx context.Context) (*Engine, error) {
	if b.engine == nil {
		e, err := b.Engine(ctx)
		if err != nil {
			return nil, fault.System(err)
		}
		b.engine = e
	}
	return b.engine, nil
}

// buildRemote makes the stages that need no container: their layers and
// configs are written straight to the registry, on top of the parent's
// layers, which are never downloaded.
func (b *Builder) buildRemote(ctx context.Context, s *Stage) (v1.Image, error) {
	var img v1.Image
	var err error
	if s.Kind == KindBase {
		ref, perr := name.ParseReference(s.BaseRef)
		if perr != nil {
			return nil, fault.Jobf("%s: from: %q is not an image reference: %v", s.Image.describe(), s.BaseRef, perr)
		}
		img, err = remote.Image(ref, append(b.Registry, remote.WithContext(ctx))...)
		if err != nil {
			if isNotFound(err) {
				return nil, fault.Jobf("%s: base image %s not found (check from: in %s)", s.Image.describe(), s.BaseRef, b.Plan.Config.File)
			}
			return nil, fault.System(fmt.Errorf("read base image %s: %w", s.BaseRef, err))
		}
	} else {
		if img, err = b.parentImage(ctx, s); err != nil {
			return nil, fault.System(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fault.System(fmt.Errorf("read the config of %s's parent: %w", s, err))
	}
	cf = cf.DeepCopy()
	labels := b.labels(s)

	switch s.Kind {
	case KindGitArchive, KindGitPatch:
		layer, listings, err := b.gitLayer(s, cf.Config.Labels)
		if err != nil {
			return nil, err
		}
		if layer != nil {
			if img, cf, err = appendLayer(img, layer, s); err != nil {
				return nil, err
			}
		}
		for k, v := range listings {
			labels[k] = v
		}
	case KindImports:
		layer, err := b.importLayer(ctx, s)
		if err != nil {
			return nil, err
		}
		if img, cf, err = appendLayer(img, layer, s); err != nil {
			return nil, err
		}
	case KindDocker:
		applyDocker(&cf.Config, s.Image.Docker)
	}
	cf.Config.Labels = mergeLabels(cf.Config.Labels, labels)
	return mutate.ConfigFile(img, cf)
}

// appendLayer puts a stage's layer on img and answers the new image with a
// copy of its config to change.
func appendLayer(img v1.Image, layer v1.Layer, s *Stage) (v1.Image, *v1.ConfigFile, error) {
	img, err := mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.DockerLayer,
		History: v1.History{CreatedBy: "stagehand " + string(s.Name), Created: v1.Time{Time: layerTime}}})
	if err != nil {
		return nil, nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	return img, cf.DeepCopy(), nil
}

// gitLayer writes the layer that brings the image's git files (as its
// labels list them) up to the current tree, and the new listing labels.
// nil layer: nothing changed.
func (b *Builder) gitLayer(s *Stage, parentLabels map[string]string) (v1.Layer, map[string]string, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	n, listings, err := b.gitPatchInto(tw, s, parentLabels)
	if err == nil {
		err = tw.Close()
	}
	if err != nil || n == 0 {
		return nil, listings, err
	}
	l, err := tl.Layer()
	return l, listings, err
}

// gitPatchInto writes, for every git mapping of the image, the files that
// differ from the listing in parentLabels, and whiteouts for removed files.
// It answers the number of entries and the new listing labels.
func (b *Builder) gitPatchInto(tw *tarWriter, s *Stage, parentLabels map[string]string) (int, map[string]string, error) {
	listings := map[string]string{}
	total := 0
	for i := range s.Image.Git {
		n, listing, _, _, _, err := b.mappingPatch(tw, s, i, parentLabels, true)
		if err != nil {
			return 0, nil, err
		}
		total += n
		listings[fmt.Sprintf("%s%d", LabelGitPrefix, i)] = listing
	}
	return total, listings, nil
}

// mappingPatch writes the files of git mapping i that differ from the
// listing in parentLabels. Removed files become whiteouts when whiteouts
// is set, else they are answered for the stage's script to delete. It
// answers the entries written, the new listing label, the paths to delete
// and the mapping's owner ids.
func (b *Builder) mappingPatch(tw *tarWriter, s *Stage, i int, parentLabels map[string]string, whiteouts bool) (n int, listing string, remove []string, uid, gid int, err error) {
	m := s.Image.Git[i]
	old, err := decodeListing(parentLabels[fmt.Sprintf("%s%d", LabelGitPrefix, i)])
	if err != nil {
		return 0, "", nil, 0, 0, fault.System(fmt.Errorf("stage %s: the parent's %w", s, err))
	}
	files := b.Plan.Git[s.Image][i]
	patch := diffListing(old, files)
	if uid, err = ownerID(m.Owner, "owner"); err == nil {
		gid, err = ownerID(m.Group, "group")
	}
	if err != nil {
		return 0, "", nil, 0, 0, fault.Job(&ConfigError{File: b.Plan.Config.File, Line: m.Line, Msg: err.Error()})
	}
	tw.setOwner(uid, gid, m.To)
	if err := writeGitFiles(tw, b.Source, patch.Write); err != nil {
		return 0, "", nil, 0, 0, fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	n = len(patch.Write)
	for _, r := range patch.Remove {
		if !whiteouts {
			remove = append(remove, r)
			continue
		}
		if err := tw.whiteout(r); err != nil {
			return 0, "", nil, 0, 0, err
		}
		n++
	}
	return n, listingOf(files).encode(), remove, uid, gid, nil
}

// importLayer is the layer of an import stage: the stored one of its
// import key when an earlier build made it (a new parent does not change
// the imported files), else made from the source stages, which downloads
// their layers, and stored.
func (b *Builder) importLayer(ctx context.Context, s *Stage) (v1.Layer, error) {
	if l, ok, err := b.registry().ImportLayer(ctx, s.ImportKey); err != nil {
		return nil, fault.System(err)
	} else if ok {
		fmt.Fprintf(b.Trace, "Reusing the import layer of %s (%s)\n", s, short(s.ImportKey))
		return l, nil
	}
	l, err := b.extractImports(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := b.registry().PutImportLayer(ctx, s.ImportKey, l); err != nil {
		return nil, fault.System(err)
	}
	return l, nil
}

// extractImports copies the imported paths out of the source stages.
func (b *Builder) extractImports(ctx context.Context, s *Stage) (v1.Layer, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	for i, im := range s.Imports {
		src := b.stored[s.ImportSource[i]]
		img, err := b.registry().Image(ctx, src)
		if err != nil {
			return nil, fault.System(err)
		}
		uid, err := ownerID(im.Owner, "owner")
		if err == nil {
			var gid int
			gid, err = ownerID(im.Group, "group")
			tw.setOwner(uid, gid, im.To)
		}
		if err != nil {
			return nil, fault.Job(&ConfigError{File: b.Plan.Config.File, Line: im.Line, Msg: err.Error()})
		}
		n, err := copyImport(tw, mutate.Extract(img), im)
		if err != nil {
			return nil, fault.System(fmt.Errorf("stage %s: import %s from %s: %w", s, im.Add, s.ImportSource[i], err))
		}
		if n == 0 {
			return nil, fault.Jobf("%s:%d: import: nothing at %s in %s", b.Plan.Config.File, im.Line, im.Add, s.ImportSource[i].Image.describe())
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tl.Layer()
}

// copyImport writes the entries of a flattened filesystem that lie under
// im.Add (and pass its path filters) at im.To.
func copyImport(tw *tarWriter, fs io.ReadCloser, im Import) (int, error) {
	defer fs.Close()
	tr := tar.NewReader(fs)
	add := path.Clean(im.Add)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		p := path.Clean("/" + h.Name)
		var rel string
		switch {
		case p == add:
			rel = ""
		case add == "/" || strings.HasPrefix(p, add+"/"):
			rel = strings.TrimPrefix(strings.TrimPrefix(p, add), "/")
		default:
			continue
		}
		if rel != "" {
			if len(im.IncludePaths) > 0 && !anyGlob(im.IncludePaths, rel) {
				continue
			}
			if anyGlob(im.ExcludePaths, rel) {
				continue
			}
		}
		dest := path.Join(im.To, rel)
		out := *h
		out.Name = strings.TrimPrefix(dest, "/")
		if h.Typeflag == tar.TypeDir {
			out.Name += "/"
		}
		out.Uid, out.Gid, out.Uname, out.Gname = tw.uid, tw.gid, "", ""
		if h.Typeflag == tar.TypeLink {
			// Hard links name a path in the source; inside the import they
			// keep their place relative to it.
			target := path.Clean("/" + h.Linkname)
			if !strings.HasPrefix(target, add+"/") && target != add {
				continue
			}
			out.Linkname = strings.TrimPrefix(path.Join(im.To, strings.TrimPrefix(target, add)), "/")
		}
		if h.Typeflag == tar.TypeDir {
			if tw.dirs[dest] {
				continue
			}
			tw.dirs[dest] = true
		}
		if err := tw.ensureDirs(dest); err != nil {
			return n, err
		}
		if err := tw.tw.WriteHeader(&out); err != nil {
			return n, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw.tw, tr); err != nil {
				return n, err
			}
		}
		n++
	}
}

// applyDocker applies the docker: directives to an image config.
func applyDocker(c *v1.Config, d Docker) {
	for _, kv := range d.Env {
		prefix := kv.Key + "="
		replaced := false
		for i, e := range c.Env {
			if strings.HasPrefix(e, prefix) {
				c.Env[i], replaced = prefix+kv.Value, true
			}
		}
		if !replaced {
			c.Env = append(c.Env, prefix+kv.Value)
		}
	}
	if len(d.Label) > 0 && c.Labels == nil {
		c.Labels = map[string]string{}
	}
	for _, kv := range d.Label {
		c.Labels[kv.Key] = kv.Value
	}
	for _, p := range d.Expose {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		c.ExposedPorts[p] = struct{}{}
	}
	for _, v := range d.Volume {
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[v] = struct{}{}
	}
	if d.Workdir != "" {
		c.WorkingDir = d.Workdir
	}
	if d.User != "" {
		c.User = d.User
	}
	if d.Entrypoint != nil {
		c.Entrypoint = d.Entrypoint
		if d.Cmd == nil {
			c.Cmd = nil // as in a Dockerfile: a new ENTRYPOINT resets CMD
		}
	}
	if d.Cmd != nil {
		c.Cmd = d.Cmd
	}
}

// buildOnEngine builds shell and Dockerfile stages in the host's engine.
func (b *Builder) buildOnEngine(ctx context.Context, s *Stage) (StoredStage, Outcome, bool, error) {
	e, err := b.ensureEngine(ctx)
	if err != nil {
		return StoredStage{}, "", false, err
	}
	labels := b.labels(s)
	var id string
	pulled := false
	if s.Kind == KindDockerfile {
		// The engine pulls the FROM images itself: a pull the registry
		// failed for a moment is a build to make again.
		err := retryRegistry(ctx, b.Trace, "building stage "+s.String(), func() (err error) {
			contextTar, err := b.contextTar(s)
			if err != nil {
				return err
			}
			defer contextTar.Close()
			id, err = e.BuildDockerfile(ctx, s.String(), contextTar, s.Image.Dockerfile, labels, "", b.Trace)
			return err
		})
		if err != nil {
			return StoredStage{}, "", false, err
		}
	} else {
		parent := b.Storage.EngineRef(b.stored[s.Parent])
		has, err := e.Has(ctx, parent)
		if err != nil {
			return StoredStage{}, "", false, fault.System(err)
		}
		if !has {
			start := time.Now()
			if err := e.Pull(ctx, parent); err != nil {
				return StoredStage{}, "", false, fault.System(err)
			}
			pulled = true
			fmt.Fprintf(b.Trace, "Pulled %s to build on it (%s)\n", parent, time.Since(start).Round(time.Millisecond))
		}
		contextTar, err := b.shellContext(ctx, s, parent, labels)
		if err != nil {
			return StoredStage{}, "", false, err
		}
		defer contextTar.Close()
		id, err = e.BuildDockerfile(ctx, s.String(), contextTar, &Dockerfile{Path: "Dockerfile"}, labels, parent, b.Trace)
		if err != nil {
			return StoredStage{}, "", false, err
		}
	}
	if st, ok, err := b.storedMeanwhile(ctx, s); err != nil || ok {
		return st, OutcomeDiscarded, pulled, err
	}
	if err := b.ensureEdges(ctx, s); err != nil {
		return StoredStage{}, "", pulled, err
	}
	st := b.registry().NewTag(s.Signature)
	if err := e.Push(ctx, id, b.registry().EngineRef(st)); err != nil {
		return StoredStage{}, "", pulled, fault.System(err)
	}
	b.registry().Stored(st)
	return b.adoptOldest(ctx, s, st), OutcomeBuilt, pulled, nil
}

// shellContext is the build context of a shell stage: its Dockerfile and,
// when the stage brings git files up to date, each mapping's changed files
// (files removed from the tree are deleted by the script). The new git
// listings go into labels.
func (b *Builder) shellContext(ctx context.Context, s *Stage, parent string, labels map[string]string) (io.ReadCloser, error) {
	parentLabels, parentUser, err := b.parentConfig(ctx, parent)
	if err != nil {
		return nil, err
	}
	tl, err := b.tempLayer()
	if err != nil {
		return nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	var copies []contextCopy
	var remove []string
	if s.SyncGit {
		if copies, remove, err = b.gitContext(tw, s, parentLabels, labels); err != nil {
			return nil, err
		}
	}
	dockerfile := shellDockerfile(parent, parentUser, shellScript(s.Commands, remove), copies)
	if err := tw.raw("Dockerfile", []byte(dockerfile)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tl.Reader()
}

// parentConfig reads the labels and user of a stage image in the engine.
func (b *Builder) parentConfig(ctx context.Context, ref string) (map[string]string, string, error) {
	inspect, err := b.engine.cli().ImageInspect(ctx, ref)
	if err != nil {
		return nil, "", fault.System(fmt.Errorf("inspect %s: %w", ref, err))
	}
	if inspect.Config == nil {
		return nil, "", nil
	}
	return inspect.Config.Labels, inspect.Config.User, nil
}

// gitContext writes into a build context, under git<i>/, each mapping's
// files that differ from the parent's listing, and puts the new listings
// into labels. It answers the context's COPY sources and the paths the
// stage must delete (a Dockerfile cannot express whiteouts).
func (b *Builder) gitContext(tw *tarWriter, s *Stage, parentLabels, labels map[string]string) ([]contextCopy, []string, error) {
	var copies []contextCopy
	var remove []string
	for i := range s.Image.Git {
		dir := fmt.Sprintf("git%d", i)
		tw.setPrefix(dir + "/")
		n, listing, rm, uid, gid, err := b.mappingPatch(tw, s, i, parentLabels, false)
		if err != nil {
			return nil, nil, err
		}
		if n > 0 {
			copies = append(copies, contextCopy{Dir: dir, UID: uid, GID: gid})
		}
		remove = append(remove, rm...)
		labels[fmt.Sprintf("%s%d", LabelGitPrefix, i)] = listing
	}
	tw.setPrefix("")
	return copies, remove, nil
}

// contextTar is a Dockerfile image's build context: the project's files
// under its context directory. (Temporary files go when the build ends.)
func (b *Builder) contextTar(s *Stage) (io.ReadCloser, error) {
	ctxDir := strings.Trim(s.Image.Dockerfile.Context, "/")
	tl, err := b.tempLayer()
	if err != nil {
		return nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	for _, e := range b.Source.Tree() {
		rel := e.Path
		if ctxDir != "" {
			if !strings.HasPrefix(e.Path, ctxDir+"/") {
				continue
			}
			rel = e.Path[len(ctxDir)+1:]
		}
		r, err := b.Source.Open(e)
		if err != nil {
			return nil, fault.System(err)
		}
		err = tw.file("/"+rel, e.Mode, r)
		r.Close()
		if err != nil {
			return nil, fault.System(err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tl.Reader()
}
