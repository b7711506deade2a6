package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"gitlab.com/stagehand/stagehand/dockercfg"
)

// Labels every stage image carries, so that cleanup and people can tell
// what a stage is without its tag.
const (
	LabelSignature = "io.stagehand.stage.signature"
	LabelStage     = "io.stagehand.stage.name"
	LabelImage     = "io.stagehand.stage.image"
	LabelProject   = "io.stagehand.project"
	LabelCommit    = "io.stagehand.commit"
	// LabelGitPrefix + mapping index holds the git files an image has (see
	// gitListing), so that the next patch is computed from the config alone.
	LabelGitPrefix = "io.stagehand.git."
)

// StoredStage is one stage in the stages storage: the tag
// <signature>-<unix ms>.
type StoredStage struct {
	Signature string
	// Millis is when the stage was stored (Unix milliseconds).
	Millis int64
}

// Tag is the stage's tag in the stages repository.
func (s StoredStage) Tag() string { return s.Signature + "-" + strconv.FormatInt(s.Millis, 10) }

// ParseStageTag reads a stage tag (<signature>-<unix ms>); ok is false
// for tags of anything else.
func ParseStageTag(tag string) (StoredStage, bool) {
	sig, ms, ok := strings.Cut(tag, "-")
	if !ok || len(sig) != 56 || strings.Trim(sig, "0123456789abcdef") != "" {
		return StoredStage{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n <= 0 {
		return StoredStage{}, false
	}
	return StoredStage{Signature: sig, Millis: n}, true
}

// pickStage chooses among the stored copies of one signature: the oldest,
// so that every reader agrees on one copy even when hosts without a lock
// stored the same stage twice.
func pickStage(copies []StoredStage) StoredStage {
	best := copies[0]
	for _, c := range copies[1:] {
		if c.Millis < best.Millis {
			best = c
		}
	}
	return best
}

// Storage is the stages storage: a repository in a registry
// ($CI_REGISTRY_IMAGE/stages). Everything it learns comes from tag lists,
// manifests and configs; it never pulls an image to look at it.
type Storage struct {
	Repo name.Repository
	opts []remote.Option
	// Trace, when set, is told of retried registry operations.
	Trace io.Writer

	index stageIndex
}

// stageIndex is what a storage's last listing found, plus what this
// process stored since: the copies of each signature.
type stageIndex struct {
	mu     sync.Mutex
	stages map[string][]StoredStage
	// records are the record tags (see records.go) of the listing.
	records map[string]bool
	listed  bool
}

// set replaces the index with the stage and record tags among tags.
func (x *stageIndex) set(tags []string) {
	stages := map[string][]StoredStage{}
	records := map[string]bool{}
	for _, t := range tags {
		if st, ok := ParseStageTag(t); ok {
			stages[st.Signature] = append(stages[st.Signature], st)
		} else if IsRecord(t) {
			records[t] = true
		}
	}
	x.mu.Lock()
	x.stages, x.records, x.listed = stages, records, true
	x.mu.Unlock()
}

// missing answers the records among names that the index lacks.
func (x *stageIndex) missing(names []string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for _, n := range names {
		if !x.records[n] {
			out = append(out, n)
		}
	}
	return out
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
func (x *stageIndex) add(st StoredStage) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stages == nil {
		x.stages = map[string][]StoredStage{}
	}
	x.stages[st.Signature] = append(x.stages[st.Signature], st)
}

// find answers the copy of sig every reader picks, listing first when
// the storage was never listed.
func (x *stageIndex) find(ctx context.Context, refresh func(context.Context) error, sig string) (StoredStage, bool, error) {
	x.mu.Lock()
	listed := x.listed
	x.mu.Unlock()
	if !listed {
		if err := refresh(ctx); err != nil {
			return StoredStage{}, false, err
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	copies := x.stages[sig]
	if len(copies) == 0 {
		return StoredStage{}, false, nil
	}
	return pickStage(copies), true, nil
}

// all lists afresh and answers one copy per signature, oldest first.
func (x *stageIndex) all(ctx context.Context, refresh func(context.Context) error) ([]StoredStage, error) {
	if err := refresh(ctx); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]StoredStage, 0, len(x.stages))
	for _, copies := range x.stages {
		out = append(out, pickStage(copies))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Millis < out[j].Millis })
	return out, nil
}

// Keychain gives go-containerregistry the logins of a DOCKER_CONFIG
// directory (the job's, written by the prepare hook); anonymous when it
// has none for a registry.
type Keychain struct{ Dir string }

// Resolve implements authn.Keychain.
func (k Keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if k.Dir == "" {
		return authn.Anonymous, nil
	}
	user, pass, ok, err := dockercfg.Credentials(k.Dir, r.RegistryStr())
	if err != nil {
		return nil, err
	}
	if !ok {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: user, Password: pass}, nil
}

// RegistryOptions are the options every registry call of a build uses.
func RegistryOptions(ctx context.Context, keychain authn.Keychain, base http.RoundTripper) []remote.Option {
	if base == nil {
		base = remote.DefaultTransport
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain), remote.WithJobs(4),
		remote.WithTransport(wholeBodies{base})}
}

