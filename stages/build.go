package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/lock"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
	"gitlab.com/stagehand/stagehand/trace"
)

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
	Stage   *plan.Stage
	Stored  stagesrepo.StageTag
	Outcome Outcome
	// Pulled says the stage's parent was pulled into the engine to build
	// on it.
	Pulled   bool
	Waited   time.Duration
	Duration time.Duration
}

// Builder builds a plan's stages into the storage.
type Builder struct {
	Plan   *plan.Plan
	Source plan.Source
	// Remotes are the sources of remote git mappings, by plan.RemoteKey.
	Remotes map[string]plan.Source
	// Storage is where stages are found and stored.
	Storage Store
	// Engine builds shell and Dockerfile stages; a build with nothing to
	// run on an engine does not contact it.
	Engine func(ctx context.Context) (*Engine, error)
	// Locker, when set, makes hosts wait for each other instead of
	// building the same stage twice. The result is correct without it.
	Locker  lock.Taker
	Project string
	Commit  string
	Trace   io.Writer
	// Mounts are the runner's settings of mount: directories.
	Mounts request.Mounts
	// Debug shows the engine's own output.
	Debug bool
	// Sections puts each stage's output in a collapsed section of the
	// job log.
	Sections bool
	// PublishRepo, when set, names the repository an image is published
	// to: the blobs of its last stage built in the engine are mounted
	// there while the stages after it are made (see mountAhead).
	PublishRepo func(image string) (name.Repository, bool)

	engine *Engine
	// background is work the build does beside its stages (removing
	// committed containers, mounting blobs ahead); Build waits for it.
	background sync.WaitGroup
	// ctx is Build's; mountedAhead, the images whose blobs were mounted
	// ahead.
	ctx          context.Context
	mountedAhead map[*plan.ImagePlan]bool
	// tmp holds this build's tmp_dir mounts.
	tmp string
	// keepEngine: the engine belongs to the caller (:local storage).
	keepEngine bool
	temps      []*tempLayer
	// written holds the images this build wrote itself, so that a stage
	// built on one reads its config from memory, not the registry.
	written map[*plan.Stage]v1.Image
	stored  map[*plan.Stage]stagesrepo.StageTag
	reports []StageReport
	mu      sync.Mutex
	// pushes are the engine's stages being pushed in the background;
	// pushing, their signatures; pushed, when each push ended.
	pushes  backgroundPushes
	pushing map[string]bool
	pushed  map[*plan.Stage]<-chan struct{}
	// basesPulled is closed when the base images pulled ahead of need
	// are in the engine (see pullBasesAhead).
	basesPulled chan struct{}
	// edges writes the edge records of the stages from the first one
	// missing to the last (see edgesAhead); nil until then.
	edges    *edgeWrites
	engineMu sync.Mutex
	// projectCtx, once the project lock is taken, ends when its lease is
	// lost; releaseProject gives it back.
	projectCtx     context.Context
	releaseProject func()
}

// Build makes sure every stage of the plan is in the storage. It answers
// the stored stage of each stage.
func (b *Builder) Build(ctx context.Context) (map[*plan.Stage]stagesrepo.StageTag, []StageReport, error) {
	b.stored = map[*plan.Stage]stagesrepo.StageTag{}
	b.written = map[*plan.Stage]v1.Image{}
	b.pushing = map[string]bool{}
	b.pushed = map[*plan.Stage]<-chan struct{}{}
	b.Trace = trace.Synced(b.Trace)
	b.projectCtx, b.releaseProject = nil, func() {}
	b.ctx, b.mountedAhead = ctx, map[*plan.ImagePlan]bool{}
	defer func() {
		b.background.Wait()
		if b.engine != nil && !b.keepEngine {
			b.engine.Close()
		}
		for _, tl := range b.temps {
			tl.Remove()
		}
		if b.tmp != "" {
			os.RemoveAll(b.tmp)
		}
	}()
	// The project lock goes last: pushes still going when the build stops
	// early end before it (and the engine) are given back.
	defer func() { b.releaseProject() }()
	defer b.pushes.wait()
	defer b.waitEdges()
	if err := b.Storage.Refresh(ctx); err != nil {
		return nil, nil, fault.System(err)
	}
	b.pullBasesAhead(ctx)
	defer b.waitBases()
	err := b.stages(ctx)
	if errors.Is(err, errFoundStagesGone) {
		// A cleanup deleted stages found before the project lock: look
		// again from the first stage, under the lock now.
		b.stored, b.reports = map[*plan.Stage]stagesrepo.StageTag{}, nil
		b.waitEdges()
		b.edges = nil
		fmt.Fprintln(b.Trace, "Stages found before the project lock changed in the storage meanwhile (a cleanup ran?): looking again")
		err = b.stages(b.projectCtx)
	}
	if err == nil {
		err = b.pushes.wait()
	}
	return b.stored, b.reports, err
}

