package cleanup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/gitlab/api"
	"gitlab.com/stagehand/stagehand/internal/kubeconfig"
	"gitlab.com/stagehand/stagehand/lock"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	stagetrace "gitlab.com/stagehand/stagehand/trace"

	"k8s.io/client-go/kubernetes"
)

// Option changes how Run reaches the outside world.
type Option func(*options)

type options struct {
	transport http.RoundTripper
	now       time.Time
}

// WithTransport carries every registry call through rt (tests count them).
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithNow plans as of now instead of the clock's time.
func WithNow(now time.Time) Option { return func(o *options) { o.now = now } }

// Report is what a cleanup did (or would do).
type Report struct {
	Plan   Plan
	Stages []StageDecision
	// Records are the records (stages/records.go) deleted with the plan.
	Records     []string
	Deleted     []string
	FreedBytes  int64
	APIRequests int64
	Builder     BuilderReport
	// InUseUnknown: a dry run could not read what the cluster runs.
	InUseUnknown bool
}

// policies are the request's, overridden by the project's config
// (cleanup: in stagehand.yaml or werf.yaml) when it has one.
func policies(req request.Cleanup, trace io.Writer) (gitlab.Policies, error) {
	p := req.Policies
	if req.Dir == "" {
		return p, nil
	}
	cfg, err := config.LoadConfig(req.Dir, req.Vars)
	switch {
	case errors.Is(err, config.ErrNoConfig):
		return p, nil
	case err != nil:
		return p, fault.Job(err)
	}
	if o := cfg.CleanupPolicies(p); o != p {
		fmt.Fprintf(trace, "Cleanup policies from %s: commits %+v, stages-signature %+v\n", cfg.File, o.GitCommit, o.StagesSignature)
		p = o
	}
	return p, nil
}

