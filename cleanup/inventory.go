package cleanup

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/gitlab/api"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// Inventory is what the registry holds for a project.
type Inventory struct {
	Tags []Tag
	// StageTags are the stage tags of the stages storage.
	StageTags []string
	// Records are the stages storage's records (see stagesrepo).
	Records stagesrepo.Records
	// ManifestReads counts the published tags whose manifest had to be
	// read: those without exactly one publication record, or whose stages
	// the edge records do not lead to.
	ManifestReads int
	// NameReads counts the manifests read to name gone refs (see
	// NameGoneRefs).
	NameReads int
	// ConfigReads counts the image configs read of tags with no
	// stagehand annotation, to tell werf 1.1's images by their labels.
	ConfigReads int
	// repoIDs maps a repository's location to its API id.
	repoIDs map[string]int64
	// sizes of manifests by reference (config and layers), for the report.
	sizes map[string]int64
	// current maps a published tag read from its manifest to the final
	// signature it is now, so that records of earlier ones go.
	current map[string]string
	// listed are the publication keys of every listed tag.
	listed map[string]bool
}

var (
	sha1Tag = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sigTag  = regexp.MustCompile(`^[0-9a-f]{56}$`)
)

// classify reads what a published tag is from its manifest's annotations.
func classify(repo, tag, digest string, ann map[string]string) Tag {
	t := Tag{Repo: repo, Name: tag, Digest: digest, Kind: KindForeign}
	if ann[stagesrepo.AnnotationCommit] == "" {
		return t
	}
	t.Commit, t.Ref = ann[stagesrepo.AnnotationCommit], ann[stagesrepo.AnnotationRef]
	if ts, err := time.Parse(time.RFC3339, ann[stagesrepo.AnnotationCommitTime]); err == nil {
		t.Time = ts
	}
	if s := ann[stagesrepo.AnnotationStages]; s != "" {
		t.Stages = strings.Split(s, ",")
	}
	switch {
	case tag == t.Commit && sha1Tag.MatchString(tag):
		t.Kind = KindCommit
	case sigTag.MatchString(tag) && strings.HasPrefix(ann[stagesrepo.AnnotationStage], tag):
		t.Kind = KindSignature
	case ann[stagesrepo.AnnotationRefKind] == "tag":
		t.Kind = KindGitTag
	case ann[stagesrepo.AnnotationRefKind] == "branch":
		t.Kind = KindBranch
	default:
		t.Kind = KindForeign
	}
	return t
}

// werf 1.1's labels on the images it published.
const (
	werfLabelImage       = "werf-image"
	werfLabelTagStrategy = "werf-tag-strategy"
	werfLabelImageTag    = "werf-image-tag"
	werfLabelStage       = "werf-stage-signature"
)

// classifyWerf reads what an image werf 1.1 published is from its labels
// (its config's): ok is false for anything else. Its tag under werf's
// strategy is werf-image-tag (the registry tag also has the image's name
// before it in werf's monorepo mode); its age is its creation, as werf
// 1.1's cleanup reckoned it.
func classifyWerf(repo, tag, digest string, labels map[string]string, created time.Time) (Tag, bool) {
	if labels[werfLabelImage] != "true" || labels[werfLabelTagStrategy] == "" {
		return Tag{}, false
	}
	meta := labels[werfLabelImageTag]
	if meta == "" {
		meta = tag
	}
	t := Tag{Repo: repo, Name: tag, Digest: digest, Werf: true, Time: created}
	switch labels[werfLabelTagStrategy] {
	case "git-branch":
		t.Kind, t.Ref = KindBranch, meta
	case "git-tag":
		t.Kind, t.Ref = KindGitTag, meta
	case "git-commit":
		// werf 1.1 took the tag for a commit id; one that is not a full
		// SHA names no commit (werf deleted it as gone, as does this).
		t.Kind, t.Commit = KindCommit, meta
	case "stages-signature":
		t.Kind = KindSignature
	default:
		t.Kind = KindWerfCustom
	}
	return t, true
}