// errFoundStagesGone: stages found before the project lock was taken are
// no longer stored as they were.
var errFoundStagesGone = errors.New("stages found before the project lock are gone")

// stages makes every stage of the plan available, in order. The project
// lock (shared by builds; a cleanup holds it exclusively) is taken at the
// first stage not stored: an idle build, which reads tags and manifests
// alone, takes none (two writes to the API server each way, most of an
// idle build's time). Once it is held, the stages found before it are
// looked for again.
func (b *Builder) stages(ctx context.Context) error {
	if b.projectCtx != nil {
		ctx = b.projectCtx
	}
	for _, ip := range b.Plan.Images {
		for _, s := range ip.Stages {
			err := b.pushes.failure()
			if err == nil && b.Locker != nil && b.projectCtx == nil {
				if _, ok, ferr := b.Storage.Find(ctx, s.Signature); ferr == nil && !ok {
					if ctx, err = b.takeProject(ctx); err == nil {
						err = b.foundStillStored(ctx)
					}
				}
			}
			if err == nil && b.edges == nil {
				if _, ok, ferr := b.Storage.Find(ctx, s.Signature); ferr == nil && !ok {
					b.edgesAhead(ctx, s)
				}
			}
			if err == nil {
				err = b.stage(ctx, s)
			}
			if err != nil {
				if errors.Is(err, errFoundStagesGone) {
					return err
				}
				if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && ctx.Err() != nil {
					return fmt.Errorf("%s: %w", s, cause)
				}
				return err
			}
		}
	}
	return nil
}

// takeProject takes the project lock; the context answered ends when
// its lease is lost.
func (b *Builder) takeProject(ctx context.Context) (context.Context, error) {
	lease, err := b.Locker.Take(ctx, lock.ProjectLock(b.Project), true, func(holder string) {
		fmt.Fprintf(b.Trace, "Waiting for the project lock of %s (held exclusively by %s, a cleanup)\n", b.Project, orUnknown(holder))
	})
	if err != nil {
		return ctx, fmt.Errorf("take the project lock of %s: %w", b.Project, err)
	}
	lctx, cancel := lock.WhileHeld(ctx, lease)
	b.projectCtx = lctx
	b.releaseProject = func() {
		cancel(nil)
		lease.Release()
	}
	return lctx, nil
}

// foundStillStored lists the storage again and checks the stages found
// so far are still there.
func (b *Builder) foundStillStored(ctx context.Context) error {
	if len(b.stored) == 0 {
		return nil
	}
	if err := b.Storage.Refresh(ctx); err != nil {
		return fault.System(err)
	}
	for s, st := range b.stored {
		if cur, ok, err := b.Storage.Find(ctx, s.Signature); err != nil || !ok || cur != st {
			return errFoundStagesGone
		}
	}
	return nil
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
	fmt.Fprintf(b.Trace, "%-32s %s (%s%s) %s\n", r.Stage.String(), r.Outcome, r.Duration.Round(time.Millisecond), detail, r.Stored)
}

