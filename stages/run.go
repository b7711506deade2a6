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
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/fault"
)

// Tag strategies (the values of STAGEHAND_TAG_STRATEGY).
const (
	TagStagesSignature = "stages-signature"
	TagOrBranch        = "tag-or-branch"
)

// Options is one build of a project at one commit.
type Options struct {
	ProjectDir string
	// Vars are the job's variables, for the config's templates.
	Vars    map[string]string
	Project string
	// StagesRepo and ImagesRepo are STAGEHAND_STAGES_STORAGE and
	// STAGEHAND_IMAGES_REPO.
	StagesRepo string
	ImagesRepo string
	Commit     string
	CommitTime string
	// Branch or GitTag is the ref being built (raw names, for annotations);
	// RefSlug is its slug, the tag-or-branch strategy's tag.
	Branch, GitTag, RefSlug string
	TagStrategy             string

	DockerHost   string
	Network      string
	DockerConfig string
	// BlockDir holds switch-from-local block files (:local builds).
	BlockDir string
	Locker   Locker
	Trace    io.Writer
	// Transport, when set, carries every registry call (tests count them).
	Transport http.RoundTripper
}

// Published is one image published by a build.
type Published struct {
	Image  string // "" for the unnamed image
	Repo   string
	Tags   []string
	Digest string
	// Reference is Repo:Tags[0], what jobs use.
	Reference string
	Stage     StoredStage
}

// Result is what a build did.
type Result struct {
	Images  []Published
	Reports []StageReport
}

// Exports are the variables the job's script gets: STAGEHAND_IMAGE_<NAME>
// (the reference) and STAGEHAND_IMAGE_<NAME>_DIGEST.
func (r *Result) Exports() map[string]string {
	out := map[string]string{}
	for _, p := range r.Images {
		v := ExportName(p.Image)
		out[v] = p.Reference
		out[v+"_DIGEST"] = p.Digest
	}
	return out
}

// ExportName is the variable holding an image's reference: the name
// upper-cased with every other character than A-Z and 0-9 made "_";
// STAGEHAND_IMAGE for the unnamed image.
func ExportName(image string) string {
	if image == "" {
		return "STAGEHAND_IMAGE"
	}
	b := []byte(strings.ToUpper(image))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "STAGEHAND_IMAGE_" + string(b)
}

// PublishTags are the tags an image is published under: the strategy's,
// then the commit's.
func PublishTags(o Options, final *Stage) ([]string, error) {
	var first string
	switch o.TagStrategy {
	case "", TagStagesSignature:
		first = final.Signature
	case TagOrBranch:
		if o.RefSlug == "" {
			return nil, fault.Jobf("tag strategy %s needs a branch or a git tag (CI_COMMIT_REF_NAME is empty)", TagOrBranch)
		}
		first = o.RefSlug
	default:
		return nil, fault.Jobf("STAGEHAND_TAG_STRATEGY=%q: use %s or %s", o.TagStrategy, TagStagesSignature, TagOrBranch)
	}
	tags := []string{first}
	if o.Commit != "" && o.Commit != first {
		tags = append(tags, o.Commit)
	}
	return tags, nil
}

// imagesRepo is where an image is published: the images repository for
// the unnamed image, a repository under it for named ones.
func imagesRepo(base, image string) string {
	if image == "" {
		return base
	}
	return base + "/" + image
}

// Run builds the project's images as stages and publishes them.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	cfg, err := LoadConfig(o.ProjectDir, o.Vars)
	if err != nil {
		return nil, fault.Job(err)
	}
	for _, img := range cfg.Images {
		if !img.Artifact && img.Name == "stages" {
			return nil, fault.Job(&ConfigError{File: cfg.File, Line: img.Line, Msg: `image name "stages" is taken by the stages storage ($CI_REGISTRY_IMAGE/stages): rename the image`})
		}
	}
	src, err := OpenSource(o.ProjectDir)
	if err != nil {
		return nil, fault.System(err)
	}
	defer src.Close()

	regOpts := RegistryOptions(ctx, Keychain{Dir: o.DockerConfig}, o.Transport)
	bases := BaseDigests{}
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
	plan, err := NewPlan(cfg, src.Tree(), bases)
	if err != nil {
		return nil, fault.Job(err)
	}
	b := &Builder{
		Plan: plan, Source: src, Locker: o.Locker,
		Project: o.Project, Commit: o.Commit, Registry: regOpts, Trace: o.Trace,
		Engine: func(ctx context.Context) (*Engine, error) {
			e, err := NewEngine(ctx, o.DockerHost, o.Network, o.DockerConfig)
			if e != nil {
				e.Trace = o.Trace
			}
			return e, err
		},
	}
	if o.StagesRepo == LocalStorageName {
		if err := (SwitchBlock{Dir: o.BlockDir, Project: o.Project}).Check(); err != nil {
			return nil, err
		}
		e, err := NewEngine(ctx, o.DockerHost, o.Network, o.DockerConfig)
		if err != nil {
			return nil, fault.System(err)
		}
		e.Trace = o.Trace
		defer e.Close()
		b.engine, b.keepEngine = e, true
		b.Storage = NewLocalStorage(e, o.Project)
	} else {
		storage, err := NewStorage(o.StagesRepo, regOpts)
		if err != nil {
			return nil, fault.Job(err)
		}
		storage.Trace = o.Trace
		b.Storage = storage
	}
	fmt.Fprintf(o.Trace, "Stages storage %s; %d images, %d stages in %s\n", b.Storage, len(plan.Images), countStages(plan), cfg.File)

	stored, reports, err := b.Build(ctx)
	res := &Result{Reports: reports}
	if err != nil {
		return res, err
	}

	for _, ip := range plan.Published() {
		var p Published
		var err error
		if local, ok := b.Storage.(*LocalStorage); ok {
			p, err = publishLocal(ctx, o, local, stored, ip, regOpts)
		} else {
			p, err = publish(ctx, o, b.registry(), stored, ip, regOpts)
		}
		if err != nil {
			return res, err
		}
		res.Images = append(res.Images, p)
	}
	WriteSummary(o.Trace, res, time.Since(start))
	return res, nil
}