// Run plans the cleanup and, unless DryRun, applies it: registry tags,
// then stages, then the builder's local cache.
func Run(ctx context.Context, req request.Cleanup, trace io.Writer, opts ...Option) (*Report, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if o.now.IsZero() {
		o.now = time.Now()
	}
	pols, err := policies(req, trace)
	if err != nil {
		return nil, err
	}
	gl, err := api.New(req.APIURL, req.Token, req.Project, api.WithTrace(trace))
	if err != nil {
		return nil, fault.Job(err)
	}
	locker, err := lock.For(req.Locks)
	if err != nil {
		return nil, fault.System(err)
	}
	if locker != nil {
		defer locker.Close()
		lease, err := locker.Take(ctx, lock.ProjectLock(req.Locks.Project), false, func(holder string) {
			fmt.Fprintf(trace, "Waiting for the project lock of %s (builds hold it; last taken by %s)\n", req.Locks.Project, holder)
		})
		if err != nil {
			return nil, fmt.Errorf("take the project lock exclusively: %w", err)
		}
		defer lease.Release()
		var cancel context.CancelCauseFunc
		ctx, cancel = lock.WhileHeld(ctx, lease)
		defer cancel(nil)
	}
	regOpts := registry.Options(ctx, req.Engine.DockerConfig, o.transport)

	rep := &Report{}
	t0 := time.Now()
	inv, err := ReadInventory(ctx, gl, req.StagesStorage, regOpts)
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
	shas := inv.CommitsToCheck()
	commitTimes, err := gl.Commits(ctx, shas)
	if err != nil {
		return nil, apiFault(err)
	}
	git.Commits = make(map[string]bool, len(commitTimes))
	for sha := range commitTimes {
		git.Commits[sha] = true
	}
	inv.Resolve(git, commitTimes)
	if err := inv.NameGoneRefs(ctx, git, regOpts); err != nil {
		return nil, fault.System(err)
	}
	if inv.NameReads > 0 {
		fmt.Fprintf(trace, "Read %d manifests to name gone branches and git tags as they were written\n", inv.NameReads)
	}
	tGit := time.Since(t0)
	t0 = time.Now()
	inUse, err := readInUse(ctx, req, trace)
	if err != nil {
		if !req.DryRun {
			return nil, err
		}
		// Refusing to delete without knowing what runs is right;
		// refusing to show the plan is not.
		rep.InUseUnknown = true
		inUse = InUse{ByRef: map[string]string{}, ByDigest: map[string]string{}, Pinned: map[string]bool{}}
		fmt.Fprintf(trace, "Images in use: unknown (%v). The plan below assumes no workload uses any image: each of its deletions waits on knowing what is in use, and a real run deletes nothing until it can read the cluster\n", err)
	}
	if err := inv.FillDigests(ctx, inUse.Pinned, regOpts); err != nil {
		return nil, fault.System(err)
	}
	werf := 0
	for _, t := range inv.Tags {
		if t.Werf {
			werf++
		}
	}
	fmt.Fprintf(trace, "Found %d published tags, %d of them werf 1.1's (%d manifests read, %d image configs read) and %d stage tags (%s), %d branches, %d git tags and %d of %d commits (%s), %d images in use (%s)\n",
		len(inv.Tags), werf, inv.ManifestReads, inv.ConfigReads, len(inv.StageTags), tInventory.Round(time.Millisecond), len(git.Branches), len(git.Tags), len(git.Commits), len(shas),
		tGit.Round(time.Millisecond), len(inUse.ByRef)+len(inUse.ByDigest), time.Since(t0).Round(time.Millisecond))

	rep.Plan = Decide(inv.Tags, git, inUse, pols, o.now)
	if rep.InUseUnknown {
		for i := range rep.Plan.Tags {
			if rep.Plan.Tags[i].Delete {
				rep.Plan.Tags[i].Reason += "; if no workload uses it (in use: unknown)"
			}
		}
	}
	rep.Stages = DecideStages(inv.StageTags, rep.Plan, o.now)
	rep.Records = inv.RecordsToDelete(rep.Plan, rep.Stages)
	WritePlan(trace, rep.Plan, rep.Stages)
	fmt.Fprintf(trace, "Records (names cleanup reads instead of manifests): delete %d\n", len(rep.Records))
	if req.DryRun {
		if rep.InUseUnknown {
			fmt.Fprintf(trace, "Dry run: nothing deleted; %d image tag deletions wait on knowing what is in use\n", len(rep.Plan.Deleted()))
		} else {
			fmt.Fprintln(trace, "Dry run: nothing deleted")
		}
		rep.APIRequests = gl.Requests()
		return rep, nil
	}

	// The registry's own API is used one deletion at a time: its manifest
	// DELETE looks up the tags to remove while others move, and may miss
	// one.
	var registryDeletes sync.Mutex
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
			registryDeletes.Lock()
			derr := deleteTagAlone(ctx, ref, regOpts)
			registryDeletes.Unlock()
			if derr != nil {
				return fmt.Errorf("%v; and the registry refused the manifest DELETE too: %w", err, derr)
			}
			return nil
		}
		return err
	}
	deleted := rep.Plan.Deleted()
	sizes := inv.sizes
	var mu sync.Mutex
	err = forEach(ctx, len(deleted), func(i int) error {
		d := deleted[i]
		size, known := sizes[d.Tag.Reference()]
		if !known {
			size = manifestSize(ctx, d.Tag.Reference(), regOpts)
		}
		if err := del(d.Tag.Repo, d.Tag.Name); err != nil {
			return fault.System(fmt.Errorf("delete %s: %w", d.Tag.Reference(), err))
		}
		mu.Lock()
		defer mu.Unlock()
		rep.Deleted = append(rep.Deleted, d.Tag.Reference())
		rep.FreedBytes += size
		fmt.Fprintf(trace, "Deleted %s (%s)\n", d.Tag.Reference(), d.Reason)
		return nil
	})
	if err != nil {
		return rep, err
	}
	var doomed []string
	for _, s := range rep.Stages {
		if s.Delete {
			doomed = append(doomed, s.Tag)
		}
	}
	n := len(doomed)
	// Stages, then the records that named them and the deleted tags.
	doomed = append(doomed, rep.Records...)
	err = forEach(ctx, len(doomed), func(i int) error {
		if err := del(req.StagesStorage, doomed[i]); err != nil {
			return fault.System(fmt.Errorf("delete %s:%s: %w", req.StagesStorage, doomed[i], err))
		}
		mu.Lock()
		rep.Deleted = append(rep.Deleted, req.StagesStorage+":"+doomed[i])
		mu.Unlock()
		return nil
	})
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(trace, "Registry: deleted %d image tags (%s of manifests' blobs no longer referenced by them), %d stages and %d records\n",
		len(deleted), stagetrace.Bytes(rep.FreedBytes), n, len(rep.Records))
	if req.Builder != nil {
		remaining := map[string]bool{}
		for _, s := range rep.Stages {
			if !s.Delete {
				remaining[s.Tag] = true
			}
		}
		br, err := CleanBuilder(ctx, req.Engine.Host, *req.Builder, req.StagesStorage, remaining, trace)
		rep.Builder = br
		if err != nil {
			return rep, fault.System(err)
		}
	}
	rep.APIRequests = gl.Requests()
	return rep, nil
}

