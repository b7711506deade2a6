package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// LocalStorageName is the STAGEHAND_STAGES_STORAGE value of the stages
// storage in the host's own Docker Engine: one host, no sharing (werf's
// ":local").
const LocalStorageName = ":local"

// localRepoPrefix names the engine repository of a project's local stages.
const localRepoPrefix = "stagehand-stages/"

// LocalStorage is the :local stages storage: images
// stagehand-stages/<project>:<signature>-<unix ms> in the host's engine.
type LocalStorage struct {
	Engine *Engine
	Repo   string
	// regOpts read what publish pushed.
	regOpts []remote.Option

	index stageIndex
}

// NewLocalStorage opens the local stages of project in the engine;
// regOpts are the options of registry calls (registry.Options).
func NewLocalStorage(e *Engine, project string, regOpts []remote.Option) *LocalStorage {
	return &LocalStorage{Engine: e, Repo: localRepoPrefix + strings.ToLower(project), regOpts: regOpts}
}

func (l *LocalStorage) String() string {
	return LocalStorageName + " (" + l.Repo + " in the Docker Engine)"
}

// EngineRef implements Store.
func (l *LocalStorage) EngineRef(st stagesrepo.StageTag) string { return l.Repo + ":" + st.String() }

// Refresh lists the engine's stage images.
func (l *LocalStorage) Refresh(ctx context.Context) error {
	images, err := l.Engine.Images(ctx, l.Repo)
	if err != nil {
		return fmt.Errorf("list local stages: %w", err)
	}
	var tags []string
	for _, img := range images {
		tags = append(tags, img.TagsOf(l.Repo)...)
	}
	l.index.set(tags)
	return nil
}

// Find implements Store.
func (l *LocalStorage) Find(ctx context.Context, sig string) (stagesrepo.StageTag, bool, error) {
	return l.index.find(ctx, l.Refresh, sig)
}

// All lists the local stages, one per signature, oldest first.
func (l *LocalStorage) All(ctx context.Context) ([]stagesrepo.StageTag, error) {
	return l.index.all(ctx, l.Refresh)
}

// EnsureRecords implements Store: cleanup reads a registry's records;
// :local keeps none.
func (l *LocalStorage) EnsureRecords(context.Context, []string) error { return nil }

// put implements Store: it tags the engine's image as a new local stage.
func (l *LocalStorage) put(ctx context.Context, sig string, b built) (stagesrepo.StageTag, error) {
	if b.engineID == "" {
		return stagesrepo.StageTag{}, fmt.Errorf("stage %s: the :local storage keeps only images its engine built", sig)
	}
	st := stagesrepo.StageTag{Signature: sig, Millis: time.Now().UnixMilli()}
	if err := l.Engine.Tag(ctx, b.engineID, l.EngineRef(st)); err != nil {
		return stagesrepo.StageTag{}, fmt.Errorf("store local stage: %w", err)
	}
	l.index.add(st)
	return st, nil
}

// publish implements Store: the stage is only on this host, so the engine
// pushes it under the image's tag. Its labels, not manifest annotations,
// say what it is.
func (l *LocalStorage) publish(ctx context.Context, st stagesrepo.StageTag, repo name.Repository, tag string, _ map[string]string, recorded func() error) (Publication, error) {
	ref := repo.Tag(tag)
	if err := recorded(); err != nil {
		return Publication{}, err
	}
	if err := l.Engine.Push(ctx, l.EngineRef(st), ref.String()); err != nil {
		return Publication{}, err
	}
	_ = l.Engine.Untag(ctx, ref.String())
	desc, err := remote.Get(ref, l.regOpts...)
	if err != nil {
		return Publication{}, fmt.Errorf("read %s: %w", ref, err)
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil {
		return Publication{}, fmt.Errorf("parse manifest of %s: %w", ref, err)
	}
	return Publication{Digest: desc.Digest, ID: m.Config.Digest}, nil
}

// Remove untags a local stage.
func (l *LocalStorage) Remove(ctx context.Context, st stagesrepo.StageTag) error {
	return l.Engine.Untag(ctx, l.EngineRef(st))
}

// sendTo implements Store.
func (l *LocalStorage) sendTo(ctx context.Context, st stagesrepo.StageTag, dst Store) error {
	return dst.receiveFromEngine(ctx, l.Engine, l.EngineRef(st), st)
}

// receiveFromRegistry pulls a stage into the engine and names it a local
// stage.
func (l *LocalStorage) receiveFromRegistry(ctx context.Context, src name.Tag, st stagesrepo.StageTag) error {
	ref := src.String()
	if err := l.Engine.Pull(ctx, ref); err != nil {
		return err
	}
	if err := l.Engine.Tag(ctx, ref, l.EngineRef(st)); err != nil {
		return err
	}
	_ = l.Engine.Untag(ctx, ref)
	return nil
}

// receiveFromEngine: two :local storages are one engine's.
func (l *LocalStorage) receiveFromEngine(_ context.Context, _ *Engine, ref string, _ stagesrepo.StageTag) error {
	return fmt.Errorf("%s is already in the engine: copy between :local and a registry", ref)
}

// SwitchBlock is the file that stops :local builds of a project once it
// moved to a registry (`stagehand stages switch-from-local`).
type SwitchBlock struct {
	Dir     string
	Project string
}

func (b SwitchBlock) path() string {
	return filepath.Join(b.Dir, strings.ReplaceAll(b.Project, "/", "_"))
}

type switchRecord struct {
	To string    `json:"to"`
	At time.Time `json:"at"`
}

// Check fails when the project switched away from :local.
func (b SwitchBlock) Check() error {
	raw, err := os.ReadFile(b.path())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read switch-from-local block %s: %w", b.path(), err)
	}
	var rec switchRecord
	_ = json.Unmarshal(raw, &rec)
	return fault.Jobf("project %s switched its stages from :local to %s on %s (block file %s): set STAGEHAND_STAGES_STORAGE to %s (or drop :local), or roll back: `stagehand stages sync --from %s --to :local` then remove the block file",
		b.Project, rec.To, rec.At.Format(time.RFC3339), b.path(), rec.To, rec.To)
}