// stage makes one stage available in the storage.
func (b *Builder) stage(ctx context.Context, s *plan.Stage) error {
	start := time.Now()
	if b.pushing[s.Signature] {
		// Another image's stage of the same signature, still being
		// pushed: its lock is this build's until then.
		if err := b.pushes.wait(); err != nil {
			return err
		}
	}
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
	release := func() {}
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
		lctx, cancel := lock.WhileHeld(ctx, lease)
		// A stage pushed in the background keeps its lock until stored.
		release = func() {
			cancel(nil)
			lease.Release()
		}
		// The lock is given back (a write to the API server) while the
		// next stage starts; Build waits for it.
		defer func() {
			give := release
			b.background.Add(1)
			go func() {
				defer b.background.Done()
				give()
			}()
		}()
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

	// The stage's own output in a section of its own, collapsed: the
	// result line after it says how it went, and a failure repeats the
	// command and its last lines below.
	header := fmt.Sprintf("Building stage %s (%s)", s, short(s.Signature))
	section := trace.SectionName("stage-" + s.String() + "-" + short(s.Signature))
	if b.Sections {
		trace.SectionStart(b.Trace, section, header, true)
	} else {
		fmt.Fprintln(b.Trace, header)
	}
	// The stage's edge records are being written (edgesAhead): they need
	// only be stored before its tag.
	edges := b.edgesOf(ctx, s)
	defer edges()
	img, pulled, err := b.make(ctx, s)
	if b.Sections {
		trace.SectionEnd(b.Trace, section)
	}
	if err != nil {
		return lost(err)
	}
	if storage, ok := b.Storage.(*Storage); ok && img.engineID != "" && b.Locker != nil {
		st, stored, err := b.pushInBackground(ctx, s, img, storage, edges, lost, release)
		if err != nil {
			return lost(err)
		}
		if stored {
			release = func() {}
		}
		b.stored[s] = st
		outcome := OutcomeBuilt
		if !stored {
			outcome = OutcomeDiscarded
		}
		b.report(StageReport{Stage: s, Stored: st, Outcome: outcome, Pulled: pulled, Waited: waited, Duration: time.Since(start)})
		return nil
	}
	st, outcome, err := b.store(ctx, s, img, edges)
	if err != nil {
		return lost(err)
	}
	if outcome == OutcomeBuilt {
		b.mountAhead(s, st)
	}
	b.stored[s] = st
	b.report(StageReport{Stage: s, Stored: st, Outcome: outcome, Pulled: pulled, Waited: waited, Duration: time.Since(start)})
	return nil
}

