package stagesrepo

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func sig(i int) string { return fmt.Sprintf("%056x", i) }

func TestRecordNamesAreTagsAndParseBack(t *testing.T) {
	repo := "registry.example.com/group/a-project-with-a-rather-long-name/and/a/deeply/nested/image/repository/name"
	names := []string{
		EdgeRecord(sig(1), ""),
		EdgeRecord(sig(2), sig(1)),
		PublicationRecord(PublishedCommit, repo, fmt.Sprintf("%040x", 7), sig(2)),
		PublicationRecord(PublishedBranch, repo, "feature-with-a-long-slug-of-the-longest-length-docker-allows-for-tags-0123456789-0123456789-0123456789-01", sig(2)),
	}
	for _, n := range names {
		// Docker tags: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
		if len(n) > 128 {
			t.Errorf("%s: %d characters, a tag has at most 128", n, len(n))
		}
		if !IsRecord(n) {
			t.Errorf("%s is not recognised as a record", n)
		}
		if _, ok := ParseStageTag(n); ok {
			t.Errorf("%s parses as a stage tag", n)
		}
	}
	for _, n := range []string{sig(1) + "-1700000000000", "import-" + sig(1), "e-" + sig(1), "e-" + sig(1) + "-1", "px-" + fmt.Sprintf("%040x", 1) + "-" + sig(1), "latest", "pc-" + sig(1)} {
		if IsRecord(n) {
			t.Errorf("%s is taken for a record", n)
		}
	}
	r := ParseRecords(names)
	if deps, ok := r.Edges[sig(1)]; !ok || len(deps) != 0 {
		t.Errorf("first stage: %v %v", deps, ok)
	}
	if deps := r.Edges[sig(2)]; !reflect.DeepEqual(deps, []string{sig(1)}) {
		t.Errorf("second stage depends on %v", deps)
	}
	key := PublicationKey(repo, fmt.Sprintf("%040x", 7))
	if p := r.Publications[key]; len(p) != 1 || p[0].Kind != PublishedCommit || p[0].Final != sig(2) || p[0].Record != names[2] {
		t.Errorf("publication: %+v", p)
	}
	if PublicationKey(repo, "a") == PublicationKey(repo+":a", "") || PublicationKey(repo, "a") == PublicationKey(repo, "b") {
		t.Error("publication keys collide")
	}
}

func TestClosureFollowsParentsAndImports(t *testing.T) {
	// 3 <- 2 <- 1 (first stage); 3 imports from artifact 5 <- 4.
	r := ParseRecords([]string{
		EdgeRecord(sig(1), ""), EdgeRecord(sig(2), sig(1)), EdgeRecord(sig(3), sig(2)), EdgeRecord(sig(3), sig(5)),
		EdgeRecord(sig(4), ""), EdgeRecord(sig(5), sig(4)),
		EdgeRecord(sig(7), sig(6)), // 6 has no records
	})
	got, ok := r.Closure(sig(3))
	sort.Strings(got)
	want := []string{sig(1), sig(2), sig(3), sig(4), sig(5)}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("closure of 3: %v %v", got, ok)
	}
	if _, ok := r.Closure(sig(7)); ok {
		t.Error("a closure through a stage without records is complete")
	}
	if _, ok := r.Closure(sig(9)); ok {
		t.Error("the closure of an unknown stage is complete")
	}
}

func TestPickStageTakesTheOldestCopy(t *testing.T) {
	sig := strings.Repeat("b", 56)
	got := Oldest([]StageTag{{sig, 300}, {sig, 100}, {sig, 200}})
	if got.Millis != 100 {
		t.Errorf("picked %d, want the oldest (100)", got.Millis)
	}
	if st, ok := ParseStageTag(got.String()); !ok || st != got {
		t.Errorf("tag %q does not parse back", got.String())
	}
	for _, bad := range []string{"latest", sig, sig + "-x", "import-" + sig, strings.Repeat("B", 56) + "-1"} {
		if _, ok := ParseStageTag(bad); ok {
			t.Errorf("%q parsed as a stage tag", bad)
		}
	}
}
