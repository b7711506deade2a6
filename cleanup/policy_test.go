package cleanup

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/gitlab"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func sig(n int) string { return fmt.Sprintf("%056x", n) }

// wantPlan checks every decision of a plan against "keep|delete reason"
// by reference.
func wantPlan(t *testing.T, plan Plan, want map[string]string) {
	t.Helper()
	for _, d := range plan.Tags {
		if got := action(d.Delete) + " " + d.Reason; got != want[d.Tag.Reference()] {
			t.Errorf("%s: %q, want %q", d.Tag.Reference(), got, want[d.Tag.Reference()])
		}
	}
}

func TestDecideTable(t *testing.T) {
	days := func(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }
	tags := []Tag{
		{Repo: "r", Name: "main", Digest: "d1", Kind: KindBranch, Ref: "main", Commit: "c1", Time: days(1)},
		{Repo: "r", Name: "gone-branch", Digest: "d2", Kind: KindBranch, Ref: "gone-branch", Commit: "c2", Time: days(1)},
		{Repo: "r", Name: "used-branch", Digest: "d3", Kind: KindBranch, Ref: "used-branch", Commit: "c3", Time: days(1)},
		{Repo: "r", Name: "v1", Digest: "d4", Kind: KindGitTag, Ref: "v1", Commit: "c4", Time: days(400)},
		{Repo: "r", Name: "v0", Digest: "d5", Kind: KindGitTag, Ref: "v0", Commit: "c5", Time: days(400)},
		{Repo: "r", Name: "c1", Digest: "d1", Kind: KindCommit, Commit: "c1", Time: days(40)},
		{Repo: "r", Name: "c6", Digest: "d6", Kind: KindCommit, Commit: "c6", Time: days(40)},
		{Repo: "r", Name: "c7", Digest: "d7", Kind: KindCommit, Commit: "c7", Time: days(1)},
		{Repo: "r", Name: "c8", Digest: "d8", Kind: KindCommit, Commit: "c8", Time: days(2)},
		{Repo: "r", Name: "c9", Digest: "d9", Kind: KindCommit, Commit: "gone", Time: days(1)},
		{Repo: "r", Name: "latest", Digest: "dx", Kind: KindForeign},
	}
	git := Git{
		Branches: map[string]bool{"main": true},
		Tags:     map[string]bool{"v1": true},
		Commits:  map[string]bool{"c1": true, "c6": true, "c7": true, "c8": true},
	}
	inUse := InUse{ByRef: map[string]string{}, ByDigest: map[string]string{"d3": "cronjob ns/backup (initContainer restore)"}}
	plan := Decide(tags, git, inUse, gitlab.Policies{GitCommit: gitlab.Policy{Limit: 1, ExpiryDays: 30}, StagesSignature: gitlab.Policy{Limit: -1, ExpiryDays: -1}}, now)
	want := map[string]string{
		"r:main":        "keep branch main exists",
		"r:gone-branch": "delete branch gone-branch is gone",
		"r:used-branch": "keep in use (by digest) by cronjob ns/backup (initContainer restore)",
		"r:v1":          "keep git tag v1 exists",
		"r:v0":          "delete git tag v0 is gone",
		"r:c1":          "keep same manifest as kept r:main (would be older than the commit policy's 30 days)",
		"r:c6":          "delete older than the commit policy's 30 days",
		"r:c7":          "keep within the commit policy",
		"r:c8":          "delete beyond the commit policy's limit of 1",
		"r:c9":          "delete commit gone is gone",
		"r:latest":      "keep not published by stagehand",
	}
	wantPlan(t, plan, want)
}

func TestDecideStages(t *testing.T) {
	plan := Plan{Tags: []Decision{
		{Tag: Tag{Repo: "r", Name: "kept", Stages: []string{sig(1), sig(2)}}},
		{Tag: Tag{Repo: "r", Name: "gone", Stages: []string{sig(3)}}, Delete: true},
	}}
	old := now.Add(-3 * time.Hour).UnixMilli()
	young := now.Add(-time.Hour).UnixMilli()
	tags := []string{
		fmt.Sprintf("%s-%d", sig(1), old), fmt.Sprintf("%s-%d", sig(3), old),
		fmt.Sprintf("%s-%d", sig(4), young), "import-" + sig(5), "latest",
	}
	got := DecideStages(tags, plan, now)
	if len(got) != 3 {
		t.Fatalf("decisions: %+v", got)
	}
	for _, d := range got {
		wantDelete := strings.HasPrefix(d.Tag, sig(3))
		if d.Delete != wantDelete {
			t.Errorf("%s: delete=%v (%s)", d.Tag, d.Delete, d.Reason)
		}
	}
}

