package stages

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// Store is a stages storage: a repository in a registry (*Storage) or the
// host's engine (*LocalStorage, werf's :local). The builder, publishing
// and sync use every storage through these methods alone.
type Store interface {
	// String names the storage for the trace.
	String() string
	// Refresh lists the storage's stages again; Find and All answer from
	// the last listing (and what this process stored since).
	Refresh(ctx context.Context) error
	Find(ctx context.Context, sig string) (stagesrepo.StageTag, bool, error)
	// All lists afresh and answers one copy per signature, oldest first.
	All(ctx context.Context) ([]stagesrepo.StageTag, error)
	// EngineRef is how the engine names a stored stage, to pull it or
	// build on it.
	EngineRef(st stagesrepo.StageTag) string
	// EnsureRecords writes the records (see stagesrepo) the storage's last
	// listing lacks. A storage that cleanup does not read keeps none.
	EnsureRecords(ctx context.Context, records []string) error

	// makeConfigStage makes a stage that runs nothing — a base image,
	// git files, imports, docker: directives — the storage's way.
	makeConfigStage(ctx context.Context, b *Builder, s *plan.Stage) (built, error)
	// put stores a built stage as a new copy of sig: blobs first, the
	// tag last, so that no half stage is ever visible.
	put(ctx context.Context, sig string, img built) (stagesrepo.StageTag, error)
	// publish makes repo:tag the stored stage st, with annotations on its
	// manifest where the storage can, and answers the manifest's digest.
	// The tag is written only once recorded (the publication's records)
	// answers nil; its error is publish's.
	publish(ctx context.Context, st stagesrepo.StageTag, repo name.Repository, tag string, annotations map[string]string, recorded func() error) (Publication, error)

	// sendTo copies a stored stage into dst under the same tag, by asking
	// dst to receive it from where this storage keeps it.
	sendTo(ctx context.Context, st stagesrepo.StageTag, dst Store) error
	receiveFromRegistry(ctx context.Context, src name.Tag, st stagesrepo.StageTag) error
	receiveFromEngine(ctx context.Context, e *Engine, ref string, st stagesrepo.StageTag) error
}

var (
	_ Store = (*Storage)(nil)
	_ Store = (*LocalStorage)(nil)
)

// built is a stage built and not stored yet: an image the engine holds
// (shell and Dockerfile stages; every stage of :local), or one made from
// layers in the registry.
type built struct {
	engineID string
	engine   *Engine
	image    v1.Image
}

// stageIndex is what a storage's last listing found, plus what this
// process stored since: the copies of each signature.
type stageIndex struct {
	mu     sync.Mutex
	stages map[string][]stagesrepo.StageTag
	// records are the record tags of the listing.
	records map[string]bool
	listed  bool
	// own are the copies this process stored: a listing made while one
	// was pushed (in the background) may lack it, and must not hide it.
	own []stagesrepo.StageTag
}

// set replaces the index with the stage and record tags among tags.
func (x *stageIndex) set(tags []string) {
	stages := map[string][]stagesrepo.StageTag{}
	records := map[string]bool{}
	for _, t := range tags {
		if st, ok := stagesrepo.ParseStageTag(t); ok {
			stages[st.Signature] = append(stages[st.Signature], st)
		} else if stagesrepo.IsRecord(t) {
			records[t] = true
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, st := range x.own {
		if !slices.Contains(stages[st.Signature], st) {
			stages[st.Signature] = append(stages[st.Signature], st)
		}
	}
	x.stages, x.records, x.listed = stages, records, true
}

// missing answers the records among names that the index lacks, each
// once.
func (x *stageIndex) missing(names []string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for _, n := range names {
		if !x.records[n] && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// hasRecords tells whether the storage has any record.
func (x *stageIndex) hasRecords() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.records) > 0
}

func (x *stageIndex) addRecord(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.records == nil {
		x.records = map[string]bool{}
	}
	x.records[name] = true
}

// add records one more stored copy.
func (x *stageIndex) add(st stagesrepo.StageTag) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stages == nil {
		x.stages = map[string][]stagesrepo.StageTag{}
	}
	x.stages[st.Signature] = append(x.stages[st.Signature], st)
	x.own = append(x.own, st)
}

// find answers the copy of sig every reader picks, listing first when
// the storage was never listed.
func (x *stageIndex) find(ctx context.Context, refresh func(context.Context) error, sig string) (stagesrepo.StageTag, bool, error) {
	x.mu.Lock()
	listed := x.listed
	x.mu.Unlock()
	if !listed {
		if err := refresh(ctx); err != nil {
			return stagesrepo.StageTag{}, false, err
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	copies := x.stages[sig]
	if len(copies) == 0 {
		return stagesrepo.StageTag{}, false, nil
	}
	return stagesrepo.Oldest(copies), true, nil
}

// all lists afresh and answers one copy per signature, oldest first.
func (x *stageIndex) all(ctx context.Context, refresh func(context.Context) error) ([]stagesrepo.StageTag, error) {
	if err := refresh(ctx); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]stagesrepo.StageTag, 0, len(x.stages))
	for _, copies := range x.stages {
		out = append(out, stagesrepo.Oldest(copies))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Millis < out[j].Millis })
	return out, nil
}

// Publication is what publishing a stage under a tag made: the manifest's
// digest and the image's ID (its config's digest, what `docker images`
// shows), which changes whenever the image's content does.
type Publication struct {
	Digest, ID v1.Hash
}
