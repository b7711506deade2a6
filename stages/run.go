package stages

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/lock"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// Option changes how Build and Sync reach the outside world (tests count
// registry calls, or make a lock's lease get lost).
type Option func(*options)

type options struct {
	transport http.RoundTripper
	locker    lock.Taker
	lockerSet bool
}

// WithTransport carries every registry call through rt.
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithLocker takes the build's locks from l instead of the request's
// synchronization.
func WithLocker(l lock.Taker) Option {
	return func(o *options) { o.locker, o.lockerSet = l, true }
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Published is one image a build published.
type Published struct {
	request.Image
	// Tags are every tag it was published under: the strategy's, then the
	// commit's.
	Tags  []string
	Stage stagesrepo.StageTag
}

// Result is what a build did.
type Result struct {
	Images  []Published
	Reports []StageReport
	// ChartDir is the chart the config names (werf 1.2's deploy:
	// helmChartDir), relative to the project; "" when it names none.
	ChartDir string
	// Project is werf.yaml's project: (a chart's global.werf.name).
	Project string
}

// Published is the result as the worker answers it.
func (r *Result) Published() request.BuildResult {
	var out request.BuildResult
	for _, p := range r.Images {
		out.Images = append(out.Images, p.Image)
	}
	return out
}

// Exports are the variables the job's script gets (see
// request.BuildResult.Exports).
func (r *Result) Exports() map[string]string { return r.Published().Exports() }

// Build builds the project's images as stages and publishes them.
func Build(ctx context.Context, req request.Build, trace io.Writer, opts ...Option) (*Result, error) {
	o := collect(opts)
	start := time.Now()
	locker := o.locker
	if !o.lockerSet {
		h, err := lock.For(req.Locks)
		if err != nil {
			return nil, fault.System(err)
		}
		if h != nil {
			defer h.Close()
			fmt.Fprintf(trace, "Synchronization: %s\n", h.Describe())
			locker = h
		} else {
			fmt.Fprintln(trace, "Synchronization: none (hosts may build a stage twice; readers agree on the oldest copy)")
		}
	}

	// While werf.yaml is read and rendered, git reads the commit's tree
	// and the registry lists the stored stages: an idle build is mostly
	// these three.
	regOpts := registry.Options(ctx, req.Engine.DockerConfig, o.transport)
	var storage *Storage
	if req.StagesStorage != LocalStorageName {
		var err error
		if storage, err = NewStorage(req.StagesStorage, regOpts, trace); err != nil {
			return nil, fault.Job(err)
		}
		storage.ListAhead(ctx)
	}
	type opened struct {
		src plan.Source
		err error
	}
	openings := make(chan opened, 1)
	go func() {
		src, err := plan.OpenSource(req.Dir)
		openings <- opened{src, err}
	}()
	cfg, err := config.LoadConfig(req.Dir, req.Vars)
	if err == nil && storage != nil {
		// The tags the plan does not decide (the commit's, the
		// branch's) are asked now; the others, on the same connection
		// set up by then, once the plan is made.
		storage.HeadAhead(ctx, publicationRefs(req, cfg.Images, nil))
	}
	opening := <-openings
	if opening.err == nil {
		defer opening.src.Close()
	}
	if err != nil {
		return nil, fault.Job(err)
	}
	for _, img := range cfg.Images {
		if !img.Artifact && img.Name == "stages" {
			return nil, fault.Job(&config.ConfigError{File: cfg.File, Line: img.Line, Msg: `image name "stages" is taken by the stages storage ($CI_REGISTRY_IMAGE/stages): rename the image`})
		}
	}
	if opening.err != nil {
		return nil, fault.System(opening.err)
	}
	src := opening.src
	bases := plan.BaseDigests{}
	for _, ref := range cfg.LatestBases() {
		r, err := name.ParseReference(ref)
		if err != nil {
			return nil, fault.Jobf("%s: from: %q is not an image reference: %v", cfg.File, ref, err)
		}
		d, err := remote.Head(r, regOpts...)
		if err != nil {
			return nil, fault.System(fmt.Errorf("resolve %s (fromLatest): %w", ref, err))
		}
		bases[ref] = d.Digest.String()
	}
	ignores, err := plan.DockerIgnores(cfg, src)
	if err != nil {
		return nil, fault.System(err)
	}
	remotes, err := fetchRemotes(ctx, cfg, req, trace)
	for _, r := range remotes {
		defer r.Close()
	}
	if err != nil {
		return nil, err
	}
	trees := map[string]plan.RemoteTree{}
	for key, r := range remotes {
		trees[key] = plan.RemoteTree{Commit: r.commit, Tree: r.Tree()}
	}
	pl, err := plan.New(cfg, plan.Inputs{Tree: src.Tree(), Bases: bases, DockerIgnore: ignores, Remotes: trees})
	if err != nil {
		return nil, fault.Job(err)
	}
	if len(pl.Missing) > 0 {
		return nil, fault.Jobf("%s", strings.Join(pl.Missing, "\n"))
	}
	for _, n := range append(cfg.Warnings, cfg.Notes...) {
		fmt.Fprintf(trace, "%s: %s\n", cfg.File, n)
	}
	b := &Builder{
		Plan: pl, Source: src, Locker: locker,
		Project: req.Project, Commit: req.Commit, Trace: trace, Mounts: req.Mounts, Debug: req.Debug, Sections: req.Sections,
		Remotes: sources(remotes),
		Engine:  func(ctx context.Context) (*Engine, error) { return NewEngine(ctx, req.Engine, trace) },
		PublishRepo: func(image string) (name.Repository, bool) {
			r, err := name.NewRepository(imagesRepo(req.ImagesRepo, image))
			return r, err == nil
		},
	}
	if req.StagesStorage == LocalStorageName {
		if err := (SwitchBlock{Dir: req.BlockDir, Project: req.Project}).Check(); err != nil {
			return nil, err
		}
		e, err := NewEngine(ctx, req.Engine, trace)
		if err != nil {
			return nil, fault.System(err)
		}
		defer e.Close()
		b.engine, b.keepEngine = e, true
		b.Storage = NewLocalStorage(e, req.Project, regOpts)
	} else {
		b.Storage = storage
		storage.HeadAhead(ctx, publicationRefs(req, cfg.Images, func(image string) *plan.Stage { return pl.Image(image).Final }))
	}
	fmt.Fprintf(trace, "Stages storage %s; %d images, %d stages in %s\n", b.Storage, len(pl.Images), countStages(pl), cfg.File)

	stored, reports, err := b.Build(ctx)
	res := &Result{Reports: reports, Project: cfg.Project}
	if cfg.Deploy != nil {
		res.ChartDir = cfg.Deploy.ChartDir
	}
	if err != nil {
		return res, err
	}
	for _, ip := range pl.Published() {
		p, err := publish(ctx, req, b.Storage, stored[ip.Final], ip, trace)
		if err != nil {
			return res, err
		}
		res.Images = append(res.Images, p)
	}
	WriteSummary(trace, res, time.Since(start))
	return res, nil
}

func countStages(p *plan.Plan) int {
	n := 0
	for _, ip := range p.Images {
		n += len(ip.Stages)
	}
	return n
}

// WriteSummary prints the build's table: one row per stage.
func WriteSummary(w io.Writer, r *Result, took time.Duration) {
	counts := map[Outcome]int{}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tSTAGE\tSIGNATURE\tRESULT\tTIME")
	for _, rep := range r.Reports {
		name := rep.Stage.Image.Name
		if name == "" {
			name = "~"
		}
		res := string(rep.Outcome)
		if rep.Pulled {
			res += " (parent pulled)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, rep.Stage.Name, short(rep.Stage.Signature), res, rep.Duration.Round(time.Millisecond))
		counts[rep.Outcome]++
	}
	tw.Flush()
	fmt.Fprintf(w, "Build done in %s: %d stages built, %d used from storage, %d after waiting, %d built twice (another host's copy used)\n",
		took.Round(time.Millisecond), counts[OutcomeBuilt], counts[OutcomeStored], counts[OutcomeWaited], counts[OutcomeDiscarded])
}