// TestDecideNeverDeletesWhatMustStay runs random histories and checks the
// plan's promises: nothing in use, nothing of a live branch or an existing
// git tag, nothing sharing a manifest with a kept tag, no stage a kept
// image needs, and no more commit images than the limit kept by policy.
func TestDecideNeverDeletesWhatMustStay(t *testing.T) {
	const cases = 600
	for c := 0; c < cases; c++ {
		rng := rand.New(rand.NewSource(int64(c)))
		h := randomHistory(rng)
		plan := Decide(h.tags, h.git, h.inUse, h.pol, now)
		if len(plan.Tags) != len(h.tags) {
			t.Fatalf("case %d: %d decisions for %d tags", c, len(plan.Tags), len(h.tags))
		}
		keptDigests := map[string]bool{}
		needed := map[string]bool{}
		keptCommits := map[string]int{}
		for _, d := range plan.Kept() {
			keptDigests[d.Tag.Digest] = true
			for _, s := range d.Tag.Stages {
				needed[s] = true
			}
		}
		for _, d := range plan.Tags {
			tg := d.Tag
			if d.Reason == "" {
				t.Fatalf("case %d: %s decided without a reason", c, tg.Reference())
			}
			if !d.Delete {
				if tg.Kind == KindCommit && strings.HasPrefix(d.Reason, "within") {
					keptCommits[tg.Repo]++
				}
				continue
			}
			switch {
			case h.inUse.ByRef[tg.Reference()] != "" || h.inUse.ByDigest[tg.Digest] != "":
				t.Fatalf("case %d: deletes %s, which is in use", c, tg.Reference())
			case tg.Kind == KindBranch && h.git.Branches[tg.Ref]:
				t.Fatalf("case %d: deletes %s of live branch %s", c, tg.Reference(), tg.Ref)
			case tg.Kind == KindGitTag && h.git.Tags[tg.Ref]:
				t.Fatalf("case %d: deletes %s of existing git tag %s", c, tg.Reference(), tg.Ref)
			case tg.Kind == KindForeign:
				t.Fatalf("case %d: deletes foreign tag %s", c, tg.Reference())
			case keptDigests[tg.Digest]:
				t.Fatalf("case %d: deletes %s, whose manifest a kept tag shares", c, tg.Reference())
			}
		}
		for repo, n := range keptCommits {
			if h.pol.GitCommit.Limit >= 0 && n > h.pol.GitCommit.Limit {
				t.Fatalf("case %d: %d commit images of %s kept by policy, limit %d", c, n, repo, h.pol.GitCommit.Limit)
			}
		}
		for _, sd := range DecideStages(h.stageTags, plan, now) {
			if sd.Delete && needed[sd.Tag[:56]] {
				t.Fatalf("case %d: deletes stage %s, which a kept image needs", c, sd.Tag)
			}
			if sd.Delete {
				var ms int64
				fmt.Sscan(sd.Tag[57:], &ms)
				if now.Sub(time.UnixMilli(ms)) < StagesYoung {
					t.Fatalf("case %d: deletes young stage %s", c, sd.Tag)
				}
			}
		}
	}
}

type history struct {
	tags      []Tag
	git       Git
	inUse     InUse
	pol       gitlab.Policies
	stageTags []string
}

// randomHistory: branches and tags come and go, builds publish a branch or
// tag image plus a commit image, digests are shared when a build of one
// commit is published twice, some images are in use.
func randomHistory(rng *rand.Rand) history {
	h := history{
		git:   Git{Branches: map[string]bool{}, Tags: map[string]bool{}, Commits: map[string]bool{}},
		inUse: InUse{ByRef: map[string]string{}, ByDigest: map[string]string{}},
		pol: gitlab.Policies{
			GitCommit:       gitlab.Policy{Limit: rng.Intn(6) - 1, ExpiryDays: rng.Intn(40) - 1},
			StagesSignature: gitlab.Policy{Limit: rng.Intn(4) - 1, ExpiryDays: rng.Intn(10) - 1},
		},
	}
	repos := []string{"reg/p", "reg/p/backend"}
	nBuilds := 1 + rng.Intn(40)
	for b := 0; b < nBuilds; b++ {
		repo := repos[rng.Intn(len(repos))]
		commit := fmt.Sprintf("c%d", rng.Intn(30))
		digest := fmt.Sprintf("sha256:%d", rng.Intn(25))
		when := now.Add(-time.Duration(rng.Intn(24*60)) * time.Hour)
		stages := []string{sig(rng.Intn(50)), sig(rng.Intn(50))}
		var ref Tag
		if rng.Intn(4) == 0 {
			name := fmt.Sprintf("v%d", rng.Intn(6))
			ref = Tag{Repo: repo, Name: name, Kind: KindGitTag, Ref: name}
			h.git.Tags[name] = h.git.Tags[name] || rng.Intn(2) == 0
		} else {
			name := fmt.Sprintf("feature-%d", rng.Intn(8))
			ref = Tag{Repo: repo, Name: name, Kind: KindBranch, Ref: name}
			h.git.Branches[name] = h.git.Branches[name] || rng.Intn(2) == 0
		}
		ref.Digest, ref.Commit, ref.Time, ref.Stages = digest, commit, when, stages
		h.tags = append(h.tags, ref)
		h.tags = append(h.tags, Tag{Repo: repo, Name: commit, Digest: digest, Kind: KindCommit, Commit: commit, Time: when, Stages: stages})
		if rng.Intn(3) == 0 {
			h.tags = append(h.tags, Tag{Repo: repo, Name: stages[0], Digest: digest, Kind: KindSignature, Commit: commit, Time: when, Stages: stages})
		}
		h.git.Commits[commit] = h.git.Commits[commit] || rng.Intn(3) > 0
		if rng.Intn(10) == 0 {
			h.inUse.ByDigest[digest] = "deployment ns/app"
		}
		if rng.Intn(10) == 0 {
			h.inUse.ByRef[ref.Reference()] = "cronjob ns/job (initContainer init)"
		}
	}
	if rng.Intn(5) == 0 {
		h.tags = append(h.tags, Tag{Repo: repos[0], Name: "latest", Digest: "sha256:x", Kind: KindForeign})
	}
	// Dedupe tags by reference: a registry tag points at one manifest.
	seen := map[string]bool{}
	var tags []Tag
	for i := len(h.tags) - 1; i >= 0; i-- {
		if r := h.tags[i].Reference(); !seen[r] {
			seen[r] = true
			tags = append(tags, h.tags[i])
		}
	}
	h.tags = tags
	for s := 0; s < 50; s++ {
		age := time.Duration(rng.Intn(6*60)) * time.Minute
		h.stageTags = append(h.stageTags, fmt.Sprintf("%s-%d", sig(s), now.Add(-age).UnixMilli()))
	}
	return h
}
