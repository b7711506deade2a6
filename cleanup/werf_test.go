package cleanup

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/registry"
)

// werfLabels are the labels werf 1.1 put on an image it published
// (research: werf v1.1.23 pkg/build/publish_images_phase.go).
func werfLabels(strategy, metaTag string) map[string]string {
	return map[string]string{
		"werf": "shop", "werf-version": "v1.1.23+fix53", "werf-cache-version": "1.1",
		"werf-image": "true", "werf-image-name": "backend", "werf-tag-strategy": strategy, "werf-image-tag": metaTag,
		"werf-stage-signature": strings.Repeat("a", 56), "werf-image-version": "1",
	}
}

func TestWerfImagesByTheirLabels(t *testing.T) {
	repo := "registry.example.com/shop/backend"
	created := now.Add(-48 * time.Hour)
	sha := func(i int) string { return fmt.Sprintf("%040x", i) }
	type werfTag struct{ tag, strategy, meta string }
	tags := []werfTag{
		{"master", "git-branch", "master"},
		{gitlab.DockerTag("feature/Login Form"), "git-branch", gitlab.DockerTag("feature/Login Form")},
		{gitlab.DockerTag("feature/gone"), "git-branch", gitlab.DockerTag("feature/gone")},
		// monorepo mode: the image's name before werf's tag
		{"backend-" + gitlab.DockerTag("release/1.0"), "git-branch", gitlab.DockerTag("release/1.0")},
		{"v1.2.3", "git-tag", "v1.2.3"},
		{"v0.1", "git-tag", "v0.1"},
		{sha(1), "git-commit", sha(1)},
		{sha(2), "git-commit", sha(2)},
		{"abc1234", "git-commit", "abc1234"}, // a short id names no commit
		{strings.Repeat("c", 56), "stages-signature", strings.Repeat("c", 56)},
		{"nightly", "custom", "nightly"},
	}
	var inv Inventory
	for _, w := range tags {
		tg, ok := classifyWerf(repo, w.tag, "sha256:"+w.tag, werfLabels(w.strategy, w.meta), created)
		if !ok {
			t.Fatalf("%s: not recognized as werf's", w.tag)
		}
		inv.Tags = append(inv.Tags, tg)
	}
	for _, labels := range []map[string]string{
		nil,
		{"werf-image": "false", "werf-stage-signature": strings.Repeat("a", 56)}, // a werf stage
		{"werf-image": "true"}, // no strategy: werf's cleanup skipped it too
	} {
		if tg, ok := classifyWerf(repo, "x", "", labels, created); ok {
			t.Errorf("labels %v: recognized as %s", labels, tg.Kind)
		}
	}
	git := Git{
		Branches: map[string]bool{"master": true, "feature/Login Form": true, "release/1.0": true},
		Tags:     map[string]bool{"v1.2.3": true},
		Commits:  map[string]bool{sha(1): true},
	}
	if got := inv.CommitsToCheck(); fmt.Sprint(got) != fmt.Sprint([]string{sha(1), sha(2), "abc1234"}) {
		t.Errorf("commits to check: %v", got)
	}
	inv.Resolve(git, map[string]time.Time{sha(1): now.Add(-time.Minute)})
	plan := Decide(inv.Tags, git, InUse{}, gitlab.Policies{GitTag: gitlab.Policy{Limit: 10, ExpiryDays: 30}, GitCommit: gitlab.Policy{Limit: 50, ExpiryDays: 1}, StagesSignature: gitlab.Policy{Limit: -1, ExpiryDays: -1}}, now)
	wantPlan(t, plan, map[string]string{
		repo + ":master": "keep branch master exists",
		repo + ":" + gitlab.DockerTag("feature/Login Form"):  "keep branch feature/Login Form exists",
		repo + ":" + gitlab.DockerTag("feature/gone"):        "delete branch " + gitlab.DockerTag("feature/gone") + " is gone",
		repo + ":backend-" + gitlab.DockerTag("release/1.0"): "keep branch release/1.0 exists",
		repo + ":v1.2.3":                     "keep git tag v1.2.3 exists",
		repo + ":v0.1":                       "delete git tag v0.1 is gone",
		repo + ":" + sha(1):                  "delete older than the commit policy's 1 days", // its age is its creation, as in werf
		repo + ":" + sha(2):                  "delete commit " + sha(2)[:8] + " is gone",
		repo + ":abc1234":                    "delete commit abc1234 is gone",
		repo + ":" + strings.Repeat("c", 56): "keep within the signature policy",
		repo + ":nightly":                    "keep werf 1.1 custom tag (werf 1.1 never removed those either)",
	})
}

// TestReadConfigsTellsWerfImages: the labels come from the image config
// in the registry.
func TestReadConfigsTellsWerfImages(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	repo := strings.TrimPrefix(srv.URL, "http://") + "/shop/backend"
	put := func(tag string, labels map[string]string, created time.Time) string {
		cf, _ := empty.Image.ConfigFile()
		cf = cf.DeepCopy()
		cf.Config.Labels = labels
		cf.Created = v1.Time{Time: created}
		img, err := mutate.ConfigFile(empty.Image, cf)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(mustTag(t, repo+":"+tag), img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.ConfigName()
		return d.String()
	}
	created := time.Date(2021, 6, 1, 12, 0, 0, 0, time.UTC)
	digests := map[published]string{
		{repo, "master"}: put("master", werfLabels("git-branch", "master"), created),
		{repo, "latest"}: put("latest", map[string]string{"maintainer": "someone"}, created),
	}
	got := map[string]imageConfig{}
	err := readConfigs(context.Background(), []published{{repo, "master"}, {repo, "latest"}}, digests, registry.Options(context.Background(), "", nil), func(j published, c imageConfig) {
		got[j.tag] = c
	})
	if err != nil {
		t.Fatal(err)
	}
	tg, ok := classifyWerf(repo, "master", "", got["master"].Config.Labels, got["master"].Created)
	if !ok || tg.Kind != KindBranch || tg.Ref != "master" || !tg.Time.Equal(created) {
		t.Errorf("master: %+v, %v", tg, ok)
	}
	if _, ok := classifyWerf(repo, "latest", "", got["latest"].Config.Labels, got["latest"].Created); ok {
		t.Error("latest (not werf's) was taken for werf's")
	}
}
