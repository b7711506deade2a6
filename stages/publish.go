package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// PublishTags are the tags an image is published under: the strategy's,
// then the commit's.
func PublishTags(req request.Build, final *plan.Stage) ([]string, error) {
	return publishTags(req, final.Signature)
}

// publishTags are PublishTags with the final stage's signature; without
// it (""), the tags known before the plan is made.
func publishTags(req request.Build, signature string) ([]string, error) {
	var first string
	switch req.TagStrategy {
	case "", gitlab.TagStagesSignature:
		first = signature
	case gitlab.TagOrBranch:
		if req.RefSlug == "" {
			return nil, fault.Jobf("tag strategy %s needs a branch or a git tag (CI_COMMIT_REF_NAME is empty)", gitlab.TagOrBranch)
		}
		first = req.RefSlug
	default:
		return nil, fault.Jobf("%s=%q: use %s or %s", gitlab.VarTagStrategy, req.TagStrategy, gitlab.TagStagesSignature, gitlab.TagOrBranch)
	}
	var tags []string
	if first != "" {
		tags = append(tags, first)
	}
	if req.Commit != "" && req.Commit != first {
		tags = append(tags, req.Commit)
	}
	return tags, nil
}

func publicationKind(req request.Build, i int) stagesrepo.PublicationKind {
	switch {
	case i > 0:
		return stagesrepo.PublishedCommit
	case req.TagStrategy == gitlab.TagOrBranch && req.Ref.Tag != "":
		return stagesrepo.PublishedGitTag
	case req.TagStrategy == gitlab.TagOrBranch:
		return stagesrepo.PublishedBranch
	}
	return stagesrepo.PublishedSignature
}

// imagesRepo is where an image is published: the images repository for
// the unnamed image, a repository under it for named ones.
func imagesRepo(base, image string) string {
	if image == "" {
		return base
	}
	return base + "/" + image
}

// publicationRefs are the tags images are published under, each image's
// final stage given by final (nil: the tags known before the plan is
// made); those that cannot be named are left to publish, which says why.
func publicationRefs(req request.Build, images []*config.Image, final func(image string) *plan.Stage) []name.Tag {
	var refs []name.Tag
	for _, img := range images {
		if img.Artifact || img.NotFinal {
			continue
		}
		sig := ""
		if final != nil {
			sig = final(img.Name).Signature
		}
		tags, err := publishTags(req, sig)
		repo, rerr := name.NewRepository(imagesRepo(req.ImagesRepo, img.Name))
		if err != nil || rerr != nil {
			continue
		}
		for _, t := range tags {
			refs = append(refs, repo.Tag(t))
		}
	}
	return refs
}

// publish gives an image its tags, each after its publication record, so
// that a tag stagehand published always has one: the records are written
// while the tags' blobs are mounted, and each tag waits for them.
// Manifests carry what cleanup needs to know of the image (see
// stagesrepo's annotations).
func publish(ctx context.Context, req request.Build, storage Store, st stagesrepo.StageTag, ip *plan.ImagePlan, trace io.Writer) (Published, error) {
	final := ip.Final
	tags, err := PublishTags(req, final)
	if err != nil {
		return Published{}, err
	}
	repoName := imagesRepo(req.ImagesRepo, ip.Image.Name)
	repo, err := name.NewRepository(repoName)
	if err != nil {
		return Published{}, fault.Jobf("images repository %q (STAGEHAND_IMAGES_REPO and the image name) is not a repository name: %v", repoName, err)
	}
	ann := map[string]string{
		stagesrepo.AnnotationCommit:     req.Commit,
		stagesrepo.AnnotationCommitTime: req.CommitTime,
		stagesrepo.AnnotationImage:      ip.Image.Name,
		stagesrepo.AnnotationStage:      st.String(),
		stagesrepo.AnnotationStages:     strings.Join(plan.NeededStages(final), ","),
	}
	switch {
	case req.Ref.Tag != "":
		ann[stagesrepo.AnnotationRef], ann[stagesrepo.AnnotationRefKind] = req.Ref.Tag, stagesrepo.RefKindTag
	case req.Ref.Branch != "":
		ann[stagesrepo.AnnotationRef], ann[stagesrepo.AnnotationRefKind] = req.Ref.Branch, stagesrepo.RefKindBranch
	}
	p := Published{Image: request.Image{Name: ip.Image.Name, Repository: repoName, Tag: tags[0]}, Tags: tags, Stage: st}
	records := make([]string, len(tags))
	for i, tag := range tags {
		records[i] = stagesrepo.PublicationRecord(publicationKind(req, i), repo.String(), tag, final.Signature)
	}
	written := make(chan struct{})
	var recordsErr error
	go func() {
		defer close(written)
		recordsErr = storage.EnsureRecords(ctx, records)
	}()
	defer func() { <-written }()
	recorded := func() error {
		<-written
		return recordsErr
	}
	// The tags go at once (their blobs are mounted once).
	pubs := make([]Publication, len(tags))
	one := func(i int) error {
		tag := tags[i]
		err := registry.Retry(ctx, trace, "publishing "+repo.Tag(tag).String(), func() (err error) {
			if recordsFailed(written, &recordsErr) {
				// Already retried: not the tag's to try again.
				return errRecordsFailed
			}
			pubs[i], err = storage.publish(ctx, st, repo, tag, ann, recorded)
			return err
		})
		if errors.Is(err, errRecordsFailed) || (err != nil && recordsFailed(written, &recordsErr)) {
			err = recordsErr
		}
		if err != nil {
			return fault.System(fmt.Errorf("publish %s: %w", ip.Image.Describe(), err))
		}
		return nil
	}
	var g errgroup.Group
	for i := range tags {
		g.Go(func() error { return one(i) })
	}
	if err := g.Wait(); err != nil {
		return Published{}, err
	}
	p.Digest, p.ID = pubs[len(pubs)-1].Digest.String(), pubs[len(pubs)-1].ID.String()
	fmt.Fprintf(trace, "Published %s as %s (%s)\n", ip.Image.Describe(), strings.Join(prefixTags(repoName, tags), ", "), p.Digest)
	return p, nil
}

// errRecordsFailed: the publication records could not be written.
var errRecordsFailed = errors.New("the publication records could not be written")

// recordsFailed tells, without waiting, that the records being written
// (written closes when done, err set before) failed. err is read only once
// written is closed: before, the writer may be setting it.
func recordsFailed(written <-chan struct{}, err *error) bool {
	select {
	case <-written:
		return *err != nil
	default:
		return false
	}
}

func prefixTags(repo string, tags []string) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = repo + ":" + t
	}
	return out
}
