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

	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/fault"
)

// LocalStorageName is the STAGEHAND_STAGES_STORAGE value of the stages
// storage in the host's own Docker Engine: one host, no sharing (werf's
// ":local").
const LocalStorageName = ":local"

// localRepoPrefix names the engine repository of a project's local stages.
const localRepoPrefix = "stagehand-stages/"

// Store is where stages live: a registry repository (*Storage) or the
// host's engine (*LocalStorage).
type Store interface {
	Refresh(ctx context.Context) error
	Find(ctx context.Context, sig string) (StoredStage, bool, error)
	// EngineRef is how the engine names a stored stage (to pull it or
	// build on it).
	EngineRef(st StoredStage) string
	String() string
}

// EngineRef implements Store.
func (s *Storage) EngineRef(st StoredStage) string { return s.Ref(st).String() }

// LocalStorage is the :local stages storage: images
// stagehand-stages/<project>:<signature>-<unix ms> in the host's engine.
type LocalStorage struct {
	Engine *Engine
	Repo   string

	index stageIndex
}

// NewLocalStorage opens the local stages of project in the engine.
func NewLocalStorage(e *Engine, project string) *LocalStorage {
	return &LocalStorage{Engine: e, Repo: localRepoPrefix + strings.ToLower(project)}
}

func (l *LocalStorage) String() string {
	return LocalStorageName + " (" + l.Repo + " in the Docker Engine)"
}

// EngineRef implements Store.
func (l *LocalStorage) EngineRef(st StoredStage) string { return l.Repo + ":" + st.Tag() }

// Refresh lists the engine's stage images.
func (l *LocalStorage) Refresh(ctx context.Context) error {
	list, err := l.Engine.cli().ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", l.Repo)})
	if err != nil {
		return fmt.Errorf("list local stages %s: %w", l.Repo, err)
	}
	var tags []string
	for _, img := range list.Items {
		for _, ref := range img.RepoTags {
			if repo, tag, ok := strings.Cut(ref, ":"); ok && repo == l.Repo {
				tags = append(tags, tag)
			}
		}
	}
	l.index.set(tags)
	return nil
}

// Find implements Store.
func (l *LocalStorage) Find(ctx context.Context, sig string) (StoredStage, bool, error) {
	return l.index.find(ctx, l.Refresh, sig)
}

// All lists the local stages, one per signature, oldest first.
func (l *LocalStorage) All(ctx context.Context) ([]StoredStage, error) {
	return l.index.all(ctx, l.Refresh)
}

// store tags a built image as a new local stage.
func (l *LocalStorage) store(ctx context.Context, id, sig string) (StoredStage, error) {
	st := StoredStage{Signature: sig, Millis: time.Now().UnixMilli()}
	if _, err := l.Engine.cli().ImageTag(ctx, client.ImageTagOptions{Source: id, Target: l.EngineRef(st)}); err != nil {
		return StoredStage{}, fmt.Errorf("tag local stage %s: %w", l.EngineRef(st), err)
	}
	l.index.add(st)
	return st, nil
}

// Remove untags a local stage.
func (l *LocalStorage) Remove(ctx context.Context, st StoredStage) error {
	if _, err := l.Engine.cli().ImageRemove(ctx, l.EngineRef(st), client.ImageRemoveOptions{}); err != nil {
		return fmt.Errorf("remove local stage %s: %w", l.EngineRef(st), err)
	}
	return nil
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

// buildLocal builds any stage in the engine, for the :local storage: each
// kind becomes a small Dockerfile on the parent stage.
func (b *Builder) buildLocal(ctx context.Context, s *Stage, local *LocalStorage) (StoredStage, error) {
	e, err := b.ensureEngine(ctx)
	if err != nil {
		return StoredStage{}, err
	}
	labels := b.labels(s)
	var contextTar io.ReadCloser
	df := &Dockerfile{Path: "Dockerfile"}
	from := ""
	if s.Parent != nil {
		from = local.EngineRef(b.stored[s.Parent])
	}
	switch s.Kind {
	case KindDockerfile:
		contextTar, err = b.contextTar(s)
		df = s.Image.Dockerfile
	case KindShell:
		contextTar, err = b.shellContext(ctx, s, local.EngineRef(b.stored[s.Parent]), labels)
	default:
		contextTar, err = b.localContext(ctx, s, local, labels)
	}
	if err != nil {
		return StoredStage{}, err
	}
	defer contextTar.Close()
	id, err := e.BuildDockerfile(ctx, s.String(), contextTar, df, labels, from, b.Trace)
	if err != nil {
		return StoredStage{}, err
	}
	st, err := local.store(ctx, id, s.Signature)
	if err != nil {
		return StoredStage{}, fault.System(err)
	}
	return st, nil
}

// localContext writes the Dockerfile (and files) of a stage that a
// registry storage makes without the engine.
func (b *Builder) localContext(ctx context.Context, s *Stage, local *LocalStorage, labels map[string]string) (io.ReadCloser, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	var df strings.Builder
	switch s.Kind {
	case KindBase:
		fmt.Fprintf(&df, "FROM %s\n", s.BaseRef)
	case KindGitArchive, KindGitPatch:
		parent := local.EngineRef(b.stored[s.Parent])
		parentLabels, _, err := b.parentConfig(ctx, parent)
		if err != nil {
			return nil, err
		}
		copies, remove, err := b.gitContext(tw, s, parentLabels, labels)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&df, "FROM %s\n", parent)
		for _, c := range copies {
			df.WriteString(c.instruction())
		}
		if len(remove) > 0 {
			run, _ := json.Marshal([]string{"/bin/sh", "-c", shellScript(nil, remove)})
			fmt.Fprintf(&df, "RUN %s\n", run)
		}
	case KindImports:
		fmt.Fprintf(&df, "FROM %s\n", local.EngineRef(b.stored[s.Parent]))
		for i, im := range s.Imports {
			if len(im.IncludePaths) > 0 || len(im.ExcludePaths) > 0 {
				return nil, fault.Job(&ConfigError{File: b.Plan.Config.File, Line: im.Line, Msg: "import: includePaths/excludePaths need a registry stages storage; the :local storage copies whole paths"})
			}
			uid, err := ownerID(im.Owner, "owner")
			gid := 0
			if err == nil {
				gid, err = ownerID(im.Group, "group")
			}
			if err != nil {
				return nil, fault.Job(&ConfigError{File: b.Plan.Config.File, Line: im.Line, Msg: err.Error()})
			}
			fmt.Fprintf(&df, "COPY --from=%s --chown=%d:%d %s %s\n", local.EngineRef(b.stored[s.ImportSource[i]]), uid, gid, im.Add, im.To)
		}
	case KindDocker:
		fmt.Fprintf(&df, "FROM %s\n", local.EngineRef(b.stored[s.Parent]))
		df.WriteString(dockerInstructions(s.Image.Docker))
	}
	if err := tw.raw("Dockerfile", []byte(df.String())); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tl.Reader()
}

// dockerInstructions writes docker: directives as Dockerfile lines.
func dockerInstructions(d Docker) string {
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
