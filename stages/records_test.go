package stages

import (
	"fmt"
	"reflect"
	"sort"
	"testing"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

func sig(i int) string { return fmt.Sprintf("%056x", i) }

func TestEdgeRecordsMatchNeededStages(t *testing.T) {
	art := &plan.Stage{Signature: sig(4)}
	artFinal := &plan.Stage{Signature: sig(5), Parent: art}
	first := &plan.Stage{Signature: sig(1)}
	second := &plan.Stage{Signature: sig(2), Parent: first}
	final := &plan.Stage{Signature: sig(3), Parent: second, ImportSource: []*plan.Stage{artFinal}}
	var names []string
	for _, s := range []*plan.Stage{art, artFinal, first, second, final} {
		names = append(names, edgeRecords(s)...)
	}
	got, ok := stagesrepo.ParseRecords(names).Closure(final.Signature)
	want := plan.NeededStages(final)
	sort.Strings(got)
	sort.Strings(want)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("closure %v, NeededStages %v", got, want)
	}
}

func TestPublicationKinds(t *testing.T) {
	for _, c := range []struct {
		o    request.Build
		i    int
		want stagesrepo.PublicationKind
	}{
		{request.Build{}, 0, stagesrepo.PublishedSignature},
		{request.Build{TagStrategy: gitlab.TagStagesSignature}, 1, stagesrepo.PublishedCommit},
		{request.Build{TagStrategy: gitlab.TagOrBranch, Ref: request.Ref{Branch: "main"}}, 0, stagesrepo.PublishedBranch},
		{request.Build{TagStrategy: gitlab.TagOrBranch, Ref: request.Ref{Tag: "v1"}}, 0, stagesrepo.PublishedGitTag},
		{request.Build{TagStrategy: gitlab.TagOrBranch, Ref: request.Ref{Tag: "v1"}}, 1, stagesrepo.PublishedCommit},
	} {
		if got := publicationKind(c.o, c.i); got != c.want {
			t.Errorf("%+v tag %d: %c, want %c", c.o, c.i, got, c.want)
		}
	}
}
