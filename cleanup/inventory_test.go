package cleanup

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// recordedInventory is an inventory as ReadInventory makes it from the
// names of tags alone.
func recordedInventory(t *testing.T, repo string, published map[string]stagesrepo.PublicationKind, finals map[string]string, stageTags []string, extra ...string) *Inventory {
	t.Helper()
	var names []string
	names = append(names, stageTags...)
	names = append(names, extra...)
	for tag, kind := range published {
		names = append(names, stagesrepo.PublicationRecord(kind, repo, tag, finals[tag]))
	}
	inv := &Inventory{Records: stagesrepo.ParseRecords(names), listed: map[string]bool{}, current: map[string]string{}}
	for _, n := range names {
		if _, ok := stagesrepo.ParseStageTag(n); ok {
			inv.StageTags = append(inv.StageTags, n)
		}
	}
	for tag := range published {
		key := stagesrepo.PublicationKey(repo, tag)
		inv.listed[key] = true
		tg, ok := fromRecord(repo, tag, inv.Records.Publications[key][0], inv.Records)
		if !ok {
			t.Fatalf("%s: its stages are not all recorded", tag)
		}
		inv.Tags = append(inv.Tags, tg)
	}
	sort.Slice(inv.Tags, func(i, j int) bool { return inv.Tags[i].Name < inv.Tags[j].Name })
	return inv
}

func TestInventoryFromRecordsDecidesLikeAnnotations(t *testing.T) {
	repo := "registry.example.com/shop"
	commit := func(i int) string { return fmt.Sprintf("%040x", i) }
	branch := "Feature/Émoji" // werf's DockerTag: slugged with a hash suffix
	slug := gitlab.DockerTag(branch)
	// An earlier stagehand tagged with a slug of its own; its image of a
	// live branch is still that branch's.
	older := "Release_2"
	olderSlug := gitlab.Slug(older, gitlab.TagSlugLimit)
	if olderSlug == gitlab.DockerTag(older) {
		t.Fatalf("the two slugs of %s agree: the case tests nothing", older)
	}
	old := now.Add(-3 * time.Hour).UnixMilli()
	stageTags := []string{
		fmt.Sprintf("%s-%d", sig(1), old), fmt.Sprintf("%s-%d", sig(2), old), fmt.Sprintf("%s-%d", sig(3), old),
		fmt.Sprintf("%s-%d", sig(9), old),
	}
	edges := []string{
		stagesrepo.EdgeRecord(sig(1), ""), stagesrepo.EdgeRecord(sig(2), sig(1)), stagesrepo.EdgeRecord(sig(3), sig(1)),
		stagesrepo.EdgeRecord(sig(9), ""),
	}
	published := map[string]stagesrepo.PublicationKind{
		commit(1): stagesrepo.PublishedCommit, commit(2): stagesrepo.PublishedCommit, commit(3): stagesrepo.PublishedCommit,
		slug: stagesrepo.PublishedBranch, olderSlug: stagesrepo.PublishedBranch, "gone-branch": stagesrepo.PublishedBranch, "v1": stagesrepo.PublishedGitTag,
		sig(2): stagesrepo.PublishedSignature,
	}
	finals := map[string]string{commit(1): sig(2), commit(2): sig(2), commit(3): sig(3), slug: sig(2), olderSlug: sig(2), "gone-branch": sig(3), "v1": sig(2), sig(2): sig(2)}
	inv := recordedInventory(t, repo, published, finals, stageTags, edges...)
	git := Git{
		Branches: map[string]bool{branch: true, older: true},
		Tags:     map[string]bool{"v1": true},
		Commits:  map[string]bool{commit(1): true, commit(2): true},
	}
	times := map[string]time.Time{commit(1): now.Add(-time.Hour), commit(2): now.Add(-2 * time.Hour)}
	inv.Resolve(git, times)
	plan := Decide(inv.Tags, git, InUse{}, gitlab.Policies{GitCommit: gitlab.Policy{Limit: 1, ExpiryDays: 30}, StagesSignature: gitlab.Policy{Limit: -1, ExpiryDays: -1}}, now)
	want := map[string]string{
		repo + ":" + commit(1):     "keep within the commit policy",
		repo + ":" + commit(2):     "delete beyond the commit policy's limit of 1",
		repo + ":" + commit(3):     "delete commit " + commit(3)[:8] + " is gone",
		repo + ":" + slug:          "keep branch " + branch + " exists",
		repo + ":" + olderSlug:     "keep branch " + older + " exists",
		repo + ":" + "gone-branch": "delete branch gone-branch is gone",
		repo + ":" + "v1":          "keep git tag v1 exists",
		repo + ":" + sig(2):        "keep within the signature policy",
	}
	wantPlan(t, plan, want)
	for _, tg := range inv.Tags {
		if tg.Kind == KindSignature && !tg.Time.Equal(time.UnixMilli(old)) {
			t.Errorf("the signature image's age is %v, want its final stage's %v", tg.Time, time.UnixMilli(old))
		}
	}
	st := DecideStages(inv.StageTags, plan, now)
	kept := map[string]bool{}
	for _, s := range st {
		if !s.Delete {
			kept[s.Tag[:56]] = true
		}
	}
	// sig 3 is needed only by deleted images; 9 by nothing.
	if !kept[sig(1)] || !kept[sig(2)] || kept[sig(3)] || kept[sig(9)] {
		t.Errorf("stages kept: %v", kept)
	}
	gone := map[string]bool{}
	for _, r := range inv.RecordsToDelete(plan, st) {
		gone[r] = true
	}
	for _, tag := range []string{commit(2), commit(3), "gone-branch"} {
		if !gone[stagesrepo.PublicationRecord(published[tag], repo, tag, finals[tag])] {
			t.Errorf("the record of deleted %s stays", tag)
		}
	}
	for _, tag := range []string{commit(1), slug, olderSlug, "v1", sig(2)} {
		if gone[stagesrepo.PublicationRecord(published[tag], repo, tag, finals[tag])] {
			t.Errorf("the record of kept %s goes", tag)
		}
	}
	if !gone[stagesrepo.EdgeRecord(sig(3), sig(1))] || !gone[stagesrepo.EdgeRecord(sig(9), "")] || gone[stagesrepo.EdgeRecord(sig(2), sig(1))] || gone[stagesrepo.EdgeRecord(sig(1), "")] {
		t.Errorf("edge records deleted: %v", gone)
	}
	if len(gone) != 5 {
		t.Errorf("%d records deleted, want 5: %v", len(gone), gone)
	}
}

func TestRecordsOfRepublishedAndVanishedTags(t *testing.T) {
	repo := "registry.example.com/shop"
	main := stagesrepo.PublicationKey(repo, "main")
	inv := &Inventory{
		Records: stagesrepo.ParseRecords([]string{
			stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "main", sig(1)),
			stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "main", sig(2)),
			stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "vanished", sig(2)),
		}),
		// main has two records: its manifest was read, it is sig 2 now.
		listed:  map[string]bool{main: true},
		current: map[string]string{main: sig(2)},
	}
	got := inv.RecordsToDelete(Plan{Tags: []Decision{{Tag: Tag{Repo: repo, Name: "main", Kind: KindBranch, Ref: "main"}, Reason: "branch main exists"}}}, nil)
	sort.Strings(got)
	want := []string{stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "main", sig(1)), stagesrepo.PublicationRecord(stagesrepo.PublishedBranch, repo, "vanished", sig(2))}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records deleted %v, want %v", got, want)
	}
}