// fromRecord is a published tag as its one publication record tells it;
// ok is false when the edge records do not lead to all its stages.
func fromRecord(repo, tag string, p stagesrepo.Publication, recs stagesrepo.Records) (Tag, bool) {
	t := Tag{Repo: repo, Name: tag, Recorded: true}
	switch p.Kind {
	case stagesrepo.PublishedCommit:
		t.Kind, t.Commit = KindCommit, tag
	case stagesrepo.PublishedSignature:
		t.Kind = KindSignature
	case stagesrepo.PublishedBranch:
		t.Kind, t.Ref = KindBranch, tag
	case stagesrepo.PublishedGitTag:
		t.Kind, t.Ref = KindGitTag, tag
	}
	sigs, ok := recs.Closure(p.Final)
	t.Stages = sigs
	return t, ok
}

// ReadInventory lists the project's registry repositories and their tags
// through the API. A published tag with one publication record is known
// from names alone; the others' manifests are read from the registry (16
// at a time): manifests only, never a layer.
func ReadInventory(ctx context.Context, gl *api.Client, stagesRepo string, regOpts []remote.Option) (*Inventory, error) {
	repos, err := gl.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{repoIDs: map[string]int64{}, sizes: map[string]int64{}, current: map[string]string{}, listed: map[string]bool{}}
	var tags []published
	for _, r := range repos {
		location := normalRepo(r.Location)
		inv.repoIDs[location] = r.ID
		names, err := gl.RepositoryTags(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if location == normalRepo(stagesRepo) {
			inv.Records = stagesrepo.ParseRecords(names)
			for _, n := range names {
				if _, ok := stagesrepo.ParseStageTag(n); ok {
					inv.StageTags = append(inv.StageTags, n)
				}
			}
			continue
		}
		for _, t := range names {
			tags = append(tags, published{location, t})
		}
	}
	if inv.Records.Publications == nil {
		inv.Records = stagesrepo.ParseRecords(nil)
	}
	var unknown []published
	for _, p := range tags {
		key := stagesrepo.PublicationKey(p.repo, p.tag)
		inv.listed[key] = true
		if recs := inv.Records.Publications[key]; len(recs) == 1 {
			if t, ok := fromRecord(p.repo, p.tag, recs[0], inv.Records); ok {
				inv.Tags = append(inv.Tags, t)
				continue
			}
		}
		unknown = append(unknown, p)
	}
	inv.ManifestReads = len(unknown)
	foreign := map[published]Tag{}
	configs := map[published]string{}
	var labelled []published
	err = readManifests(ctx, unknown, regOpts, func(j published, digest string, m manifest) {
		t := classify(j.repo, j.tag, digest, m.Annotations)
		inv.sizes[t.Reference()] = m.size()
		// What it is now decides which of its records stay (none when
		// it is not stagehand's any more).
		st, _ := stagesrepo.ParseStageTag(m.Annotations[stagesrepo.AnnotationStage])
		inv.current[stagesrepo.PublicationKey(j.repo, j.tag)] = st.Signature
		if t.Kind == KindForeign && m.Config.Digest != "" {
			// Perhaps werf 1.1's: its labels are in the config.
			foreign[j], configs[j] = t, m.Config.Digest
			labelled = append(labelled, j)
			return
		}
		inv.Tags = append(inv.Tags, t)
	})
	if err != nil {
		return inv, err
	}
	inv.ConfigReads = len(labelled)
	err = readConfigs(ctx, labelled, configs, regOpts, func(j published, c imageConfig) {
		t := foreign[j]
		if w, ok := classifyWerf(j.repo, j.tag, t.Digest, c.Config.Labels, c.Created); ok {
			t = w
		}
		inv.Tags = append(inv.Tags, t)
	})
	return inv, err
}

// imageConfig is what cleanup reads of an image's config: werf 1.1's
// labels and the creation time.
type imageConfig struct {
	Created time.Time
	Config  struct{ Labels map[string]string }
}

// readConfigs reads the image configs of tags (16 at a time, each a small
// blob) and gives each to found, one at a time. A config that cannot be
// read or parsed gives an empty one: the tag then stays "not ours".
func readConfigs(ctx context.Context, tags []published, digests map[published]string, regOpts []remote.Option, found func(j published, c imageConfig)) error {
	return parallel(ctx, tags, regOpts, func(j published, opts []remote.Option) (func(), error) {
		ref, err := name.NewDigest(j.repo + "@" + digests[j])
		if err != nil {
			return func() { found(j, imageConfig{}) }, nil
		}
		l, err := remote.Layer(ref, opts...)
		if err != nil {
			return nil, fmt.Errorf("read the config of %s:%s: %w", j.repo, j.tag, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("read the config of %s:%s: %w", j.repo, j.tag, err)
		}
		defer rc.Close()
		var c imageConfig
		// An image config is small; a bigger one is not an image's.
		_ = json.NewDecoder(io.LimitReader(rc, 4<<20)).Decode(&c)
		return func() { found(j, c) }, nil
	})
}

// published is a published tag of a repository.
type published struct{ repo, tag string }

// manifest is what cleanup reads of a published tag's manifest.
type manifest struct {
	Annotations map[string]string
	Config      struct {
		Size   int64
		Digest string
	}
	Layers []struct{ Size int64 }
}

func (m manifest) size() int64 {
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

// readManifests reads the manifests of tags (16 at a time; manifests only,
// never a layer) and gives each to found, one at a time.
func readManifests(ctx context.Context, tags []published, regOpts []remote.Option, found func(j published, digest string, m manifest)) error {
	return parallel(ctx, tags, regOpts, func(j published, opts []remote.Option) (func(), error) {
		ref, err := name.NewTag(j.repo + ":" + j.tag)
		if err != nil {
			return nil, nil
		}
		desc, err := remote.Get(ref, opts...)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", ref, err)
		}
		var m manifest
		_ = json.Unmarshal(desc.Manifest, &m)
		return func() { found(j, desc.Digest.String(), m) }, nil
	})
}

// parallel reads tags 16 at a time through one puller (one registry
// handshake, kept connections); what each read answers runs one at a
// time. The first error wins.
func parallel(ctx context.Context, tags []published, regOpts []remote.Option, read func(j published, opts []remote.Option) (func(), error)) error {
	if len(tags) == 0 {
		return nil
	}
	puller, err := remote.NewPuller(append(regOpts, remote.WithContext(ctx))...)
	if err != nil {
		return err
	}
	opts := append(regOpts, remote.Reuse(puller), remote.WithContext(ctx))
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, j := range tags {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			done, err := read(j, opts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil && done != nil {
				done()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// maybeHashed tells the tag names that may be a slug with a hash (lower
// case letters, digits and '-', ending in '-' and 5 to 8 hex digits)
// rather than the branch or git tag's own name: stagehand publishes a ref
// whose name is not a valid image tag under such a slug. (A murmur3 hash
// has fewer than 5 hex digits once in 65,536: such a gone ref is named by
// its slug.)
var maybeHashed = regexp.MustCompile(`^[a-z0-9-]*-[0-9a-f]{5,8}$`)

// NameGoneRefs finds what the user called the gone branches and git tags
// of tags known from records (whose names may be slugs): the ref
// annotation of their manifests, read for those whose name may be a
// hashed slug. The plan's reasons then name them as the user wrote them.
func (inv *Inventory) NameGoneRefs(ctx context.Context, git Git, regOpts []remote.Option) error {
	byTag := map[published]*Tag{}
	var read []published
	for i := range inv.Tags {
		t := &inv.Tags[i]
		if !t.Recorded || (t.Kind != KindBranch && t.Kind != KindGitTag) {
			continue
		}
		live := git.Branches
		if t.Kind == KindGitTag {
			live = git.Tags
		}
		if live[t.Ref] || !maybeHashed.MatchString(t.Name) {
			continue
		}
		p := published{t.Repo, t.Name}
		byTag[p] = t
		read = append(read, p)
	}
	inv.NameReads = len(read)
	return readManifests(ctx, read, regOpts, func(j published, _ string, m manifest) {
		if ref := m.Annotations[stagesrepo.AnnotationRef]; ref != "" {
			byTag[j].Ref = ref
		}
	})
}

// normalRepo is a repository location as go-containerregistry names it,
// the form publication keys are made of.
func normalRepo(location string) string {
	if r, err := name.NewRepository(location); err == nil {
		return r.String()
	}
	return location
}

// Resolve completes the tags known from records, and werf 1.1's, with the
// git state: the branch or git tag a tag (werf's DockerTag of the name)
// stands for; for recorded tags the commit's time (from the API) as a
// commit image's age, and when its final stage was stored as a
// stages-signature image's.
func (inv *Inventory) Resolve(git Git, commitTimes map[string]time.Time) {
	bySlug := func(names map[string]bool) map[string]string {
		out := make(map[string]string, 2*len(names))
		for n := range names {
			// Earlier stagehand versions tagged with a slug of their own:
			// their images of live refs are still those refs'.
			out[gitlab.Slug(n, gitlab.TagSlugLimit)] = n
			out[gitlab.DockerTag(n)] = n
		}
		return out
	}
	branches, gitTags := bySlug(git.Branches), bySlug(git.Tags)
	stored := map[string]time.Time{}
	for _, tag := range inv.StageTags {
		st, _ := stagesrepo.ParseStageTag(tag)
		if t := time.UnixMilli(st.Millis); stored[st.Signature].IsZero() || t.Before(stored[st.Signature]) {
			stored[st.Signature] = t
		}
	}
	for i := range inv.Tags {
		t := &inv.Tags[i]
		if !t.Recorded && !t.Werf {
			continue
		}
		switch t.Kind {
		case KindBranch:
			if raw, ok := branches[t.Ref]; ok {
				t.Ref = raw
			}
		case KindGitTag:
			if raw, ok := gitTags[t.Ref]; ok {
				t.Ref = raw
			}
		}
		if t.Werf {
			continue
		}
		switch t.Kind {
		case KindCommit:
			t.Time = commitTimes[t.Commit]
		case KindSignature:
			if len(t.Stages) > 0 {
				t.Time = stored[t.Stages[0]]
			}
		}
	}
}

// CommitsToCheck are the commits of commit images, each once.
func (inv *Inventory) CommitsToCheck() []string {
	var shas []string
	seen := map[string]bool{}
	for _, t := range inv.Tags {
		if t.Kind == KindCommit && !seen[t.Commit] {
			seen[t.Commit] = true
			shas = append(shas, t.Commit)
		}
	}
	return shas
}

// FillDigests reads the digests of the tags known from records in the
// repositories where a workload pins an image by digest alone, so that
// the in-use rule can match them.
func (inv *Inventory) FillDigests(ctx context.Context, pinned map[string]bool, regOpts []remote.Option) error {
	for i := range inv.Tags {
		t := &inv.Tags[i]
		if !t.Recorded || t.Digest != "" || !pinned[t.Repo] {
			continue
		}
		ref, err := name.NewTag(t.Reference())
		if err != nil {
			continue
		}
		desc, err := remote.Head(ref, append(regOpts, remote.WithContext(ctx))...)
		if err != nil {
			return fmt.Errorf("read %s: %w", ref, err)
		}
		t.Digest = desc.Digest.String()
	}
	return nil
}

// RecordsToDelete are the records that go with a plan: the publication
// records of deleted tags, of tags that no longer exist and earlier ones
// of republished tags, and the edge records of stages no copy of which
// stays.
func (inv *Inventory) RecordsToDelete(p Plan, st []StageDecision) []string {
	var out []string
	deleted := map[string]bool{}
	for _, d := range p.Tags {
		if d.Delete {
			deleted[stagesrepo.PublicationKey(d.Tag.Repo, d.Tag.Name)] = true
		}
	}
	for key, recs := range inv.Records.Publications {
		cur, read := inv.current[key]
		for _, r := range recs {
			if deleted[key] || !inv.listed[key] || (read && r.Final != cur) {
				out = append(out, r.Record)
			}
		}
	}
	remaining := map[string]bool{}
	for _, s := range st {
		if !s.Delete {
			sig, _ := stagesrepo.ParseStageTag(s.Tag)
			remaining[sig.Signature] = true
		}
	}
	for sig, tags := range inv.Records.EdgeTags {
		if !remaining[sig] {
			out = append(out, tags...)
		}
	}
	return out
}
