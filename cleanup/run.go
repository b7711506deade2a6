package cleanup

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab/api"
	"gitlab.com/stagehand/stagehand/internal/kubeconfig"
	"gitlab.com/stagehand/stagehand/stages"

	"k8s.io/client-go/kubernetes"
)

// Locker takes the project lock exclusive for the whole cleanup, so that
// no build stores or publishes meanwhile.
type Locker = stages.Locker

// Options is one cleanup of a project.
type Options struct {
	APIURL, Token, Project string
	StagesRepo             string
	// Kubeconfig finds the cluster whose workloads' images stay ("" =
	// $KUBECONFIG, else in-cluster); Namespaces are where to look when
	// cluster-wide listing is forbidden.
	Kubeconfig string
	Namespaces []string
	Policies   Policies
	DryRun     bool
	// Registry access (the job's DOCKER_CONFIG).
	DockerConfig string
	Transport    http.RoundTripper
	Locker       Locker
	LockProject  string
	// Builder, when set, cleans the host's engine afterwards.
	Builder *BuilderOptions
	Trace   io.Writer
	Now     time.Time
}

// Report is what a cleanup did (or would do).
type Report struct {
	Plan        Plan
	Stages      []StageDecision
	Deleted     []string
	FreedBytes  int64
	APIRequests int64
	Builder     BuilderReport
}

// Run plans the cleanup and, unless DryRun, applies it: registry tags,
// then stages, then the builder's local cache.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	gl, err := api.New(o.APIURL, o.Token, o.Project, nil)
	if err != nil {
		return nil, fault.Job(err)
	}
	if o.Locker != nil {
		lease, err := o.Locker.Acquire(ctx, stages.ProjectLockName(o.LockProject), false, func(holder string) {
			fmt.Fprintf(o.Trace, "Waiting for the project lock of %s (builds hold it; last taken by %s)\n", o.LockProject, holder)
		})
		if err != nil {
			return nil, fmt.Errorf("take the project lock exclusively: %w", err)
		}
		defer lease.Release()
		var cancel context.CancelCauseFunc
		ctx, cancel = stages.WhileHeld(ctx, lease)
		defer cancel(nil)
	}
	regOpts := stages.RegistryOptions(ctx, stages.Keychain{Dir: o.DockerConfig}, o.Transport)

	rep := &Report{}
	t0 := time.Now()
	inv, err := ReadInventory(ctx, gl, o.StagesRepo, regOpts)
	if err != nil {
		return nil, apiFault(err)
	}
	tInventory := time.Since(t0)
	t0 = time.Now()
	git := Git{}
	if git.Branches, err = gl.Branches(ctx); err != nil {
		return nil, apiFault(err)
	}
	if git.Tags, err = gl.Tags(ctx); err != nil {
		return nil, apiFault(err)
	}
	var shas []string
	seen := map[string]bool{}
	for _, t := range inv.Tags {
		if t.Kind == KindCommit && !seen[t.Commit] {
			seen[t.Commit] = true
			shas = append(shas, t.Commit)
		}
	}
	if git.Commits, err = gl.Commits(ctx, shas); err != nil {
		return nil, apiFault(err)
	}
	tGit := time.Since(t0)
	t0 = time.Now()
	rc, err := kubeconfig.RESTConfig(o.Kubeconfig)
	if err != nil {
		return nil, fault.Job(fmt.Errorf("images in use: %w", err))
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fault.System(err)
	}
	inUse, err := ImagesInUse(ctx, kc, o.Namespaces, o.Trace)
	if err != nil {
		return nil, fault.Job(err)
	}
	fmt.Fprintf(o.Trace, "Found %d published tags and %d stage tags (%s), %d branches, %d git tags and %d of %d commits (%s), %d images in use (%s)\n",
		len(inv.Tags), len(inv.StageTags), tInventory.Round(time.Millisecond), len(git.Branches), len(git.Tags), len(git.Commits), len(shas),
		tGit.Round(time.Millisecond), len(inUse.ByRef)+len(inUse.ByDigest), time.Since(t0).Round(time.Millisecond))

	rep.Plan = Decide(inv.Tags, git, inUse, o.Policies, o.Now)
	rep.Stages = DecideStages(inv.StageTags, rep.Plan, o.Now)
	WritePlan(o.Trace, rep.Plan, rep.Stages)
	if o.DryRun {
		fmt.Fprintln(o.Trace, "Dry run: nothing deleted")
		rep.APIRequests = gl.Requests()
		return rep, nil
	}

	del := func(repo, tag string) error {
		id, ok := inv.repoIDs[repo]
		if !ok {
			return fmt.Errorf("no registry repository %s in the project", repo)
		}
		err := gl.DeleteTag(ctx, id, tag)
		if err != nil && api.IsRefused(err) {
			// The token may read but not delete: try the registry itself
			// with the job's login, which usually may not either (werf #4672).
			ref, perr := name.NewTag(repo + ":" + tag)
			if perr != nil {
				return err
			}
			if derr := deleteByManifest(ctx, ref, regOpts); derr != nil {
				return fmt.Errorf("%v; and the registry refused the manifest DELETE too: %w", err, derr)
			}
			return nil
		}
		return err
	}
	for _, d := range rep.Plan.Deleted() {
		if err := del(d.Tag.Repo, d.Tag.Name); err != nil {
			return rep, fault.System(fmt.Errorf("delete %s: %w", d.Tag.Reference(), err))
		}
		rep.Deleted = append(rep.Deleted, d.Tag.Reference())
		rep.FreedBytes += inv.sizes[d.Tag.Reference()]
		fmt.Fprintf(o.Trace, "Deleted %s (%s)\n", d.Tag.Reference(), d.Reason)
	}
	n := 0
	for _, s := range rep.Stages {
		if !s.Delete {
			continue
		}
		if err := del(o.StagesRepo, s.Tag); err != nil {
			return rep, fault.System(fmt.Errorf("delete stage %s: %w", s.Tag, err))
		}
		rep.Deleted = append(rep.Deleted, o.StagesRepo+":"+s.Tag)
		n++
	}
	fmt.Fprintf(o.Trace, "Registry: deleted %d image tags (%s of manifests' blobs no longer referenced by them) and %d stages\n",
		len(rep.Plan.Deleted()), humanBytes(rep.FreedBytes), n)
	if o.Builder != nil {
		remaining := map[string]bool{}
		for _, s := range rep.Stages {
			if !s.Delete {
				remaining[s.Tag] = true
			}
		}
		br, err := CleanBuilder(ctx, *o.Builder, o.StagesRepo, remaining, o.Trace)
		rep.Builder = br
		if err != nil {
			return rep, fault.System(err)
		}
	}
	rep.APIRequests = gl.Requests()
	return rep, nil
}

