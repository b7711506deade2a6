package cleanup

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// TestGoneRefsAreNamedAsTheUserWroteThem: a tag known from its record
// alone is named by its slug; when its git tag or branch is gone, the
// plan's reason names the ref as the user wrote it (read from the
// manifest), and only names that may be hashed slugs cost a read.
func TestGoneRefsAreNamedAsTheUserWroteThem(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	repo := strings.TrimPrefix(srv.URL, "http://") + "/shop"
	publish := func(tag, ref, kind string) {
		img := mutate.Annotations(empty.Image, map[string]string{
			stagesrepo.AnnotationRef: ref, stagesrepo.AnnotationRefKind: kind, stagesrepo.AnnotationCommit: strings.Repeat("a", 40),
		}).(v1.Image)
		if err := remote.Write(mustTag(t, repo+":"+tag), img); err != nil {
			t.Fatal(err)
		}
	}
	gone := map[string]string{ // tag name → the ref as written
		gitlab.Slug("v1.0.0", gitlab.TagSlugLimit):        "v1.0.0",
		gitlab.Slug("feature/login", gitlab.TagSlugLimit): "feature/login",
	}
	publish(gitlab.Slug("v1.0.0", gitlab.TagSlugLimit), "v1.0.0", stagesrepo.RefKindTag)
	publish(gitlab.Slug("feature/login", gitlab.TagSlugLimit), "feature/login", stagesrepo.RefKindBranch)
	final := strings.Repeat("1", 56)
	inv := recordedInventory(t, repo, map[string]stagesrepo.PublicationKind{
		gitlab.Slug("v1.0.0", gitlab.TagSlugLimit):        stagesrepo.PublishedGitTag,
		gitlab.Slug("feature/login", gitlab.TagSlugLimit): stagesrepo.PublishedBranch,
		"main":          stagesrepo.PublishedBranch, // live: named from the API, no read
		"Old_Release.2": stagesrepo.PublishedGitTag, // gone, but no slug looks like this: no read
	}, map[string]string{
		gitlab.Slug("v1.0.0", gitlab.TagSlugLimit): final, gitlab.Slug("feature/login", gitlab.TagSlugLimit): final, "main": final, "Old_Release.2": final,
	}, []string{final + "-1"}, stagesrepo.EdgeRecord(final, ""))
	git := Git{Branches: map[string]bool{"main": true}, Tags: map[string]bool{}, Commits: map[string]bool{}}
	inv.Resolve(git, nil)
	if err := inv.NameGoneRefs(context.Background(), git, registry.Options(context.Background(), "", nil)); err != nil {
		t.Fatal(err)
	}
	if inv.NameReads != 2 {
		t.Errorf("%d manifests read, want the 2 whose names may be slugs", inv.NameReads)
	}
	plan := Decide(inv.Tags, git, InUse{}, gitlab.DefaultPolicies, time.Now())
	reasons := map[string]string{}
	for _, d := range plan.Tags {
		reasons[d.Tag.Name] = d.Reason
	}
	for tag, ref := range gone {
		if !strings.Contains(reasons[tag], " "+ref+" is gone") {
			t.Errorf("%s: %q, want it to name %s", tag, reasons[tag], ref)
		}
	}
	if !strings.Contains(reasons["Old_Release.2"], "git tag Old_Release.2 is gone") {
		t.Errorf("Old_Release.2: %q", reasons["Old_Release.2"])
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
