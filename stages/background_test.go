package stages

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// TestBackgroundPushesRunInOrderAndStopAtTheFirstFailure: pushes run one
// at a time in the order queued (a stage after its parent), even when an
// earlier one is slow; those after a failure are told of it and push
// nothing; wait answers the first failure.
func TestBackgroundPushesRunInOrderAndStopAtTheFirstFailure(t *testing.T) {
	var q backgroundPushes
	var mu sync.Mutex
	var ran []int
	var toldEarlier []int
	broken := errors.New("registry said no")
	for i := range 5 {
		q.add(func(earlier error) error {
			if earlier != nil {
				mu.Lock()
				toldEarlier = append(toldEarlier, i)
				mu.Unlock()
				return errEarlierPushFailed
			}
			if i == 0 {
				time.Sleep(50 * time.Millisecond) // the slow first push
			}
			mu.Lock()
			ran = append(ran, i)
			mu.Unlock()
			if i == 2 {
				return broken
			}
			return nil
		})
	}
	if err := q.wait(); !errors.Is(err, broken) {
		t.Fatalf("wait = %v, want the third push's failure", err)
	}
	if !slices.Equal(ran, []int{0, 1, 2}) {
		t.Errorf("pushes ran %v, want 0, 1, 2 in order", ran)
	}
	if !slices.Equal(toldEarlier, []int{3, 4}) {
		t.Errorf("pushes told of the earlier failure: %v, want 3, 4", toldEarlier)
	}
}

// TestBackgroundPushDoneChannels: each push's channel closes when it ends,
// not before; an empty queue waits for nothing.
func TestBackgroundPushDoneChannels(t *testing.T) {
	var q backgroundPushes
	if err := q.wait(); err != nil {
		t.Fatalf("wait on nothing = %v", err)
	}
	release := make(chan struct{})
	first := q.add(func(error) error { <-release; return nil })
	second := q.add(func(error) error { return nil })
	select {
	case <-second:
		t.Fatal("the second push ended before the first")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-first
	<-second
	if err := q.wait(); err != nil {
		t.Fatalf("wait = %v", err)
	}
}

// TestListingDoesNotHideOwnStages: a listing made while a stage was pushed
// lacks it; the index keeps what this process stored.
func TestListingDoesNotHideOwnStages(t *testing.T) {
	var x stageIndex
	x.set(nil)
	own := stagesrepo.StageTag{Signature: sig(1), Millis: 1700000000000}
	x.add(own)
	x.set([]string{stagesrepo.StageTag{Signature: sig(2), Millis: 1700000000001}.String()})
	refresh := func(ctx context.Context) error { return nil }
	for _, want := range []string{sig(1), sig(2)} {
		if _, ok, _ := x.find(context.Background(), refresh, want); !ok {
			t.Errorf("%s is not in the index after a listing", want[:12])
		}
	}
	x.set([]string{own.String()})
	x.mu.Lock()
	n := len(x.stages[sig(1)])
	x.mu.Unlock()
	if n != 1 {
		t.Errorf("a stage both listed and stored here counts %d copies, want 1", n)
	}
}

// TestBaseToPullAhead: the base is pulled ahead when the first missing
// stage is made in the registry and an engine stage follows it; not when
// the first missing stage is the engine's (its parent is pulled at once),
// nor when a Dockerfile builds (the engine pulls its FROM), nor when all
// is stored.
func TestBaseToPullAhead(t *testing.T) {
	const base = "registry.example.com/base:1"
	chain := func(kinds ...plan.StageKind) []*plan.Stage {
		var out []*plan.Stage
		for i, k := range kinds {
			s := &plan.Stage{Kind: k, Signature: sig(100 + i)}
			if k == plan.KindBase {
				s.BaseRef = base
			}
			if i > 0 {
				s.Parent = out[i-1]
			}
			out = append(out, s)
		}
		return out
	}
	for _, c := range []struct {
		name   string
		stages []*plan.Stage
		stored int // how many of the first stages are stored
		want   string
	}{
		{"cold: from, git archive, then a shell stage", chain(plan.KindBase, plan.KindGitArchive, plan.KindShell), 0, base},
		{"from stored, git archive missing", chain(plan.KindBase, plan.KindGitArchive, plan.KindShell), 1, base},
		{"the first missing stage is the shell stage", chain(plan.KindBase, plan.KindGitArchive, plan.KindShell), 2, ""},
		{"all stored", chain(plan.KindBase, plan.KindGitArchive, plan.KindShell), 3, ""},
		{"no engine stage", chain(plan.KindBase, plan.KindGitArchive, plan.KindDocker), 0, ""},
		{"a Dockerfile", chain(plan.KindDockerfile), 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var storage fakeFind
			for _, s := range c.stages[:c.stored] {
				storage.add(s.Signature)
			}
			if got := baseToPullAhead(context.Background(), &storage, c.stages); got != c.want {
				t.Errorf("baseToPullAhead = %q, want %q", got, c.want)
			}
		})
	}
}

// fakeFind is a Store whose Find answers from a set of signatures.
type fakeFind struct {
	Store
	sigs []string
}

func (f *fakeFind) add(sig string) { f.sigs = append(f.sigs, sig) }

func (f *fakeFind) Find(_ context.Context, sig string) (stagesrepo.StageTag, bool, error) {
	if slices.Contains(f.sigs, sig) {
		return stagesrepo.StageTag{Signature: sig, Millis: 1}, true, nil
	}
	return stagesrepo.StageTag{}, false, nil
}

// TestLastEngineStage: the stage whose blobs are mounted ahead of the
// publication is the last one the engine builds, or the first when the
// engine builds none.
func TestLastEngineStage(t *testing.T) {
	st := func(names string) []*plan.Stage {
		var out []*plan.Stage
		kinds := map[byte]plan.StageKind{'b': plan.KindBase, 's': plan.KindShell, 'g': plan.KindGitArchive, 'd': plan.KindDocker, 'f': plan.KindDockerfile, 'i': plan.KindImports}
		for i := range names {
			out = append(out, &plan.Stage{Name: plan.StageName(fmt.Sprint(i)), Kind: kinds[names[i]]})
		}
		return out
	}
	for _, c := range []struct {
		kinds string
		want  int // index, -1: none
	}{
		{"bgssgd", 3},
		{"bgd", 0},
		{"f", 0},
		{"fd", 0},
		{"bsgis", 4},
		{"", -1},
	} {
		stages := st(c.kinds)
		got := lastEngineStage(stages)
		if c.want < 0 {
			if got != nil {
				t.Errorf("%q: %s, want none", c.kinds, got.Name)
			}
			continue
		}
		if got != stages[c.want] {
			t.Errorf("%q: stage %v, want %d", c.kinds, got, c.want)
		}
	}
}