// Write blocks :local builds of the project.
func (b SwitchBlock) Write(to string) error {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", b.Dir, err)
	}
	raw, _ := json.Marshal(switchRecord{To: to, At: time.Now().UTC()})
	if err := os.WriteFile(b.path(), raw, 0o644); err != nil {
		return fmt.Errorf("write switch-from-local block %s: %w", b.path(), err)
	}
	return nil
}

// Path is the block file's path.
func (b SwitchBlock) Path() string { return b.path() }

// makeConfigStage implements Store: every kind of stage is built in the
// engine: git files as a shell stage without commands, the others as a
// small Dockerfile on the parent stage.
func (l *LocalStorage) makeConfigStage(ctx context.Context, b *Builder, s *plan.Stage) (built, error) {
	e, err := b.ensureEngine(ctx)
	if err != nil {
		return built{}, err
	}
	labels := b.labels(s)
	from := ""
	if s.Parent != nil {
		from = l.EngineRef(b.stored[s.Parent])
	}
	if s.Kind == plan.KindGitArchive || s.Kind == plan.KindGitPatch {
		return b.runStage(ctx, e, s, from, labels, nil, true)
	}
	contextTar, err := l.configStageContext(ctx, b, s, labels)
	if err != nil {
		return built{}, err
	}
	defer contextTar.Close()
	id, err := e.BuildDockerfile(ctx, dockerfileBuild{Stage: s.String(), Context: contextTar, Dockerfile: "Dockerfile", From: from}, b.Debug)
	return built{engineID: id, engine: e}, err
}

// configStageContext writes the Dockerfile (and files) of a stage that a
// registry storage makes without the engine.
func (local *LocalStorage) configStageContext(ctx context.Context, b *Builder, s *plan.Stage, labels map[string]string) (io.ReadCloser, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	var df strings.Builder
	switch s.Kind {
	case plan.KindBase:
		fmt.Fprintf(&df, "FROM %s\n", s.BaseRef)
	case plan.KindImports:
		parent := local.EngineRef(b.stored[s.Parent])
		fmt.Fprintf(&df, "FROM %s\n", parent)
		owners := Owners{}
		if importsNeedOwners(s.Imports) {
			if owners, err = engineOwners(ctx, b.engine, parent); err != nil {
				return nil, fault.System(err)
			}
		}
		for i, im := range s.Imports {
			if len(im.IncludePaths) > 0 || len(im.ExcludePaths) > 0 {
				return nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: im.Line, Msg: "import: includePaths/excludePaths need a registry stages storage; the :local storage copies whole paths"})
			}
			uid, gid, err := owners.IDs(im.Owner, im.Group)
			if err != nil {
				return nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: im.Line, Msg: err.Error()})
			}
			fmt.Fprintf(&df, "COPY --from=%s --chown=%d:%d %s %s\n", local.EngineRef(b.stored[s.ImportSource[i]]), uid, gid, im.Add, im.To)
		}
	case plan.KindDocker:
		fmt.Fprintf(&df, "FROM %s\n", local.EngineRef(b.stored[s.Parent]))
		df.WriteString(dockerInstructions(s.Image.Docker))
	}
	if err := tw.raw("Dockerfile", withLabels([]byte(df.String()), "", labels)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tl.Reader()
}

// dockerInstructions writes docker: directives as Dockerfile lines.
func dockerInstructions(d config.Docker) string {
	var b strings.Builder
	q := func(v string) string { j, _ := json.Marshal(v); return string(j) }
	for _, kv := range d.Env {
		fmt.Fprintf(&b, "ENV %s=%s\n", kv.Key, q(kv.Value))
	}
	for _, kv := range d.Label {
		fmt.Fprintf(&b, "LABEL %s=%s\n", q(kv.Key), q(kv.Value))
	}
	for _, p := range d.Expose {
		fmt.Fprintf(&b, "EXPOSE %s\n", p)
	}
	for _, v := range d.Volume {
		fmt.Fprintf(&b, "VOLUME %s\n", q(v))
	}
	if d.Workdir != "" {
		fmt.Fprintf(&b, "WORKDIR %s\n", d.Workdir)
	}
	if d.User != "" {
		fmt.Fprintf(&b, "USER %s\n", d.User)
	}
	if d.Entrypoint != nil {
		j, _ := json.Marshal(d.Entrypoint)
		fmt.Fprintf(&b, "ENTRYPOINT %s\n", j)
	}
	if d.Cmd != nil {
		j, _ := json.Marshal(d.Cmd)
		fmt.Fprintf(&b, "CMD %s\n", j)
	}
	return b.String()
}
