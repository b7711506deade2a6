// Package config reads a project's stage config: stagehand.yaml, else
// werf.yml or werf.yaml in werf 1.1's format — rendered with werf's
// templates (render.go), then parsed (parse.go) with werf's spellings.
// A config that fails names the file and line the user wrote, not the
// rendered one.
//
// It is light and pure but for reading the project's files: the hooks
// binary reads a project's names from it, and `stagehand config render`
// and `stagehand plan` need neither an engine nor a registry.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"gitlab.com/stagehand/stagehand/gitlab"
)

// ConfigFiles are the config file names, in order of preference: werf
// 1.1 read werf.yml before werf.yaml.
var ConfigFiles = []string{"stagehand.yaml", "werf.yml", "werf.yaml"}

// Config is a project's stage config.
type Config struct {
	// File is the config's file name within the project.
	File    string
	Project string
	// Images holds images and artifacts in file order.
	Images []*Image
	// Deploy is the project document's deploy: (werf's names of the
	// namespace and release); nil when it has none.
	Deploy *Deploy
	// KeepPolicies are werf's cleanup: keepPolicies, read and checked
	// (see README: stagehand's cleanup applies its own policies).
	KeepPolicies []KeepPolicy
	// Notes are what the config says that stagehand accepts and does not
	// act on (asLayers, a Dockerfile's network:), for the trace.
	Notes []string
	// Warnings are what rendering said (.Files.Get of a missing file).
	Warnings []string
	// cleanup overrides the job's cleanup policies (nil: none).
	cleanup *policyOverrides
}

// Deploy is the project document's deploy: section, as werf 1.1 read it:
// templates of the namespace and release ([[ project ]], [[ env ]]), and
// whether werf's slug applies to what they render.
type Deploy struct {
	Namespace, Release         string
	NamespaceSlug, ReleaseSlug bool
	// ChartDir (werf 1.2's helmChartDir) is the chart, relative to the
	// project; "" is .helm.
	ChartDir string
}

// KeepPolicy is one of werf's cleanup keepPolicies.
type KeepPolicy struct {
	Line int
	// Branch or Tag selects references: a name, or /a regexp/.
	Branch, Tag string
	// Limit bounds the references kept, ImagesPerReference the images
	// per reference: the last N, within a duration, And or Or.
	Limit, ImagesPerReference *KeepLimit
}

// KeepLimit is a keepPolicies limit.
type KeepLimit struct {
	Last     *int
	In       string
	Operator string
}

// CleanupPolicies are base (the job's ci-env policies) with the project
// document's cleanup: overrides applied.
func (c *Config) CleanupPolicies(base gitlab.Policies) gitlab.Policies {
	if c.cleanup == nil {
		return base
	}
	one := func(dst *gitlab.Policy, src policyOverride) {
		if src.Limit != nil {
			dst.Limit = *src.Limit
		}
		if src.ExpiryDays != nil {
			dst.ExpiryDays = *src.ExpiryDays
		}
	}
	one(&base.GitTag, c.cleanup.GitTag)
	one(&base.GitCommit, c.cleanup.GitCommit)
	one(&base.StagesSignature, c.cleanup.StagesSignature)
	return base
}

// Image is one `image:` or `artifact:` document (or one of the names of
// an `image: [a, b]` document).
type Image struct {
	// Name is "" for the project's unnamed image.
	Name     string
	Artifact bool
	// Line is where the document's image/artifact key stands.
	Line int

	// Stapel images start from a base image or another image of the file.
	From             string
	FromLatest       bool
	FromCacheVersion string
	FromImage        string
	// FromArtifact is werf's fromImageArtifact (or stagehand's
	// fromArtifact).
	FromArtifact string
	Git          []GitMapping
	Shell        Shell
	Docker       Docker
	Imports      []Import
	Mounts       []Mount
	// DisableGitAfterPatch (werf 1.2) leaves out the gitLatestPatch
	// stage: later commits' changes to mapped files need a new
	// gitArchive.
	DisableGitAfterPatch bool

	// Dockerfile images are built by the engine from a Dockerfile.
	Dockerfile *Dockerfile

	// NotFinal (werf 1.2's final: false): built for other images of the
	// file, never published.
	NotFinal bool
	// Dependencies (werf 1.2) pass other images' names to this one's
	// build: Dockerfile build args, or the environment of shell stages.
	Dependencies []Dependency
}

