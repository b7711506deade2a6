package cleanup

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/gitlab/api"
	"gitlab.com/stagehand/stagehand/stages"
)

// Inventory is what the registry holds for a project.
type Inventory struct {
	Tags []Tag
	// StageTags are the stage tags of the stages storage.
	StageTags []string
	// repoIDs maps a repository's location to its API id.
	repoIDs map[string]int64
	// sizes of manifests by reference (config and layers), for the report.
	sizes map[string]int64
}

var (
	sha1Tag = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sigTag  = regexp.MustCompile(`^[0-9a-f]{56}$`)
)

// classify reads what a published tag is from its manifest's annotations.
func classify(repo, tag, digest string, ann map[string]string, size int64) Tag {
	t := Tag{Repo: repo, Name: tag, Digest: digest, Kind: KindForeign}
	if ann[stages.AnnotationCommit] == "" {
		return t
	}
	t.Commit, t.Ref = ann[stages.AnnotationCommit], ann[stages.AnnotationRef]
	if ts, err := time.Parse(time.RFC3339, ann[stages.AnnotationCommitTime]); err == nil {
		t.Time = ts
	}
	if s := ann[stages.AnnotationStages]; s != "" {
		t.Stages = strings.Split(s, ",")
	}
	switch {
	case tag == t.Commit && sha1Tag.MatchString(tag):
		t.Kind = KindCommit
	case sigTag.MatchString(tag) && strings.HasPrefix(ann[stages.AnnotationStage], tag):
		t.Kind = KindSignature
	case ann[stages.AnnotationRefKind] == "tag":
		t.Kind = KindGitTag
	case ann[stages.AnnotationRefKind] == "branch":
		t.Kind = KindBranch
	default:
		t.Kind = KindForeign
	}
	return t
}

// ReadInventory lists the project's registry repositories through the API
// and reads every published tag's manifest from the registry (16 at a
// time): manifests only, never a layer.
func ReadInventory(ctx context.Context, gl *api.Client, stagesRepo string, regOpts []remote.Option) (*Inventory, error) {
	repos, err := gl.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{repoIDs: map[string]int64{}, sizes: map[string]int64{}}
	type job struct{ repo, tag string }
	var jobs []job
	for _, r := range repos {
		inv.repoIDs[r.Location] = r.ID
		tags, err := gl.RepositoryTags(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if r.Location == stagesRepo {
			inv.StageTags = tags
			continue
		}
		for _, t := range tags {
			jobs = append(jobs, job{r.Location, t})
		}
	}
	// One puller for every read: one registry handshake, kept connections.
	puller, err := remote.NewPuller(append(regOpts, remote.WithContext(ctx))...)
	if err != nil {
		return nil, err
	}
	regOpts = append(regOpts, remote.Reuse(puller))
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ref, err := name.NewTag(j.repo + ":" + j.tag)
			if err != nil {
				return
			}
			desc, err := remote.Get(ref, append(regOpts, remote.WithContext(ctx))...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("read %s: %w", ref, err)
				}
				return
			}
			var m struct {
				Annotations map[string]string
				Config      struct{ Size int64 }
				Layers      []struct{ Size int64 }
			}
			_ = json.Unmarshal(desc.Manifest, &m)
			size := m.Config.Size
			for _, l := range m.Layers {
				size += l.Size
			}
			t := classify(j.repo, j.tag, desc.Digest.String(), m.Annotations, size)
			inv.sizes[t.Reference()] = size
			inv.Tags = append(inv.Tags, t)
		}()
	}
	wg.Wait()
	return inv, firstErr
}
