// Package cleanup decides which published images, stages and builder
// caches of a project may go, and removes them. The decision (Plan) is a
// pure function of what the registry, git and the cluster say: every item
// deleted or kept comes with its reason.
package cleanup

import (
	"fmt"
	"sort"
	"time"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// Kind is what a published tag stands for.
type Kind string

const (
	KindBranch    Kind = "branch"    // tag-or-branch on a branch
	KindGitTag    Kind = "git-tag"   // tag-or-branch on a git tag
	KindCommit    Kind = "commit"    // the commit SHA tag
	KindSignature Kind = "signature" // the stages-signature tag
	KindForeign   Kind = "not ours"  // no stagehand annotations, not werf's
	// KindWerfCustom is a werf 1.1 image published with --tag-custom:
	// werf 1.1 never removed those, and neither does stagehand.
	KindWerfCustom Kind = "werf custom tag"
)

// Tag is one published tag with what its manifest's annotations say.
type Tag struct {
	Repo, Name string
	Digest     string
	Kind       Kind
	// Ref is the branch or git tag it was built from; Commit its commit.
	Ref, Commit string
	// Time is the commit's time: the image's age for policies.
	Time time.Time
	// Stages are the signatures of the stages it was built from.
	Stages []string
	// Recorded: known from its publication record, not its manifest (its
	// Digest is then unknown unless a workload pins its repository by
	// digest).
	Recorded bool
	// Werf: published by werf 1.1 (its labels); Ref is then the slug werf
	// tagged it with until Resolve finds the branch or git tag, and Time
	// the image's creation, as werf 1.1's cleanup used.
	Werf bool
}

// Ref is repo:name.
func (t Tag) Reference() string { return t.Repo + ":" + t.Name }

// Git is the repository's state from the GitLab API.
type Git struct {
	Branches map[string]bool
	Tags     map[string]bool
	// Commits holds the commits that exist; a commit not in it is gone.
	Commits map[string]bool
}

// InUse are the images workloads of the cluster use, by reference and by
// digest, with who uses them.
type InUse struct {
	ByRef    map[string]string // "repo:tag" -> "cronjob ns/name (initContainer x)"
	ByDigest map[string]string // "sha256:..." -> user
	// Pinned are the repositories used by digest alone (repo@sha256:…).
	Pinned map[string]bool
}

// merge adds what another cluster (its kubeconfig context) uses.
func (u InUse) merge(other InUse, context string) InUse {
	if u.ByRef == nil {
		u = InUse{ByRef: map[string]string{}, ByDigest: map[string]string{}, Pinned: map[string]bool{}}
	}
	where := ""
	if context != "" {
		where = " (context " + context + ")"
	}
	for k, v := range other.ByRef {
		if _, ok := u.ByRef[k]; !ok {
			u.ByRef[k] = v + where
		}
	}
	for k, v := range other.ByDigest {
		if _, ok := u.ByDigest[k]; !ok {
			u.ByDigest[k] = v + where
		}
	}
	for k := range other.Pinned {
		u.Pinned[k] = true
	}
	return u
}

// Decision is one item of a plan.
type Decision struct {
	Tag    Tag
	Delete bool
	Reason string
}

// Plan is what cleanup will do with the published tags.
type Plan struct {
	Tags []Decision
}

// Deleted are the decisions to delete.
func (p Plan) Deleted() []Decision { return p.filter(true) }

// Kept are the decisions to keep.
func (p Plan) Kept() []Decision { return p.filter(false) }

func (p Plan) filter(del bool) []Decision {
	var out []Decision
	for _, d := range p.Tags {
		if d.Delete == del {
			out = append(out, d)
		}
	}
	return out
}

// Decide plans the cleanup of published tags. Rules, in order:
//   - a tag whose image a workload uses is kept (by reference or digest);
//   - a tag not published by stagehand is kept; werf 1.1's images count
//     as stagehand's (by their labels), but for werf's custom tags;
//   - a branch image goes with its branch;
//   - a git tag image goes with its tag, and is kept while the tag exists;
//   - a commit image goes with its commit, then when older than the commit
//     policy's expiry or beyond its limit (newest first, per repository);
//   - a stages-signature image goes by the signature policy;
//   - finally a tag to delete is kept when a kept tag has the same manifest
//     (deleting one would delete the other where tags are deleted by
//     manifest: another branch's image is never touched, werf #1643).
func Decide(tags []Tag, git Git, inUse InUse, pol gitlab.Policies, now time.Time) Plan {
	ds := make([]Decision, len(tags))
	for i, t := range tags {
		ds[i] = Decision{Tag: t}
	}
	undecided := func(d *Decision) bool { return d.Reason == "" }
	for i := range ds {
		d := &ds[i]
		t := d.Tag
		if who, ok := inUse.ByRef[t.Reference()]; ok {
			d.Reason = "in use by " + who
		} else if who, ok := inUse.ByDigest[t.Digest]; ok && t.Digest != "" {
			d.Reason = "in use (by digest) by " + who
		}
		if !undecided(d) {
			continue
		}
		switch t.Kind {
		case KindForeign:
			d.Reason = "not published by stagehand"
		case KindWerfCustom:
			d.Reason = "werf 1.1 custom tag (werf 1.1 never removed those either)"
		case KindBranch:
			if git.Branches[t.Ref] {
				d.Reason = "branch " + t.Ref + " exists"
			} else {
				d.Delete, d.Reason = true, "branch "+t.Ref+" is gone"
			}
		case KindGitTag:
			if git.Tags[t.Ref] {
				d.Reason = "git tag " + t.Ref + " exists"
			} else {
				d.Delete, d.Reason = true, "git tag "+t.Ref+" is gone"
			}
		case KindCommit:
			if !git.Commits[t.Commit] {
				d.Delete, d.Reason = true, "commit "+short(t.Commit)+" is gone"
			}
		}
	}
	bound(ds, KindCommit, pol.GitCommit, "commit", now)
	bound(ds, KindSignature, pol.StagesSignature, "stages-signature", now)
	for i := range ds {
		if undecided(&ds[i]) {
			ds[i].Reason = "within the " + string(ds[i].Tag.Kind) + " policy"
		}
	}
	// Keep what shares a manifest with a kept tag.
	keptDigest := map[string]string{}
	for _, d := range ds {
		if !d.Delete && d.Tag.Digest != "" {
			if _, ok := keptDigest[d.Tag.Digest]; !ok {
				keptDigest[d.Tag.Digest] = d.Tag.Reference()
			}
		}
	}
	for i := range ds {
		d := &ds[i]
		if other, ok := keptDigest[d.Tag.Digest]; ok && d.Delete && d.Tag.Digest != "" {
			d.Delete, d.Reason = false, "same manifest as kept "+other+" (would be "+d.Reason+")"
		}
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Tag.Reference() < ds[j].Tag.Reference() })
	return Plan{Tags: ds}
}