func countStages(p *Plan) int {
	n := 0
	for _, ip := range p.Images {
		n += len(ip.Stages)
	}
	return n
}

func publish(ctx context.Context, o Options, storage *Storage, stored map[*Stage]StoredStage, ip *ImagePlan, regOpts []remote.Option) (Published, error) {
	final := ip.Final
	st := stored[final]
	tags, err := PublishTags(o, final)
	if err != nil {
		return Published{}, err
	}
	repoName := imagesRepo(o.ImagesRepo, ip.Image.Name)
	repo, err := name.NewRepository(repoName)
	if err != nil {
		return Published{}, fault.Jobf("images repository %q (STAGEHAND_IMAGES_REPO and the image name) is not a repository name: %v", repoName, err)
	}
	sigs := NeededStages(final)
	ann := map[string]string{
		AnnotationCommit:     o.Commit,
		AnnotationCommitTime: o.CommitTime,
		AnnotationImage:      ip.Image.Name,
		AnnotationStage:      st.Tag(),
		AnnotationStages:     strings.Join(sigs, ","),
	}
	switch {
	case o.GitTag != "":
		ann[AnnotationRef], ann[AnnotationRefKind] = o.GitTag, "tag"
	case o.Branch != "":
		ann[AnnotationRef], ann[AnnotationRefKind] = o.Branch, "branch"
	}
	p := Published{Image: ip.Image.Name, Repo: repoName, Tags: tags, Stage: st}
	for i, tag := range tags {
		// The record first: a tag stagehand published always has one.
		kind := publicationKind(o, i)
		if err := storage.EnsureRecords(ctx, []string{PublicationRecord(kind, repo.String(), tag, final.Signature)}); err != nil {
			return Published{}, fault.System(fmt.Errorf("publish %s: %w", ip.Image.describe(), err))
		}
		var d v1.Hash
		err := retryRegistry(ctx, o.Trace, "publishing "+repo.Tag(tag).String(), func() (err error) {
			d, err = Publish(ctx, storage, st, repo, tag, ann, regOpts)
			return err
		})
		if err != nil {
			return Published{}, fault.System(fmt.Errorf("publish %s: %w", ip.Image.describe(), err))
		}
		p.Digest = d.String()
	}
	p.Reference = repoName + ":" + tags[0]
	fmt.Fprintf(o.Trace, "Published %s as %s (%s)\n", ip.Image.describe(), strings.Join(prefixTags(repoName, tags), ", "), p.Digest)
	return p, nil
}

// publicationKind is the kind of the i-th of PublishTags' tags.
func publicationKind(o Options, i int) PublicationKind {
	switch {
	case i > 0:
		return PublishedCommit
	case o.TagStrategy == TagOrBranch && o.GitTag != "":
		return PublishedGitTag
	case o.TagStrategy == TagOrBranch:
		return PublishedBranch
	}
	return PublishedSignature
}

// publishLocal pushes a :local stage under the image's tags with the
// engine (the stage is only on this host). Its labels, not manifest
// annotations, say what it is.
func publishLocal(ctx context.Context, o Options, local *LocalStorage, stored map[*Stage]StoredStage, ip *ImagePlan, regOpts []remote.Option) (Published, error) {
	st := stored[ip.Final]
	tags, err := PublishTags(o, ip.Final)
	if err != nil {
		return Published{}, err
	}
	repoName := imagesRepo(o.ImagesRepo, ip.Image.Name)
	p := Published{Image: ip.Image.Name, Repo: repoName, Tags: tags, Stage: st}
	for _, tag := range tags {
		ref := repoName + ":" + tag
		if err := local.Engine.Push(ctx, local.EngineRef(st), ref); err != nil {
			return Published{}, fault.System(fmt.Errorf("publish %s: %w", ip.Image.describe(), err))
		}
		r, err := name.ParseReference(ref)
		if err != nil {
			return Published{}, fault.Jobf("%s is not an image reference: %v", ref, err)
		}
		d, err := remote.Head(r, regOpts...)
		if err != nil {
			return Published{}, fault.System(fmt.Errorf("read %s: %w", ref, err))
		}
		p.Digest = d.Digest.String()
		_, _ = local.Engine.cli().ImageRemove(ctx, ref, client.ImageRemoveOptions{})
	}
	p.Reference = repoName + ":" + tags[0]
	fmt.Fprintf(o.Trace, "Published %s as %s (%s)\n", ip.Image.describe(), strings.Join(prefixTags(repoName, tags), ", "), p.Digest)
	return p, nil
}

// NeededStages lists the signatures an image needs kept: its own chain of
// stages and the chains of the images its stages import from, final
// stage first, each once.
func NeededStages(final *Stage) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(s *Stage)
	walk = func(s *Stage) {
		for ; s != nil; s = s.Parent {
			if seen[s.Signature] {
				return
			}
			seen[s.Signature] = true
			out = append(out, s.Signature)
			for _, src := range s.ImportSource {
				walk(src)
			}
		}
	}
	walk(final)
	return out
}

func prefixTags(repo string, tags []string) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = repo + ":" + t
	}
	return out
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