// NewStorage opens the stages storage at repo (e.g.
// registry.example.com/group/project/stages).
func NewStorage(repo string, opts []remote.Option) (*Storage, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return nil, fmt.Errorf("stages storage %q (%s) is not a repository name: %w", repo, "STAGEHAND_STAGES_STORAGE", err)
	}
	return &Storage{Repo: r, opts: opts}, nil
}

// String names the storage for the trace.
func (s *Storage) String() string { return s.Repo.String() }

// Refresh lists the storage's tags again.
func (s *Storage) Refresh(ctx context.Context) error {
	var tags []string
	err := retryRegistry(ctx, s.Trace, "listing "+s.Repo.String(), func() (err error) {
		tags, err = remote.List(s.Repo, append(s.opts, remote.WithContext(ctx))...)
		if isNotFound(err) {
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
func (s *Storage) Find(ctx context.Context, sig string) (StoredStage, bool, error) {
	return s.index.find(ctx, s.Refresh, sig)
}

// All lists every stored stage (one per signature), oldest first.
func (s *Storage) All(ctx context.Context) ([]StoredStage, error) {
	return s.index.all(ctx, s.Refresh)
}

// EnsureRecords writes those of the records (see records.go) that the
// storage's last listing lacks.
func (s *Storage) EnsureRecords(ctx context.Context, records []string) error {
	for _, r := range s.index.missing(records) {
		if err := retryRegistry(ctx, s.Trace, "writing record "+r, func() error { return WriteRecord(ctx, s.Repo, r, s.opts) }); err != nil {
			return err
		}
		s.index.addRecord(r)
	}
	return nil
}

// Ref is the stage's reference in the storage.
func (s *Storage) Ref(st StoredStage) name.Tag { return s.Repo.Tag(st.Tag()) }

// Image opens a stored stage without downloading anything but what is
// asked of it later (the manifest now, the config or layers on demand).
func (s *Storage) Image(ctx context.Context, st StoredStage) (v1.Image, error) {
	img, err := remote.Image(s.Ref(st), append(s.opts, remote.WithContext(ctx))...)
	if err != nil {
		return nil, fmt.Errorf("read stage %s: %w", s.Ref(st), err)
	}
	return img, nil
}

// Put stores img as a new copy of the stage sig: blobs first, the manifest
// last, so that the tag appears only when the whole image is there. Tags
// are never overwritten: each copy has its own timestamp.
func (s *Storage) Put(ctx context.Context, sig string, img v1.Image) (StoredStage, error) {
	st := StoredStage{Signature: sig, Millis: time.Now().UnixMilli()}
	if err := retryRegistry(ctx, s.Trace, "storing "+s.Ref(st).String(), func() error {
		return remote.Write(s.Ref(st), img, append(s.opts, remote.WithContext(ctx))...)
	}); err != nil {
		return StoredStage{}, fmt.Errorf("push stage %s: %w", s.Ref(st), err)
	}
	s.index.add(st)
	return st, nil
}

// importTagPrefix marks the tags holding import layers: an image whose
// one layer is what an import stage adds (see Stage.ImportKey).
const importTagPrefix = "import-"

// ImportLayer finds the stored layer of an import key; the layer stays in
// the registry (it is mounted, never downloaded, when used).
func (s *Storage) ImportLayer(ctx context.Context, key string) (v1.Layer, bool, error) {
	img, err := remote.Image(s.Repo.Tag(importTagPrefix+key), append(s.opts, remote.WithContext(ctx))...)
	if isNotFound(err) {
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
	if err := remote.Write(s.Repo.Tag(importTagPrefix+key), img, append(s.opts, remote.WithContext(ctx))...); err != nil {
		return fmt.Errorf("store import layer %s: %w", key, err)
	}
	return nil
}

// NewTag reserves the tag of a new copy of sig, for images the engine
// pushes itself; Stored records it once pushed.
func (s *Storage) NewTag(sig string) StoredStage {
	return StoredStage{Signature: sig, Millis: time.Now().UnixMilli()}
}

// Stored records a stage the engine pushed.
func (s *Storage) Stored(st StoredStage) { s.index.add(st) }

func isNotFound(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		if te.StatusCode == http.StatusNotFound {
			return true
		}
		for _, d := range te.Errors {
			if d.Code == transport.NameUnknownErrorCode || d.Code == transport.ManifestUnknownErrorCode {
				return true
			}
		}
	}
	return false
}

// Annotations of a published image's manifest: what cleanup needs to
// decide about it without reading anything else.
const (
	AnnotationRef        = "io.stagehand.ref"         // branch or git tag name
	AnnotationRefKind    = "io.stagehand.ref-kind"    // "branch" or "tag"
	AnnotationCommit     = "io.stagehand.commit"      // commit SHA
	AnnotationCommitTime = "io.stagehand.commit-time" // commit time (RFC 3339), the image's age for policies
	AnnotationImage      = "io.stagehand.image"       // image name in the config
	AnnotationStage      = "io.stagehand.stage"       // the stage tag the image is
	AnnotationStages     = "io.stagehand.stages"      // every stage signature the image was built from, comma-separated
)

// Publish makes tag in repo point at the stored stage, by copying its
// manifest inside the registry: blobs are mounted across repositories
// (never downloaded), then the manifest, with annotations added, is put
// last. It answers the published manifest's digest. When the tag already
// has exactly this manifest, nothing is written.
func Publish(ctx context.Context, s *Storage, st StoredStage, repo name.Repository, tag string, annotations map[string]string, opts []remote.Option) (v1.Hash, error) {
	opts = append(opts, remote.WithContext(ctx))
	src := s.Ref(st)
	desc, err := remote.Get(src, opts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read stage %s: %w", src, err)
	}
	raw, err := annotate(desc.Manifest, annotations)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("annotate %s: %w", src, err)
	}
	digest, _, err := v1.SHA256(strings.NewReader(string(raw)))
	if err != nil {
		return v1.Hash{}, err
	}
	dst := repo.Tag(tag)
	if cur, err := remote.Head(dst, opts...); err == nil && cur.Digest == digest {
		return digest, nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("parse manifest of %s: %w", src, err)
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	for _, b := range blobs {
		l, err := remote.Layer(s.Repo.Digest(b.Digest.String()), opts...)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("mount %s from %s into %s: %w", b.Digest, s.Repo, repo, err)
		}
	}
	if err := remote.Put(dst, rawManifest{raw: raw, mediaType: desc.MediaType}, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("tag %s: %w", dst, err)
	}
	return digest, nil
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