// bound applies a policy's expiry and limit to the undecided tags of a
// kind, per repository, newest first.
func bound(ds []Decision, kind Kind, p gitlab.Policy, name string, now time.Time) {
	byRepo := map[string][]*Decision{}
	for i := range ds {
		d := &ds[i]
		if d.Tag.Kind == kind && d.Reason == "" {
			byRepo[d.Tag.Repo] = append(byRepo[d.Tag.Repo], d)
		}
	}
	for _, list := range byRepo {
		sort.SliceStable(list, func(i, j int) bool { return list[i].Tag.Time.After(list[j].Tag.Time) })
		kept := 0
		for _, d := range list {
			switch {
			case p.ExpiryDays >= 0 && now.Sub(d.Tag.Time) > time.Duration(p.ExpiryDays)*24*time.Hour:
				d.Delete, d.Reason = true, fmt.Sprintf("older than the %s policy's %d days", name, p.ExpiryDays)
			case p.Limit >= 0 && kept >= p.Limit:
				d.Delete, d.Reason = true, fmt.Sprintf("beyond the %s policy's limit of %d", name, p.Limit)
			default:
				kept++
			}
		}
	}
}

func short(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

// StageDecision is one stage of the storage in a stages plan.
type StageDecision struct {
	Tag    string // <signature>-<unix ms>
	Delete bool
	Reason string
}

// StagesYoung is how recent a stage must be to survive regardless: a build
// in flight may not have published the image that needs it yet.
const StagesYoung = 2 * time.Hour

// DecideStages plans the stages: those a kept image needs stay, as do
// those younger than StagesYoung; the rest go. stageTags are the stage
// tags of the storage (<signature>-<unix ms>); other tags are left alone.
func DecideStages(stageTags []string, plan Plan, now time.Time) []StageDecision {
	needed := map[string]string{}
	for _, d := range plan.Kept() {
		for _, s := range d.Tag.Stages {
			if _, ok := needed[s]; !ok {
				needed[s] = d.Tag.Reference()
			}
		}
	}
	var out []StageDecision
	for _, tag := range stageTags {
		st, ok := stagesrepo.ParseStageTag(tag)
		if !ok {
			continue
		}
		sig, age := st.Signature, now.Sub(time.UnixMilli(st.Millis))
		switch {
		case needed[sig] != "":
			out = append(out, StageDecision{Tag: tag, Reason: "needed by kept " + needed[sig]})
		case age < StagesYoung:
			out = append(out, StageDecision{Tag: tag, Reason: fmt.Sprintf("younger than %s (a build may be in flight)", StagesYoung)})
		default:
			out = append(out, StageDecision{Tag: tag, Delete: true, Reason: "no kept image needs it"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tag < out[j].Tag })
	return out
}