// Dependency is one of an image's dependencies: (werf 1.2).
type Dependency struct {
	Line    int
	Image   string
	Imports []DependencyImport
}

// DependencyImport is one value of a dependency an image gets.
type DependencyImport struct {
	// Type is one of DependencyTypes.
	Type string
	// TargetBuildArg (Dockerfile images) or TargetEnv (stapel images)
	// receives it.
	TargetBuildArg, TargetEnv string
}

// DependencyTypes are the values a dependency gives: its stage's full
// reference, repository, tag, image id (config digest), manifest digest.
var DependencyTypes = []string{"ImageName", "ImageRepo", "ImageTag", "ImageID", "ImageDigest"}

// GitMapping adds files of the project's repository to the image.
type GitMapping struct {
	Line int
	// URL, when set, is a remote repository, at Branch, Tag or Commit
	// (its default branch when none is given).
	URL, Branch, Tag, Commit string
	Add                      string
	To                       string
	// Owner and Group are names (looked up in the image, as werf did) or
	// numeric ids.
	Owner, Group      string
	IncludePaths      []string
	ExcludePaths      []string
	StageDependencies StageDependencies
}

// StageDependencies are the globs whose files' changes rebuild a stage.
type StageDependencies struct {
	Install, BeforeSetup, Setup []string
}

// Shell holds the shell stages' commands.
type Shell struct {
	BeforeInstall, Install, BeforeSetup, Setup []string
	// CacheVersion rebuilds every shell stage when changed; the others
	// rebuild theirs.
	CacheVersion, BeforeInstallCacheVersion, InstallCacheVersion, BeforeSetupCacheVersion, SetupCacheVersion string
}

// Docker holds the `docker:` directives: they change only the image's
// config.
type Docker struct {
	Env        []KeyValue
	Label      []KeyValue
	Expose     []string
	Volume     []string
	Workdir    string
	User       string
	Entrypoint []string
	Cmd        []string
	// Healthcheck is HEALTHCHECK as a Dockerfile writes it
	// ("--interval=30s CMD curl -f http://localhost/", or NONE).
	Healthcheck string
}

// KeyValue keeps the file's order, so that signatures are stable.
type KeyValue struct{ Key, Value string }

// Import copies files from another image or artifact of the file.
type Import struct {
	Line          int
	Image         string
	Artifact      string
	Add, To       string
	Before, After string
	// Stage imports from that stage of the source (beforeInstall,
	// install, beforeSetup, setup) rather than its last.
	Stage        string
	Owner, Group string
	IncludePaths []string
	ExcludePaths []string
}

// Mount kinds (werf's mount: from:).
const (
	// MountBuildDir is a directory of the project's that lasts between
	// builds on a runner host: a cache.
	MountBuildDir = "build_dir"
	// MountTmpDir is an empty directory for one build.
	MountTmpDir = "tmp_dir"
	// MountHostPath is a path of the runner host (fromPath:), which the
	// runner's settings must allow.
	MountHostPath = "fromPath"
)

// Mount is a directory mounted into an image's shell stages while they
// run: what it holds goes into neither the image nor any signature.
type Mount struct {
	Line int
	// Kind is MountBuildDir, MountTmpDir or MountHostPath.
	Kind string
	// FromPath is the host path of MountHostPath.
	FromPath string
	To       string
}

// Dockerfile is how a Dockerfile image is built.
type Dockerfile struct {
	// Path is the Dockerfile, relative to the project's root (as werf
	// 1.1 read it), not to Context.
	Path string
	// Context is the build context, relative to the project's root; ""
	// is the whole project.
	Context string
	Target  string
	Args    []KeyValue
	// AddHost are extra host:ip entries of the build's containers.
	AddHost []string
	// SSH is werf's ssh: (a BuildKit feature the engine's classic builder
	// does not have).
	SSH string
}

// ConfigError says where the config is wrong and what to do.
type ConfigError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// ErrNoConfig says the project has no stage config.
var ErrNoConfig = errors.New("no stagehand.yaml, werf.yml or werf.yaml in the project")

