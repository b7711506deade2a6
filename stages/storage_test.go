package stages

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// memRegistry is go-containerregistry's in-memory registry behind an
// httptest server, counting the requests by method: storage, records,
// publishing and sync are tested without the harness.
type memRegistry struct {
	host     string
	requests sync.Map // method -> *atomic.Int64
	// answer, when set, sees each request first and may answer it itself.
	answer atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
}

func newMemRegistry(t *testing.T) *memRegistry {
	t.Helper()
	m := &memRegistry{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := m.requests.LoadOrStore(r.Method, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if a := m.answer.Load(); a != nil && (*a)(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	m.host = strings.TrimPrefix(srv.URL, "http://")
	return m
}

func (m *memRegistry) count(method string) int64 {
	n, ok := m.requests.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func (m *memRegistry) storage(t *testing.T, repo string) *Storage {
	t.Helper()
	s, err := NewStorage(m.host+"/"+repo, registry.Options(context.Background(), "", nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (m *memRegistry) tags(t *testing.T, repo string) []string {
	t.Helper()
	r, _ := name.NewRepository(m.host + "/" + repo)
	tags, err := remote.List(r)
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(256, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestStoragePutFindAndRecords(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	if err := s.Refresh(ctx); err != nil {
		t.Fatalf("an empty storage must list: %v", err)
	}
	if _, ok, _ := s.Find(ctx, sig(1)); ok {
		t.Fatal("found a stage in an empty storage")
	}
	first, err := s.put(ctx, sig(1), built{image: randomImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.put(ctx, sig(1), built{image: randomImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Another process sees both copies and, like every reader, the oldest.
	other := m.storage(t, "p/stages")
	got, ok, err := other.Find(ctx, sig(1))
	if err != nil || !ok {
		t.Fatalf("Find after put: %v %v", ok, err)
	}
	oldest := first
	if second.Millis < first.Millis {
		oldest = second
	}
	if got != oldest {
		t.Errorf("Find = %s, want the oldest copy %s", got, oldest)
	}

	records := []string{stagesrepo.EdgeRecord(sig(1), ""), stagesrepo.EdgeRecord(sig(2), sig(1))}
	if err := other.EnsureRecords(ctx, records); err != nil {
		t.Fatal(err)
	}
	puts := m.count(http.MethodPut)
	if err := other.EnsureRecords(ctx, records); err != nil {
		t.Fatal(err)
	}
	if m.count(http.MethodPut) != puts {
		t.Error("records the storage has were written again")
	}
	tags := m.tags(t, "p/stages")
	parsed := stagesrepo.ParseRecords(tags)
	if deps := parsed.Edges[sig(2)]; len(deps) != 1 || deps[0] != sig(1) {
		t.Errorf("edge records %v in %v", parsed.Edges, tags)
	}
	// Every record has a manifest of its own: deleting one by digest
	// deletes no other tag.
	digests := map[string]string{}
	for _, r := range records {
		d, err := remote.Head(other.Repo.Tag(r))
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := digests[d.Digest.String()]; dup {
			t.Errorf("records %s and %s share a manifest", prev, r)
		}
		digests[d.Digest.String()] = r
	}
}

func TestPublishCopiesTheManifestWithAnnotations(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	img := randomImage(t)
	st, err := s.put(ctx, sig(3), built{image: img})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(m.host + "/p/app")
	ann := map[string]string{stagesrepo.AnnotationCommit: strings.Repeat("c", 40), stagesrepo.AnnotationStage: st.String()}
	published, err := s.publish(ctx, st, repo, "main", ann, recordedNow)
	if err != nil {
		t.Fatal(err)
	}
	d := published.Digest
	if want, _ := img.ConfigName(); published.ID != want {
		t.Errorf("published image ID %s, the stage's config is %s", published.ID, want)
	}
	pub, err := remote.Image(repo.Tag("main"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := pub.Digest(); got != d {
		t.Errorf("published digest %s, answered %s", got, d)
	}
	mf, err := pub.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range ann {
		if mf.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, mf.Annotations[k], v)
		}
	}
	wantLayers, _ := img.Layers()
	gotLayers, _ := pub.Layers()
	if len(gotLayers) != len(wantLayers) {
		t.Fatalf("%d layers published, the stage has %d", len(gotLayers), len(wantLayers))
	}
	for i := range wantLayers {
		a, _ := wantLayers[i].Digest()
		b, _ := gotLayers[i].Digest()
		if a != b {
			t.Errorf("layer %d: %s, the stage's is %s", i, b, a)
		}
	}
	// The same publication again writes nothing.
	puts := m.count(http.MethodPut)
	if again, err := s.publish(ctx, st, repo, "main", ann, recordedNow); err != nil || again.Digest != d {
		t.Fatalf("second publish: %s %v", again.Digest, err)
	}
	if m.count(http.MethodPut) != puts {
		t.Error("publishing a tag that already has the manifest wrote again")
	}
}

// storedParentAndChild stores a random image as a copy of stage
// parentSig and answers it, read back, with a child made on it without a
// layer of its own (as a docker: stage is: its config changed).
func storedParentAndChild(t *testing.T, s *Storage, parentSig string) (stagesrepo.StageTag, v1.Image, v1.Image) {
	t.Helper()
	ctx := context.Background()
	parentTag, err := s.put(ctx, parentSig, built{image: randomImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	parent, err := s.Image(ctx, parentTag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := parent.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd = []string{"cat", "/opt/built.txt"}
	child, err := mutate.ConfigFile(parent, cf)
	if err != nil {
		t.Fatal(err)
	}
	return parentTag, parent, child
}

// TestAStageOfStoredLayersIsItsConfigAndManifest: a stage made on its
// stored parent without a layer of its own (a docker: stage) is stored
// with its config and its manifest alone: no question about the parent's
// layers, no connection set up again; and it reads back whole.
func TestAStageOfStoredLayersIsItsConfigAndManifest(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	_, parent, child := storedParentAndChild(t, s, sig(6))
	if !s.hasAllLayers(child) {
		t.Fatal("the child of a stored stage is not seen as made of stored layers")
	}
	if s.hasAllLayers(randomImage(t)) {
		t.Fatal("an image of new layers is seen as made of stored layers")
	}
	// The stage's edge record goes first, as in a build: the storage has
	// its connection for writes set up.
	if err := s.EnsureRecords(ctx, []string{stagesrepo.EdgeRecord(sig(7), sig(6))}); err != nil {
		t.Fatal(err)
	}
	var asked []string
	watch := func(w http.ResponseWriter, r *http.Request) bool {
		asked = append(asked, r.Method+" "+r.URL.Path)
		return false
	}
	m.answer.Store(&watch)
	st, err := s.put(ctx, sig(7), built{image: child})
	m.answer.Store(nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := parent.Layers()
	for _, a := range asked {
		for _, l := range layers {
			if d, _ := l.Digest(); strings.HasSuffix(a, d.String()) {
				t.Errorf("storing the child asked about its parent's layer: %s", a)
			}
		}
		if strings.HasSuffix(a, "/v2/") || strings.Contains(a, "/manifests/") && !strings.HasPrefix(a, "PUT ") {
			t.Errorf("storing the child made a needless request: %s", a)
		}
	}
	back, err := s.Image(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := child.Digest()
	if got, err := back.Digest(); err != nil || got != want {
		t.Errorf("stored child digest %s (%v), want %s", got, err, want)
	}
	if err := validate.Image(back); err != nil {
		t.Errorf("the stored child does not read back whole: %v", err)
	}
}

// TestHeadAheadIsTheFirstPublicationsAnswer: what a tag points at is
// asked once when asked ahead: the publication of that tag takes the
// answer; a later one asks again.
func TestHeadAheadIsTheFirstPublicationsAnswer(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	st, err := s.put(ctx, sig(8), built{image: randomImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(m.host + "/p/app")
	var heads atomic.Int64
	watch := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead && r.URL.Path == "/v2/p/app/manifests/main" {
			heads.Add(1)
		}
		return false
	}
	m.answer.Store(&watch)
	s.HeadAhead(ctx, []name.Tag{repo.Tag("main")})
	first, err := s.publish(ctx, st, repo, "main", nil, recordedNow)
	if err != nil {
		t.Fatal(err)
	}
	if heads.Load() != 1 {
		t.Errorf("the first publication asked what main points at %d times, want once (the answer asked ahead)", heads.Load())
	}
	// The answer ahead said main had nothing: main was written.
	if d, err := remote.Head(repo.Tag("main")); err != nil || d.Digest != first.Digest {
		t.Fatalf("main after publishing: %v %v, want %s", d, err, first.Digest)
	}
	heads.Store(0)
	puts := m.count(http.MethodPut)
	if _, err := s.publish(ctx, st, repo, "main", nil, recordedNow); err != nil {
		t.Fatal(err)
	}
	if heads.Load() != 1 || m.count(http.MethodPut) != puts {
		t.Errorf("publishing again: %d questions (want 1, the answer ahead is used once) and %d puts (want none)", heads.Load(), m.count(http.MethodPut)-puts)
	}
}

// TestPublishAfterMountAheadMountsOnlyWhatIsNew: once the blobs of a
// stage are mounted ahead into the images repository, publishing a stage
// made on it mounts only the blobs that stage added (here its config).
func TestPublishAfterMountAheadMountsOnlyWhatIsNew(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	parentTag, _, child := storedParentAndChild(t, s, sig(9))
	childTag, err := s.put(ctx, sig(10), built{image: child})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(m.host + "/p/app")
	if err := s.mountStage(ctx, repo, parentTag); err != nil {
		t.Fatal(err)
	}
	var asked []string
	var mu sync.Mutex
	watch := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/p/app/blobs/") {
			mu.Lock()
			asked = append(asked, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}
		return false
	}
	m.answer.Store(&watch)
	if _, err := s.publish(ctx, childTag, repo, "main", nil, recordedNow); err != nil {
		t.Fatal(err)
	}
	childConfig, _ := child.ConfigName()
	if len(asked) != 1 || !strings.HasSuffix(asked[0], childConfig.String()) {
		t.Errorf("publishing after the parent's blobs were mounted asked %v, want only the child's config %s", asked, childConfig)
	}
	if err := validate.Image(mustImage(t, repo.Tag("main"))); err != nil {
		t.Errorf("the published image does not read back whole: %v", err)
	}
}

func mustImage(t *testing.T, ref name.Reference) v1.Image {
	t.Helper()
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// recordedNow: the publication's records are already written.
func recordedNow() error { return nil }

// TestPublishWritesTheTagOnlyOnceRecorded: the tag's blobs are mounted
// while the publication records are written, and the tag waits for them;
// when they fail, no tag is written and publish answers their error.
func TestPublishWritesTheTagOnlyOnceRecorded(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	st, err := s.put(ctx, sig(5), built{image: randomImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	var mounts, tagPuts atomic.Int64
	watch := func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/p/app/blobs/"):
			// (This registry keeps one set of blobs for all
			// repositories: a mount is its HEAD.)
			mounts.Add(1)
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v2/p/app/manifests/"):
			tagPuts.Add(1)
		}
		return false
	}
	m.answer.Store(&watch)
	repo, _ := name.NewRepository(m.host + "/p/app")

	release := make(chan struct{})
	var mountsBefore, putsBefore int64
	recorded := func() error {
		mountsBefore, putsBefore = mounts.Load(), tagPuts.Load()
		<-release
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.publish(ctx, st, repo, "main", nil, recorded)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("publish ended before its records were written: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if mountsBefore == 0 || putsBefore != 0 || tagPuts.Load() != 1 {
		t.Errorf("before the records: %d mounts and %d tag puts (want some and none); after: %d tag puts (want 1)", mountsBefore, putsBefore, tagPuts.Load())
	}

	failed := errors.New("records refused")
	_, err = s.publish(ctx, st, repo, "other", nil, func() error { return failed })
	if !errors.Is(err, failed) {
		t.Errorf("publish with failed records = %v, want their error", err)
	}
	if _, err := remote.Head(repo.Tag("other")); err == nil {
		t.Error("the tag was written though its records failed")
	}
}

// Distribution's filesystem storage rewrites a blob's link in place when
// another client mounts that blob into the same repository; a manifest
// put checking the link in that moment is refused with DIGEST_INVALID and
// MANIFEST_BLOB_UNKNOWN (seen in CI with 32 builds publishing one image
// at once). The blob is there before and after: publishing puts again.
func TestPublishPutsAgainWhenTheRegistryCouldNotReadABlob(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	s := m.storage(t, "p/stages")
	st, err := s.put(ctx, sig(4), built{image: randomImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	answer := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || r.URL.Path != "/v2/p/app/manifests/main" || !refused.CompareAndSwap(0, 1) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},`+
			`{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:0"}]}`)
		return true
	}
	m.answer.Store(&answer)
	repo, _ := name.NewRepository(m.host + "/p/app")
	var trace strings.Builder
	err = registry.Retry(ctx, &trace, "publishing", func() (err error) {
		_, err = s.publish(ctx, st, repo, "main", nil, recordedNow)
		return err
	})
	if err != nil {
		t.Fatalf("publish after one refused put: %v", err)
	}
	if refused.Load() != 1 || !strings.Contains(trace.String(), "MANIFEST_BLOB_UNKNOWN") {
		t.Errorf("the refused put is not in the trace:\n%s", &trace)
	}
	if _, err := remote.Head(repo.Tag("main")); err != nil {
		t.Errorf("main is not published: %v", err)
	}
}

// TestListAheadIsTheNextRefresh: a build lists the storage while it reads
// werf.yaml and the commit's tree; its first Refresh takes that listing,
// and later ones list again.
func TestListAheadIsTheNextRefresh(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	if _, err := m.storage(t, "p/stages").put(ctx, sig(5), built{image: randomImage(t)}); err != nil {
		t.Fatal(err)
	}
	var lists atomic.Int64
	answer := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/tags/list") {
			lists.Add(1)
		}
		return false
	}
	m.answer.Store(&answer)
	s := m.storage(t, "p/stages")
	s.ListAhead(ctx)
	if err := s.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Find(ctx, sig(5)); !ok {
		t.Error("the listing made ahead does not have the stored stage")
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("ListAhead then Refresh listed %d times, want once", n)
	}
	if err := s.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := lists.Load(); n != 2 {
		t.Errorf("a second Refresh did not list again (%d listings)", n)
	}
}

func TestSyncCopiesWhatTheTargetLacksAndResumes(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	from, to := m.storage(t, "p/stages"), m.storage(t, "q/stages")
	var stored []stagesrepo.StageTag
	for i := 1; i <= 3; i++ {
		st, err := from.put(ctx, sig(i), built{image: randomImage(t)})
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, st)
	}
	// The target already has stage 2 (under a tag of its own).
	if _, err := to.put(ctx, sig(2), built{image: randomImage(t)}); err != nil {
		t.Fatal(err)
	}
	req := request.StagesSync{From: from.Repo.String(), To: to.Repo.String()}
	res, err := Sync(ctx, req, io.Discard)
	if err != nil || res.Copied != 2 || res.Present != 1 {
		t.Fatalf("first sync: %+v %v", res, err)
	}
	tags := m.tags(t, "q/stages")
	for _, st := range []stagesrepo.StageTag{stored[0], stored[2]} {
		if !contains(tags, st.String()) {
			t.Errorf("%s was not copied under its own tag: %v", st, tags)
		}
	}
	res, err = Sync(ctx, req, io.Discard)
	if err != nil || res.Copied != 0 || res.Present != 3 {
		t.Errorf("second sync: %+v %v", res, err)
	}
	if _, err := Sync(ctx, request.StagesSync{From: req.From, To: req.From}, io.Discard); err == nil {
		t.Error("a sync onto itself was accepted")
	}
}

// TestBuildWithoutEngineStoresOnceAndIsIdle builds a config whose stages
// need no container (base, git files, docker: directives) straight into
// the registry: every stage is stored once with its edge records, the
// image is published with its publication records, and the next build
// of the same files stores nothing.
func TestBuildWithoutEngineStoresOnceAndIsIdle(t *testing.T) {
	ctx := context.Background()
	m := newMemRegistry(t)
	base, _ := name.NewTag(m.host + "/base/busybox:1")
	baseImg, err := mutate.Config(randomImage(t), v1.Config{Env: []string{"PATH=/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(base, baseImg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"werf.yaml": "project: p\nconfigVersion: 1\n---\nimage: app\nfrom: " + base.String() + "\ngit:\n- add: /src\n  to: /app\ndocker:\n  ENV: {MODE: test}\n",
		"src/a.txt": "a\n",
		"src/b.txt": "b\n",
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	req := request.Build{
		Dir: dir, Project: "p", StagesStorage: m.host + "/p/stages", ImagesRepo: m.host + "/p",
		Commit: strings.Repeat("a", 40), Ref: request.Ref{Branch: "main"}, RefSlug: "main", TagStrategy: gitlab.TagOrBranch,
	}
	res, err := Build(ctx, req, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 4 { // from, gitArchive, gitLatestPatch, dockerInstructions
		t.Fatalf("stages: %+v", res.Reports)
	}
	for _, r := range res.Reports {
		if r.Outcome != OutcomeBuilt {
			t.Errorf("%s: %s, want built", r.Stage, r.Outcome)
		}
	}
	tags := m.tags(t, "p/stages")
	records := stagesrepo.ParseRecords(tags)
	final := res.Images[0].Stage.Signature
	closure, ok := records.Closure(final)
	if !ok || len(closure) != 4 {
		t.Errorf("the edge records lead from the final stage to %v (%v)", closure, ok)
	}
	for _, tag := range res.Images[0].Tags {
		key := stagesrepo.PublicationKey(m.host+"/p/app", tag)
		if p := records.Publications[key]; len(p) != 1 || p[0].Final != final {
			t.Errorf("publication record of %s: %+v", tag, p)
		}
	}
	exports := res.Exports()
	if exports["STAGEHAND_IMAGE_APP"] != m.host+"/p/app:main" || exports["STAGEHAND_IMAGE_APP_DIGEST"] == "" {
		t.Errorf("exports %v", exports)
	}
	pub, err := remote.Image(mustTag(t, exports["STAGEHAND_IMAGE_APP"]))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := pub.ConfigFile()
	if !contains(cf.Config.Env, "MODE=test") || cf.Config.Labels[stagesrepo.LabelProject] != "p" {
		t.Errorf("published config: env %v, labels %v", cf.Config.Env, cf.Config.Labels)
	}

	before := m.count(http.MethodPut) + m.count(http.MethodPost) + m.count(http.MethodPatch)
	again, err := Build(ctx, req, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range again.Reports {
		if r.Outcome != OutcomeStored {
			t.Errorf("second build: %s %s", r.Stage, r.Outcome)
		}
	}
	if writes := m.count(http.MethodPut) + m.count(http.MethodPost) + m.count(http.MethodPatch) - before; writes != 0 {
		t.Errorf("the idle build wrote %d times", writes)
	}
	if again.Exports()["STAGEHAND_IMAGE_APP_DIGEST"] != exports["STAGEHAND_IMAGE_APP_DIGEST"] {
		t.Error("the idle build published another manifest")
	}
}

func mustTag(t *testing.T, ref string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
