package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/stagesrepo"
	"gitlab.com/stagehand/stagehand/trace"
)

// Storage is the stages storage in a registry: a repository
// ($CI_REGISTRY_IMAGE/stages). Everything it learns comes from tag lists,
// manifests and configs; it never pulls an image to look at it.
type Storage struct {
	Repo name.Repository
	opts []remote.Option
	// reuse makes every call but the progress-reporting writes share
	// one connection setup per repository: without it each call first
	// asks the registry for /v2/ again.
	reuse []remote.Option
	// Trace, when set, is told of retried registry operations.
	Trace io.Writer

	index stageIndex
	// ahead is a listing started before it was needed (ListAhead), which
	// the next Refresh takes instead of listing again.
	ahead chan error
	// tagsAhead are what publication tags point at, asked as the build
	// began (HeadAhead); each answer is taken once.
	tagsAhead map[string]chan tagNow

	mu       sync.Mutex
	fetching sync.Mutex // one read of a manifest at a time
	mounting sync.Mutex // one mount of blobs at a time
	// manifests are the stored stages' manifests read for publishing
	// (a stage's tag never changes what it points at).
	manifests map[stagesrepo.StageTag]*remote.Descriptor
	// mounted are the blobs this process mounted, by repository.
	mounted map[string]bool
}

// NewStorage opens the stages storage at repo (e.g.
// registry.example.com/group/project/stages) with the options of
// registry.Options.
func NewStorage(repo string, opts []remote.Option, trace io.Writer) (*Storage, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return nil, fmt.Errorf("stages storage %q (%s) is not a repository name: %w", repo, "STAGEHAND_STAGES_STORAGE", err)
	}
	s := &Storage{Repo: r, opts: slices.Clip(opts), Trace: trace}
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, fmt.Errorf("stages storage %s: %w", repo, err)
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, fmt.Errorf("stages storage %s: %w", repo, err)
	}
	s.reuse = []remote.Option{remote.Reuse(puller), remote.Reuse(pusher)}
	return s, nil
}

// calls are the options of a registry call made for ctx.
func (s *Storage) calls(ctx context.Context) []remote.Option {
	return slices.Clip(append(append(slices.Clip(s.opts), s.reuse...), remote.WithContext(ctx)))
}

// String names the storage for the trace.
func (s *Storage) String() string { return s.Repo.String() }

// ListAhead starts listing the storage now, while the build prepares:
// the first Refresh after it takes this listing instead of making one.
func (s *Storage) ListAhead(ctx context.Context) {
	done := make(chan error, 1)
	s.mu.Lock()
	s.ahead = done
	s.mu.Unlock()
	go func() { done <- s.list(ctx) }()
}

// tagNow is what a tag pointed at when asked.
type tagNow struct {
	desc *v1.Descriptor
	err  error
}

// HeadAhead asks now what the tags an image is published under point at,
// while the build goes on: an idle build's publication then only checks
// that they have its manifest already. An answer stands for the first
// publication of its tag: when it says the tag had exactly the manifest
// to publish, leaving the tag alone is the same as having published it at
// that moment; any other answer leads to the write, which does not depend
// on it.
func (s *Storage) HeadAhead(ctx context.Context, tags []name.Tag) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tagsAhead == nil {
		s.tagsAhead = map[string]chan tagNow{}
	}
	for _, t := range tags {
		if _, ok := s.tagsAhead[t.String()]; ok {
			continue
		}
		now := make(chan tagNow, 1)
		s.tagsAhead[t.String()] = now
		go func() {
			d, err := remote.Head(t, s.calls(ctx)...)
			now <- tagNow{d, err}
		}()
	}
}

// headTag asks what dst points at, or takes the answer HeadAhead got.
func (s *Storage) headTag(ctx context.Context, dst name.Tag) <-chan tagNow {
	s.mu.Lock()
	now, ok := s.tagsAhead[dst.String()]
	delete(s.tagsAhead, dst.String())
	s.mu.Unlock()
	if ok {
		return now
	}
	now = make(chan tagNow, 1)
	go func() {
		d, err := remote.Head(dst, s.calls(ctx)...)
		now <- tagNow{d, err}
	}()
	return now
}