// ReadSource finds the project's config in dir and reads it and its
// partials (.werf/**/*.tmpl).
func ReadSource(dir string) (Source, error) {
	for _, name := range ConfigFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return Source{}, fmt.Errorf("read %s: %w", name, err)
		}
		partials, err := readPartials(filepath.Join(dir, TemplatesDir))
		if err != nil {
			return Source{}, err
		}
		return Source{File: name, Text: b, Partials: partials, Dir: dir, Root: dir}, nil
	}
	return Source{}, fmt.Errorf("%w (%s)", ErrNoConfig, dir)
}

// maxPartials bounds what a project's .werf may hold.
const maxPartials = 1000

// readPartials reads every *.tmpl file below dir, by its path below dir.
func readPartials(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return filepath.SkipAll
			}
			return err
		}
		if d.IsDir() || path.Ext(d.Name()) != ".tmpl" || !d.Type().IsRegular() {
			return nil
		}
		if len(out) >= maxPartials {
			return fmt.Errorf("%s holds more than %d templates", dir, maxPartials)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the templates of %s: %w", TemplatesDir, err)
	}
	return out, nil
}

// LoadConfig reads the project's stage config from dir, rendering its
// templates with vars (the job's variables).
func LoadConfig(dir string, vars map[string]string) (*Config, error) {
	src, err := ReadSource(dir)
	if err != nil {
		return nil, err
	}
	return Parse(src, vars)
}

// ParseConfig renders and parses one config file's contents, with no
// partials and no project files.
func ParseConfig(file string, text []byte, vars map[string]string) (*Config, error) {
	return Parse(Source{File: file, Text: text}, vars)
}

// Parse renders and parses a config.
func Parse(src Source, vars map[string]string) (*Config, error) {
	r, err := Render(src, vars)
	if err != nil {
		return nil, err
	}
	p := &parser{file: src.File, lines: r.lines}
	cfg, err := p.parse(r.Text)
	if err != nil {
		return nil, err
	}
	cfg.File = src.File
	cfg.Warnings = r.Warnings
	if err := p.check(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// LatestBases lists the base references of fromLatest images: a build
// resolves their digests, which enter the signatures.
func (c *Config) LatestBases() []string {
	var out []string
	for _, img := range c.Images {
		if img.FromLatest && img.From != "" {
			out = append(out, img.From)
		}
	}
	return out
}

// Describe names an image for messages: `image "backend"`, `artifact "x"`
// or "the unnamed image".
func (img *Image) Describe() string {
	kind := "image"
	if img.Artifact {
		kind = "artifact"
	}
	if img.Name == "" {
		return "the unnamed image"
	}
	return fmt.Sprintf("%s %q", kind, img.Name)
}

// FindAny finds an image, else an artifact, by name (werf 1.2's
// dependencies: name either).
func (c *Config) FindAny(name string) *Image {
	if img := c.Find(name, false); img != nil {
		return img
	}
	return c.Find(name, true)
}

// Find is the image (or, with artifact, the artifact) of a name.
func (c *Config) Find(name string, artifact bool) *Image {
	for _, img := range c.Images {
		if img.Name == name && img.Artifact == artifact {
			return img
		}
	}
	return nil
}

// relativePath refuses paths that leave the project.
func relativePath(s string) error {
	if path.IsAbs(s) {
		return fmt.Errorf("%q must be relative to the project", s)
	}
	if c := path.Clean(s); c == ".." || strings.HasPrefix(c, "../") {
		return fmt.Errorf("%q leaves the project", s)
	}
	return nil
}

// Naming is what the config says of its environments' names: werf's
// (werf.yaml's project: and deploy:). A stagehand.yaml without deploy:
// says nothing: its environments are named after the GitLab project.
func (c *Config) Naming() *gitlab.Naming {
	if c.Deploy == nil && !strings.HasPrefix(c.File, "werf.") {
		return nil
	}
	n := &gitlab.Naming{Project: c.Project, NamespaceSlug: true, ReleaseSlug: true, File: c.File}
	if d := c.Deploy; d != nil {
		n.Namespace, n.Release, n.NamespaceSlug, n.ReleaseSlug = d.Namespace, d.Release, d.NamespaceSlug, d.ReleaseSlug
	}
	return n
}