// pushInBackground stores a stage the engine built, as store does, but
// pushes it while the build goes on (see backgroundPushes): the engine's
// image gets the stage's tag now, so that the next stage builds on it,
// and the push, then release (the stage's lock), in the background. It
// answers the stage's tag, and whether it is this build's copy (false: a
// host stored it meanwhile, and its copy is used).
func (b *Builder) pushInBackground(ctx context.Context, s *plan.Stage, img built, storage *Storage, edges func() error, lost func(error) error, release func()) (stagesrepo.StageTag, bool, error) {
	if st, ok, err := b.storedMeanwhile(ctx, s); err != nil || ok {
		return st, false, err
	}
	if err := edges(); err != nil {
		return stagesrepo.StageTag{}, false, err
	}
	st := stagesrepo.StageTag{Signature: s.Signature, Millis: time.Now().UnixMilli()}
	if err := img.engine.Tag(ctx, img.engineID, storage.EngineRef(st)); err != nil {
		return stagesrepo.StageTag{}, false, fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	b.pushing[s.Signature] = true
	b.pushed[s] = b.pushes.add(func(earlier error) error {
		defer release()
		if earlier != nil {
			return errEarlierPushFailed
		}
		start := time.Now()
		if err := storage.putAs(ctx, st, img); err != nil {
			return lost(fault.System(fmt.Errorf("stage %s: %w", s, err)))
		}
		fmt.Fprintf(b.Trace, "%-32s stored (%s) %s\n", s.String(), time.Since(start).Round(time.Millisecond), st)
		b.mountAhead(s, st)
		return nil
	})
	return st, true, nil
}

// mountAhead starts mounting the blobs of stage s, just stored, into the
// repository its image is published to, when s is the last stage of the
// image the engine builds (or the first, when the engine builds none):
// the stages after it are made in the registry on top of its layers, and
// the publication, which mounts the final stage's blobs, then finds all
// but a few mounted. Once per image; a failure is left to the
// publication, which mounts what is missing.
func (b *Builder) mountAhead(s *plan.Stage, st stagesrepo.StageTag) {
	storage, ok := b.Storage.(*Storage)
	if !ok || b.PublishRepo == nil || s.Image.Artifact || s.Image.NotFinal {
		return
	}
	ip := b.Plan.Image(s.Image.Name)
	if ip == nil || lastEngineStage(ip.Stages) != s {
		return
	}
	repo, ok := b.PublishRepo(s.Image.Name)
	b.mu.Lock()
	done := b.mountedAhead[ip]
	b.mountedAhead[ip] = true
	b.mu.Unlock()
	if !ok || done {
		return
	}
	b.background.Add(1)
	go func() {
		defer b.background.Done()
		_ = storage.mountStage(b.ctx, repo, st)
	}()
}

// lastEngineStage is the last of stages the engine builds (shell,
// Dockerfile), or the first stage when it builds none.
func lastEngineStage(stages []*plan.Stage) *plan.Stage {
	var last *plan.Stage
	for _, s := range stages {
		if s.Kind == plan.KindShell || s.Kind == plan.KindDockerfile {
			last = s
		}
	}
	if last == nil && len(stages) > 0 {
		last = stages[0]
	}
	return last
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
func (b *Builder) labels(s *plan.Stage) map[string]string {
	return map[string]string{
		stagesrepo.LabelSignature: s.Signature,
		stagesrepo.LabelStage:     string(s.Name),
		stagesrepo.LabelImage:     s.Image.Name,
		stagesrepo.LabelProject:   b.Project,
		stagesrepo.LabelCommit:    b.Commit,
	}
}

// pullBasesAhead starts pulling into the engine the base images of the
// images whose first missing stage leads to one built in the engine: the
// stages before it are made in the registry, and the engine would pull
// the last of them, base layers and all, only once they are stored. The
// base's layers are then on their way or there: that pull does not wait
// for this one (the engine downloads a layer once for all the pulls that
// need it at the same time), and brings the new layers itself. Nothing is
// said unless it helps: a failure here is left to the pull that needs the
// image, which reports it.
func (b *Builder) pullBasesAhead(ctx context.Context) {
	b.basesPulled = make(chan struct{})
	var refs []string
	if _, registry := b.Storage.(*Storage); registry {
		for _, ip := range b.Plan.Images {
			if ref := baseToPullAhead(ctx, b.Storage, ip.Stages); ref != "" && !slices.Contains(refs, ref) {
				refs = append(refs, ref)
			}
		}
	}
	if len(refs) == 0 {
		close(b.basesPulled)
		return
	}
	go func() {
		defer close(b.basesPulled)
		e, err := b.ensureEngine(ctx)
		if err != nil {
			return
		}
		for _, ref := range refs {
			if has, err := e.Has(ctx, ref); err != nil || has {
				continue
			}
			start := time.Now()
			if e.Pull(ctx, ref) == nil {
				fmt.Fprintf(b.Trace, "Pulled base image %s ahead of the stages built on it (%s)\n", ref, time.Since(start).Round(time.Millisecond))
			}
		}
	}()
}

// baseToPullAhead is the base image of an image's stages when its first
// missing stage is made in the registry and a stage after it, before any
// Dockerfile stage, in the engine.
func baseToPullAhead(ctx context.Context, storage Store, stages []*plan.Stage) string {
	base, first := "", -1
	for i, s := range stages {
		if s.Kind == plan.KindBase {
			base = s.BaseRef
		}
		if _, ok, err := storage.Find(ctx, s.Signature); err == nil && !ok {
			first = i
			break
		}
	}
	if base == "" || first < 0 {
		return ""
	}
	for i, s := range stages[first:] {
		switch s.Kind {
		case plan.KindShell:
			if i > 0 {
				return base
			}
			return ""
		case plan.KindDockerfile:
			return ""
		}
	}
	return ""
}

// waitStored waits until the stages given (nil ones are skipped) are in
// the storage, when they are being pushed in the background. It answers
// the first push that failed.
func (b *Builder) waitStored(stages ...*plan.Stage) error {
	for _, s := range stages {
		if done, ok := b.pushed[s]; ok {
			<-done
		}
	}
	return b.pushes.failure()
}

// waitBases waits for the pulls of pullBasesAhead.
func (b *Builder) waitBases() {
	if b.basesPulled != nil {
		<-b.basesPulled
	}
}

// make builds a missing stage. Stages that run something (shell,
// Dockerfile) are built in the engine; the others the storage's way, on
// stages read from it, once the pushes under way are done.
func (b *Builder) make(ctx context.Context, s *plan.Stage) (built, bool, error) {
	switch s.Kind {
	case plan.KindShell, plan.KindDockerfile:
		return b.buildInEngine(ctx, s)
	default:
		if err := b.waitStored(append([]*plan.Stage{s.Parent}, s.ImportSource...)...); err != nil {
			return built{}, false, err
		}
		img, err := b.Storage.makeConfigStage(ctx, b, s)
		return img, false, err
	}
}

// store is the one way a built stage enters the storage: list again (a
// host without the lock may have stored it meanwhile: its copy wins),
// write the stage's edge records, store the stage (tag last), then settle
// on the oldest copy. A stage made in the registry under its lock is not
// listed again: the listing made when the lock was taken stands (a host
// without locks that stored it meanwhile leaves a second copy, as two
// such hosts do), and one more request would lengthen each such stage,
// a few requests long, by a tenth.
func (b *Builder) store(ctx context.Context, s *plan.Stage, img built, edges func() error) (stagesrepo.StageTag, Outcome, error) {
	if b.Locker == nil || img.image == nil {
		if st, ok, err := b.storedMeanwhile(ctx, s); err != nil || ok {
			return st, OutcomeDiscarded, err
		}
	}
	if err := edges(); err != nil {
		return stagesrepo.StageTag{}, "", err
	}
	st, err := b.Storage.put(ctx, s.Signature, img)
	if err != nil {
		return stagesrepo.StageTag{}, "", fault.System(err)
	}
	adopted := b.adoptOldest(ctx, s, st)
	if adopted == st && img.image != nil {
		b.mu.Lock()
		b.written[s] = img.image
		b.mu.Unlock()
	}
	return adopted, OutcomeBuilt, nil
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
func (b *Builder) lockOrStored(ctx context.Context, s *plan.Stage) (lease lock.Held, st stagesrepo.StageTag, found, busy bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type taken struct {
		lease lock.Held
		err   error
	}
	done := make(chan taken, 1)
	waiting := make(chan struct{})
	var once sync.Once
	go func() {
		l, err := b.Locker.Take(actx, lock.StageLock(b.Project, s.Signature), false, func(holder string) {
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
			return t.lease, stagesrepo.StageTag{}, false, poll != nil, t.err
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

// ensureEdges writes the edge records of a stage that the storage lacks:
// before the stage's tag when storing it, so that a stored stage always
// has them, and when a stage stored by an older stagehand is used, so that
// cleanup learns its dependencies from names from then on.
func (b *Builder) ensureEdges(ctx context.Context, s *plan.Stage) error {
	if err := b.Storage.EnsureRecords(ctx, edgeRecords(s)); err != nil {
		return fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	return nil
}

// edgeWrites are edge records being written for the stages of a plan
// from one stage on.
type edgeWrites struct {
	stages map[*plan.Stage]bool
	done   chan struct{}
	err    error
}

// edgesAhead starts writing the edge records of first, the first stage
// the storage lacks, and of every stage after it in the plan, all at once
// and while the stages are made. A stage's records need only be stored
// before its tag, and all their names are known from the plan: a stage
// made in the registry in a few requests no longer waits for its own.
// Records of stages that end up not built (the build fails, or another
// host stores them) are harmless: cleanup deletes the edge records of
// stages it finds no copy of. They are written under the project lock,
// as the stages are, so that no cleanup runs between them and the tags.
func (b *Builder) edgesAhead(ctx context.Context, first *plan.Stage) {
	w := &edgeWrites{stages: map[*plan.Stage]bool{}, done: make(chan struct{})}
	var records []string
	after := false
	for _, ip := range b.Plan.Images {
		for _, s := range ip.Stages {
			after = after || s == first
			if after {
				w.stages[s] = true
				records = append(records, edgeRecords(s)...)
			}
		}
	}
	b.edges = w
	go func() {
		defer close(w.done)
		if err := b.Storage.EnsureRecords(ctx, records); err != nil {
			w.err = fault.System(fmt.Errorf("write the edge records of the stages to build: %w", err))
		}
	}()
}

// edgesOf answers a function that waits until stage s's edge records
// are stored: those edgesAhead writes, else its own, written now.
func (b *Builder) edgesOf(ctx context.Context, s *plan.Stage) func() error {
	if w := b.edges; w != nil && w.stages[s] {
		return func() error {
			<-w.done
			return w.err
		}
	}
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = b.ensureEdges(ctx, s)
	}()
	return func() error {
		<-done
		return err
	}
}

// waitEdges waits for the records edgesAhead writes, so that none is
// written once the build has given its locks back.
func (b *Builder) waitEdges() {
	if b.edges != nil {
		<-b.edges.done
	}
}

// edgeRecords are the records a stage must have: one per stage it is
// built on, or the no-dependency record.
func edgeRecords(s *plan.Stage) []string {
	var deps []string
	if s.Parent != nil {
		deps = append(deps, s.Parent.Signature)
	}
	for _, src := range s.ImportSource {
		deps = append(deps, src.Signature)
	}
	for _, d := range s.Dependencies {
		deps = append(deps, d.Final.Signature)
	}
	if len(deps) == 0 {
		return []string{stagesrepo.EdgeRecord(s.Signature, "")}
	}
	out := make([]string, len(deps))
	for i, d := range deps {
		out[i] = stagesrepo.EdgeRecord(s.Signature, d)
	}
	return out
}

// adoptOldest: hosts without a lock may store the same stage at the same
// time; every reader settles on the oldest copy, and so does the writer.
func (b *Builder) adoptOldest(ctx context.Context, s *plan.Stage, ours stagesrepo.StageTag) stagesrepo.StageTag {
	if b.Locker != nil {
		return ours
	}
	if st, ok, err := b.storedMeanwhile(ctx, s); err == nil && ok {
		return st
	}
	return ours
}

// storedMeanwhile lists the storage again just before storing.
func (b *Builder) storedMeanwhile(ctx context.Context, s *plan.Stage) (stagesrepo.StageTag, bool, error) {
	if err := b.Storage.Refresh(ctx); err != nil {
		return stagesrepo.StageTag{}, false, fault.System(err)
	}
	return b.Storage.Find(ctx, s.Signature)
}

// ensureEngine connects to the engine on first use.
func (b *Builder) ensureEngine(ctx context.Context) (*Engine, error) {
	b.engineMu.Lock()
	defer b.engineMu.Unlock()
	if b.engine == nil {
		e, err := b.Engine(ctx)
		if err != nil {
			return nil, fault.System(err)
		}
		b.engine = e
	}
	return b.engine, nil
}

// buildInEngine builds a shell or Dockerfile stage in the host's engine;
// a shell stage's parent is pulled first when the engine lacks it.
func (b *Builder) buildInEngine(ctx context.Context, s *plan.Stage) (built, bool, error) {
	e, err := b.ensureEngine(ctx)
	if err != nil {
		return built{}, false, err
	}
	labels := b.labels(s)
	if s.Kind == plan.KindDockerfile {
		var id string
		// The engine pulls the FROM images itself: a pull the registry
		// failed for a moment is a build to make again.
		err := registry.Retry(ctx, b.Trace, "building stage "+s.String(), func() (err error) {
			if s.Image.Dockerfile.SSH != "" {
				return fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: s.Image.Line, Msg: "ssh: needs BuildKit, which the engine's classic builder stagehand uses does not have: fetch what needs SSH in an earlier image and import it"})
			}
			contextTar, dockerfile, err := b.contextTar(s, labels)
			if err != nil {
				return err
			}
			defer contextTar.Close()
			d := s.Image.Dockerfile
			args := d.Args
			if len(s.Dependencies) > 0 {
				values, err := b.dependencyValues(ctx, e, s)
				if err != nil {
					return err
				}
				args = append([]config.KeyValue(nil), args...)
				for _, dep := range s.Dependencies {
					args = append(args, config.KeyValue{Key: dep.TargetBuildArg, Value: values[dep.TargetBuildArg]})
				}
			}
			id, err = e.BuildDockerfile(ctx, dockerfileBuild{
				Stage: s.String(), Context: contextTar, Dockerfile: dockerfile,
				Args: args, Target: d.Target, AddHost: d.AddHost,
			}, b.Debug)
			return err
		})
		return built{engineID: id, engine: e}, false, err
	}
	parent := b.Storage.EngineRef(b.stored[s.Parent])
	pulled := false
	has, err := e.Has(ctx, parent)
	if err != nil {
		return built{}, false, fault.System(err)
	}
	if !has {
		start := time.Now()
		if err := e.Pull(ctx, parent); err != nil {
			return built{}, false, fault.System(err)
		}
		pulled = true
		fmt.Fprintf(b.Trace, "Pulled %s to build on it (%s)\n", parent, time.Since(start).Round(time.Millisecond))
	}
	img, err := b.runShellStage(ctx, e, s, parent, labels)
	return img, pulled, err
}

// dependencyValues are the values of a stage's dependencies (werf 1.2),
// by the build arg or variable that gets each: the other image's final
// stage as the engine names it, its repository and tag, its image id,
// its manifest digest.
func (b *Builder) dependencyValues(ctx context.Context, e *Engine, s *plan.Stage) (map[string]string, error) {
	deps := make([]*plan.Stage, len(s.Dependencies))
	for i, d := range s.Dependencies {
		deps[i] = d.Final
	}
	if err := b.waitStored(deps...); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range s.Dependencies {
		ref := b.Storage.EngineRef(b.stored[d.Final])
		var v string
		switch d.Type {
		case "ImageName":
			v = ref
		case "ImageRepo":
			v = ref[:strings.LastIndex(ref, ":")]
		case "ImageTag":
			v = ref[strings.LastIndex(ref, ":")+1:]
		case "ImageID", "ImageDigest":
			info, ok, err := e.Inspect(ctx, ref)
			if err == nil && !ok {
				if err = e.Pull(ctx, ref); err == nil {
					info, ok, err = e.Inspect(ctx, ref)
				}
			}
			if err != nil || !ok {
				return nil, fault.System(fmt.Errorf("stage %s: dependency %s: %v", s, d.Final, err))
			}
			v = info.ID
			if d.Type == "ImageDigest" {
				v = ""
				repo := ref[:strings.LastIndex(ref, ":")]
				for _, rd := range info.RepoDigests {
					if r, digest, ok := strings.Cut(rd, "@"); ok && r == repo {
						v = digest
					}
				}
				if v == "" {
					return nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: s.Image.Line, Msg: fmt.Sprintf("dependencies: %s has no manifest digest in the :local stages storage (ImageDigest needs a registry storage)", d.Final.Image.Describe())})
				}
			}
		}
		out[d.TargetBuildArg+d.TargetEnv] = v
	}
	return out, nil
}

// tmpDir is this build's directory of tmp_dir mounts, made on first use
// and removed when the build ends.
func (b *Builder) tmpDir() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tmp == "" {
		dir, err := os.MkdirTemp("", "stagehand-mounts-")
		if err != nil {
			return "", err
		}
		b.tmp = dir
	}
	return b.tmp, nil
}

// mappingPatch writes the files of git mapping i that differ from the
// listing in parentLabels. Removed files become whiteouts when whiteouts
// is set, else they are answered for the stage's script to delete. It
// answers the entries written, the new listing label, the paths to delete
// and the mapping's owner ids.
func (b *Builder) mappingPatch(tw *tarWriter, s *plan.Stage, i int, parentLabels map[string]string, whiteouts bool, owners Owners) (n int, listing string, remove []string, err error) {
	m := s.Image.Git[i]
	old, err := decodeListing(parentLabels[stagesrepo.GitListingLabel(i)])
	if err != nil {
		return 0, "", nil, fault.System(fmt.Errorf("stage %s: the parent's %w", s, err))
	}
	files := b.Plan.Git[s.Image][i]
	patch := diffListing(old, files)
	uid, gid, err := owners.IDs(m.Owner, m.Group)
	if err != nil {
		return 0, "", nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: m.Line, Msg: err.Error()})
	}
	tw.setOwner(uid, gid, m.To)
	if err := writeGitFiles(tw, b.sourceOf(m), patch.Write); err != nil {
		return 0, "", nil, fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	n = len(patch.Write)
	for _, r := range patch.Remove {
		if !whiteouts {
			remove = append(remove, r)
			continue
		}
		if err := tw.whiteout(r); err != nil {
			return 0, "", nil, err
		}
		n++
	}
	return n, listingOf(files).encode(), remove, nil
}

// sourceOf is where a git mapping's files come from: the project, or
// its remote repository.
func (b *Builder) sourceOf(m config.GitMapping) plan.Source {
	if m.URL != "" {
		return b.Remotes[plan.RemoteKey(m)]
	}
	return b.Source
}

// dockerfileInContext is where a Dockerfile image's Dockerfile goes in its
// build context when it is not one of the context's own files (werf 1.1
// read dockerfile: from the project's root, wherever the context is).
const dockerfileInContext = ".stagehand.Dockerfile"

// contextTar is a Dockerfile image's build context: the files the plan
// chose (below the context directory, less what .dockerignore leaves
// out), and the Dockerfile. It answers the Dockerfile's path in it.
// (Temporary files go when the build ends.)
func (b *Builder) contextTar(s *plan.Stage, labels map[string]string) (io.ReadCloser, string, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, "", fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	ignore := ""
	for _, f := range s.Context {
		if err := b.writeEntry(tw, "/"+f.Rel, f.TreeEntry); err != nil {
			return nil, "", err
		}
		if f.Rel == ".dockerignore" {
			if ignore, err = b.readEntry(f.TreeEntry); err != nil {
				return nil, "", err
			}
		}
	}
	// The Dockerfile the engine reads is the project's with the stage's
	// labels in one instruction, under a name of its own, which the engine
	// leaves out of the context once it has read it (it is listed in the
	// context's .dockerignore).
	dockerfile, err := b.readEntry(s.DockerfileEntry)
	if err != nil {
		return nil, "", err
	}
	if err := tw.raw(dockerfileInContext, withLabels([]byte(dockerfile), s.Image.Dockerfile.Target, labels)); err != nil {
		return nil, "", fault.System(err)
	}
	if err := tw.raw(".dockerignore", []byte(ignore+"\n"+dockerfileInContext+"\n")); err != nil {
		return nil, "", fault.System(err)
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	r, err := tl.Reader()
	return r, dockerfileInContext, err
}

// readEntry reads one file of the project.
func (b *Builder) readEntry(e plan.TreeEntry) (string, error) {
	r, err := b.Source.Open(e)
	if err != nil {
		return "", fault.System(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return "", fault.System(fmt.Errorf("read %s: %w", e.Path, err))
	}
	return string(data), nil
}

// writeEntry writes one file of the project into a tar.
func (b *Builder) writeEntry(tw *tarWriter, dest string, e plan.TreeEntry) error {
	r, err := b.Source.Open(e)
	if err != nil {
		return fault.System(err)
	}
	defer r.Close()
	if err := tw.file(dest, e.Mode, r); err != nil {
		return fault.System(err)
	}
	return nil
}