// Refresh lists the storage's tags again.
func (s *Storage) Refresh(ctx context.Context) error {
	s.mu.Lock()
	ahead := s.ahead
	s.ahead = nil
	s.mu.Unlock()
	if ahead != nil {
		select {
		case err := <-ahead:
			return err
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return s.list(ctx)
}

func (s *Storage) list(ctx context.Context) error {
	var tags []string
	err := registry.Retry(ctx, s.Trace, "listing "+s.Repo.String(), func() (err error) {
		tags, err = remote.List(s.Repo, s.calls(ctx)...)
		if registry.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("list stages in %s: %w", s.Repo, err)
	}
	s.index.set(tags)
	return nil
}

// Find returns the stored stage of a signature, as of the last listing.
func (s *Storage) Find(ctx context.Context, sig string) (stagesrepo.StageTag, bool, error) {
	return s.index.find(ctx, s.Refresh, sig)
}

// All lists every stored stage (one per signature), oldest first.
func (s *Storage) All(ctx context.Context) ([]stagesrepo.StageTag, error) {
	return s.index.all(ctx, s.Refresh)
}

// EnsureRecords implements Store.
// The records are written at once, a few at a time; in a repository with
// no record yet, the first alone: every record's manifest refers to the
// same empty config, which the registry would otherwise receive from
// each of them at the same time (see registry.Transient).
func (s *Storage) EnsureRecords(ctx context.Context, records []string) error {
	missing := s.index.missing(records)
	write := func(ctx context.Context, r string) error {
		if err := registry.Retry(ctx, s.Trace, "writing record "+r, func() error { return WriteRecord(ctx, s.Repo, r, s.calls(ctx)) }); err != nil {
			return err
		}
		s.index.addRecord(r)
		return nil
	}
	if len(missing) > 1 && !s.index.hasRecords() {
		if err := write(ctx, missing[0]); err != nil {
			return err
		}
		missing = missing[1:]
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(recordWrites)
	for _, r := range missing {
		g.Go(func() error { return write(gctx, r) })
	}
	return g.Wait()
}

// recordWrites is how many records are written at the same time.
const recordWrites = 8

// recordImage is a record's manifest: an empty image annotated with the
// record's name, so that every record has a manifest of its own.
func recordImage(record string) v1.Image {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return mutate.Annotations(img, map[string]string{stagesrepo.AnnotationRecord: record}).(v1.Image)
}

// WriteRecord puts a record into a stages repository.
func WriteRecord(ctx context.Context, repo name.Repository, record string, opts []remote.Option) error {
	if err := remote.Write(repo.Tag(record), recordImage(record), append(opts, remote.WithContext(ctx))...); err != nil {
		return fmt.Errorf("write record %s in %s: %w", record, repo, err)
	}
	return nil
}

// EngineRef implements Store.
func (s *Storage) EngineRef(st stagesrepo.StageTag) string { return s.Ref(st).String() }

// sendTo implements Store.
func (s *Storage) sendTo(ctx context.Context, st stagesrepo.StageTag, dst Store) error {
	return dst.receiveFromRegistry(ctx, s.Ref(st), st)
}

// receiveFromRegistry copies a stage of another repository: within one
// registry blobs are mounted, from another they are streamed.
func (s *Storage) receiveFromRegistry(ctx context.Context, src name.Tag, st stagesrepo.StageTag) error {
	img, err := remote.Image(src, s.calls(ctx)...)
	if err != nil {
		return fmt.Errorf("read stage %s: %w", src, err)
	}
	return s.write(ctx, s.Ref(st), img)
}

// write writes an image (blobs the registry lacks, then the manifest),
// reporting the progress of a big one in the trace.
func (s *Storage) write(ctx context.Context, ref name.Tag, img v1.Image) error {
	updates := make(chan v1.Update, 16)
	done := make(chan struct{})
	p := trace.NewProgress(s.Trace, "Storing "+ref.String())
	go func() {
		defer close(done)
		for u := range updates {
			p.Update(u.Complete, u.Total)
		}
	}()
	err := remote.Write(ref, img, append(slices.Clip(s.opts), remote.WithContext(ctx), remote.WithProgress(updates))...)
	// go-containerregistry closes updates when it is done (but not when
	// its options are refused, before any transfer).
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return err
}

// hasAllLayers tells an image whose layers are all stored stages' layers
// of this repository (a docker: stage, a git stage with nothing new): the
// registry has them, and writing the image is writing its config and
// manifest.
func (s *Storage) hasAllLayers(img v1.Image) bool {
	layers, err := img.Layers()
	if err != nil {
		return false
	}
	for _, l := range layers {
		ml, ok := l.(*remote.MountableLayer)
		if !ok || ml.Reference.Context().String() != s.Repo.String() {
			return false
		}
	}
	return true
}

// writeConfig writes an image whose layers the repository has (see
// hasAllLayers): its config, then its manifest. remote.Write would first
// ask for the manifest and every layer, and set up a connection of its
// own to report progress; these two calls share the storage's and skip
// the questions, which is most of the time of a stage made this way.
func (s *Storage) writeConfig(ctx context.Context, ref name.Tag, img v1.Image) error {
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	if err := remote.WriteLayer(s.Repo, static.NewLayer(raw, m.Config.MediaType), s.calls(ctx)...); err != nil {
		return fmt.Errorf("write the config of %s: %w", ref, err)
	}
	return remote.Put(ref, img, s.calls(ctx)...)
}

// receiveFromEngine pushes a stage the engine holds.
func (s *Storage) receiveFromEngine(ctx context.Context, e *Engine, ref string, st stagesrepo.StageTag) error {
	dst := s.EngineRef(st)
	if err := e.Push(ctx, ref, dst); err != nil {
		return err
	}
	_ = e.Untag(ctx, dst)
	return nil
}

// Ref is the stage's reference in the storage.
func (s *Storage) Ref(st stagesrepo.StageTag) name.Tag { return s.Repo.Tag(st.String()) }

// Image opens a stored stage without downloading anything but what is
// asked of it later (the manifest now, the config or layers on demand).
func (s *Storage) Image(ctx context.Context, st stagesrepo.StageTag) (v1.Image, error) {
	img, err := remote.Image(s.Ref(st), s.calls(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("read stage %s: %w", s.Ref(st), err)
	}
	return img, nil
}

// put implements Store: an image made from layers is written (blobs
// first, the manifest last, so that the tag appears only when the whole
// image is there); an engine's image is pushed the same way by the
// engine. Tags are never overwritten: each copy has its own timestamp.
func (s *Storage) put(ctx context.Context, sig string, b built) (stagesrepo.StageTag, error) {
	st := stagesrepo.StageTag{Signature: sig, Millis: time.Now().UnixMilli()}
	return st, s.putAs(ctx, st, b)
}

// putAs stores a built stage under the tag st.
func (s *Storage) putAs(ctx context.Context, st stagesrepo.StageTag, b built) error {
	ref := s.Ref(st)
	var err error
	if b.image != nil {
		write := s.write
		if s.hasAllLayers(b.image) {
			write = s.writeConfig
		}
		err = registry.Retry(ctx, s.Trace, "storing "+ref.String(), func() error {
			return write(ctx, ref, b.image)
		})
	} else {
		err = b.engine.Push(ctx, b.engineID, ref.String())
	}
	if err != nil {
		return fmt.Errorf("push stage %s: %w", ref, err)
	}
	s.index.add(st)
	return nil
}

// ImportLayer finds the stored layer of an import key; the layer stays in
// the registry (it is mounted, never downloaded, when used).
func (s *Storage) ImportLayer(ctx context.Context, key string) (v1.Layer, bool, error) {
	img, err := remote.Image(s.Repo.Tag(stagesrepo.ImportTag(key)), s.calls(ctx)...)
	if registry.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read import layer %s: %w", key, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		return nil, false, fmt.Errorf("read import layer %s: %d layers, %v", key, len(layers), err)
	}
	return layers[0], true, nil
}

// PutImportLayer stores an import layer under its key.
func (s *Storage) PutImportLayer(ctx context.Context, key string, layer v1.Layer) error {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	if err := remote.Write(s.Repo.Tag(stagesrepo.ImportTag(key)), img, s.calls(ctx)...); err != nil {
		return fmt.Errorf("store import layer %s: %w", key, err)
	}
	return nil
}

// publish implements Store: it makes tag in repo point at the stored
// stage by copying its manifest inside the registry: blobs are mounted
// across repositories (never downloaded), then the manifest, with
// annotations added, is put last. When the tag already has exactly this
// manifest, nothing is written.
func (s *Storage) publish(ctx context.Context, st stagesrepo.StageTag, repo name.Repository, tag string, annotations map[string]string, recorded func() error) (Publication, error) {
	opts := s.calls(ctx)
	src := s.Ref(st)
	dst := repo.Tag(tag)
	// What the tag has now is asked at the same time as the stage's
	// manifest (or was, as the build began): an idle build's publication
	// is these two requests.
	cur := s.headTag(ctx, dst)
	desc, err := s.manifest(ctx, st)
	if err != nil {
		return Publication{}, err
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil {
		return Publication{}, fmt.Errorf("parse manifest of %s: %w", src, err)
	}
	raw, err := annotate(desc.Manifest, annotations)
	if err != nil {
		return Publication{}, fmt.Errorf("annotate %s: %w", src, err)
	}
	digest, _, err := v1.SHA256(strings.NewReader(string(raw)))
	if err != nil {
		return Publication{}, err
	}
	pub := Publication{Digest: digest, ID: m.Config.Digest}
	if c := <-cur; c.err == nil && c.desc.Digest == digest {
		return pub, recorded()
	}
	if err := s.mount(ctx, repo, append([]v1.Descriptor{m.Config}, m.Layers...)); err != nil {
		return Publication{}, err
	}
	if err := recorded(); err != nil {
		return Publication{}, err
	}
	if err := remote.Put(dst, rawManifest{raw: raw, mediaType: desc.MediaType}, opts...); err != nil {
		return Publication{}, fmt.Errorf("tag %s: %w", dst, err)
	}
	return pub, nil
}

// manifest reads a stored stage's manifest, once per process.
func (s *Storage) manifest(ctx context.Context, st stagesrepo.StageTag) (*remote.Descriptor, error) {
	s.fetching.Lock()
	defer s.fetching.Unlock()
	s.mu.Lock()
	desc, ok := s.manifests[st]
	s.mu.Unlock()
	if ok {
		return desc, nil
	}
	src := s.Ref(st)
	desc, err := remote.Get(src, s.calls(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("read stage %s: %w", src, err)
	}
	s.mu.Lock()
	if s.manifests == nil {
		s.manifests = map[stagesrepo.StageTag]*remote.Descriptor{}
	}
	s.manifests[st] = desc
	s.mu.Unlock()
	return desc, nil
}

// mountStage mounts the blobs of a stored stage (config and layers) into
// repo, as publish does (see mount).
func (s *Storage) mountStage(ctx context.Context, repo name.Repository, st stagesrepo.StageTag) error {
	desc, err := s.manifest(ctx, st)
	if err != nil {
		return err
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil {
		return fmt.Errorf("parse manifest of %s: %w", s.Ref(st), err)
	}
	return s.mount(ctx, repo, append([]v1.Descriptor{m.Config}, m.Layers...))
}

// mount makes the blobs of the stages repository available in repo, all
// at once: the registry mounts them across repositories (a blob repo has
// is left alone), nothing is downloaded. Blobs this process mounted
// already are skipped.
func (s *Storage) mount(ctx context.Context, repo name.Repository, blobs []v1.Descriptor) error {
	// Tags published at once mount the same blobs: the first mounts them,
	// the others find them mounted.
	s.mounting.Lock()
	defer s.mounting.Unlock()
	opts := s.calls(ctx)
	g, gctx := errgroup.WithContext(ctx)
	for _, b := range blobs {
		key := repo.String() + "@" + b.Digest.String()
		s.mu.Lock()
		done := s.mounted[key]
		s.mu.Unlock()
		if done {
			continue
		}
		g.Go(func() error {
			l, err := remote.Layer(s.Repo.Digest(b.Digest.String()), append(opts, remote.WithContext(gctx))...)
			if err != nil {
				return err
			}
			if err := remote.WriteLayer(repo, l, append(opts, remote.WithContext(gctx))...); err != nil {
				return fmt.Errorf("mount %s from %s into %s: %w", b.Digest, s.Repo, repo, err)
			}
			s.mu.Lock()
			if s.mounted == nil {
				s.mounted = map[string]bool{}
			}
			s.mounted[key] = true
			s.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// annotate adds annotations to a manifest, keeping every other byte's
// meaning (the manifest is re-encoded with its fields in order).
func annotate(manifest []byte, annotations map[string]string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, err
	}
	existing := map[string]string{}
	if a, ok := m["annotations"]; ok {
		if err := json.Unmarshal(a, &existing); err != nil {
			return nil, err
		}
	}
	for k, v := range annotations {
		existing[k] = v
	}
	a, err := json.Marshal(existing)
	if err != nil {
		return nil, err
	}
	m["annotations"] = a
	return json.Marshal(m) // map keys sorted: the same input gives the same bytes
}

type rawManifest struct {
	raw       []byte
	mediaType types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mediaType, nil }