// readInUse reads the images every workload of the cluster uses. No
// cluster, or credentials that may not list, are the job's to fix.
//
// Images of production in another cluster stay too: every context of
// Cluster.ScanContexts (all of the kubeconfig's for "all") is read, and
// an image any of them uses is in use.
func readInUse(ctx context.Context, req request.Cleanup, trace io.Writer) (InUse, error) {
	contexts := []string{req.Cluster.Context}
	for _, c := range req.Cluster.ScanContexts {
		if c == "all" {
			all, err := kubeconfig.AllContexts(req.Cluster.Kubeconfig)
			if err != nil {
				return InUse{}, fault.Job(fmt.Errorf("images in use: the contexts of the kubeconfig: %w", err))
			}
			contexts = append(contexts, all...)
		} else {
			contexts = append(contexts, c)
		}
	}
	var total InUse
	seen := map[string]bool{}
	for _, kctx := range contexts {
		if seen[kctx] {
			continue
		}
		seen[kctx] = true
		rc, err := kubeconfig.RESTConfig(req.Cluster.Kubeconfig, kctx)
		if err != nil {
			return InUse{}, fault.Job(fmt.Errorf("images in use: %w", err))
		}
		kc, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return InUse{}, fault.System(err)
		}
		inUse, err := ImagesInUse(ctx, kc, req.Namespaces, trace)
		if err != nil {
			if kctx != "" {
				err = fmt.Errorf("context %s: %w", kctx, err)
			}
			return InUse{}, fault.Job(err)
		}
		total = total.merge(inUse, kctx)
	}
	return total, nil
}

func apiFault(err error) error {
	if api.IsRefused(err) {
		return fault.Job(err)
	}
	return fault.System(err)
}

// deleteTagAlone deletes one tag through the registry's API, which only
// deletes manifests (with every tag on them): the tag is first moved to a
// manifest of its own, which is then deleted, as GitLab does for
// registries without tag deletion. Other tags of the same image stay.
func deleteTagAlone(ctx context.Context, ref name.Tag, regOpts []remote.Option) error {
	opts := append(regOpts, remote.WithContext(ctx))
	if _, err := remote.Head(ref, opts...); err != nil {
		return err
	}
	own := mutate.Annotations(empty.Image, map[string]string{"io.stagehand.deleting": ref.String() + " " + time.Now().UTC().Format(time.RFC3339Nano)}).(v1.Image)
	if err := remote.Write(ref, own, opts...); err != nil {
		return err
	}
	d, err := own.Digest()
	if err != nil {
		return err
	}
	return remote.Delete(ref.Context().Digest(d.String()), opts...)
}

// manifestSize is the size of a tag's config and layers (0 when it
// cannot be read: the report is then short of it).
func manifestSize(ctx context.Context, ref string, regOpts []remote.Option) int64 {
	r, err := name.NewTag(ref)
	if err != nil {
		return 0
	}
	desc, err := remote.Get(r, append(regOpts, remote.WithContext(ctx))...)
	if err != nil {
		return 0
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return 0
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

// forEach runs do for 0..n-1, 8 at a time, stopping at the first error.
func forEach(ctx context.Context, n int, do func(i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error { return do(i) })
	}
	return g.Wait()
}

// WritePlan prints the plan as tables: every tag and stage with what
// happens to it and why.
func WritePlan(w io.Writer, p Plan, st []StageDecision) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE TAG\tKIND\tACTION\tWHY")
	for _, d := range p.Tags {
		kind := string(d.Tag.Kind)
		if d.Tag.Werf && d.Tag.Kind != KindWerfCustom {
			kind = "werf " + kind
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Tag.Reference(), kind, action(d.Delete), d.Reason)
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