func apiFault(err error) error {
	if api.IsRefused(err) {
		return fault.Job(err)
	}
	return fault.System(err)
}

// deleteByManifest deletes a tag's manifest in the registry.
func deleteByManifest(ctx context.Context, ref name.Tag, regOpts []remote.Option) error {
	desc, err := remote.Head(ref, append(regOpts, remote.WithContext(ctx))...)
	if err != nil {
		return err
	}
	return remote.Delete(ref.Context().Digest(desc.Digest.String()), append(regOpts, remote.WithContext(ctx))...)
}

// WritePlan prints the plan as tables: every tag and stage with what
// happens to it and why.
func WritePlan(w io.Writer, p Plan, st []StageDecision) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE TAG\tKIND\tACTION\tWHY")
	for _, d := range p.Tags {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Tag.Reference(), d.Tag.Kind, action(d.Delete), d.Reason)
	}
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tACTION\tWHY")
	for _, s := range st {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Tag, action(s.Delete), s.Reason)
	}
	tw.Flush()
	del, keep := len(p.Deleted()), len(p.Kept())
	sdel := 0
	for _, s := range st {
		if s.Delete {
			sdel++
		}
	}
	fmt.Fprintf(w, "Plan: delete %d of %d image tags (keep %d), delete %d of %d stages\n", del, del+keep, keep, sdel, len(st))
}

func action(del bool) string {
	if del {
		return "delete"
	}
	return "keep"
}

func humanBytes(n int64) string {
	units := []string{"B", "KB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
