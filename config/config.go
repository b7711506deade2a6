package config

// This file reads the stage config: stagehand.yaml, or werf.yaml.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	yaml "go.yaml.in/yaml/v3"

	"gitlab.com/stagehand/stagehand/gitlab"
)

// ConfigFiles are the config file names, in order of preference.
var ConfigFiles = []string{"stagehand.yaml", "werf.yaml"}

// Config is a project's stage config.
type Config struct {
	// File is the config's file name within the project.
	File    string
	Project string
	// Images holds images and artifacts in file order.
	Images []*Image
	// cleanup overrides the job's cleanup policies (nil: none).
	cleanup *policyOverrides
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

// Image is one `image:` or `artifact:` document.
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
	FromArtifact     string
	Git              []GitMapping
	Shell            Shell
	Docker           Docker
	Imports          []Import

	// Dockerfile images are built by the engine from a Dockerfile.
	Dockerfile *Dockerfile
}

// GitMapping adds files of the project's repository to the image.
type GitMapping struct {
	Line              int
	Add               string
	To                string
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
	Owner, Group  string
	IncludePaths  []string
	ExcludePaths  []string
}

// Dockerfile is how a Dockerfile image is built.
type Dockerfile struct {
	Path    string
	Context string
	Target  string
	Args    []KeyValue
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
var ErrNoConfig = errors.New("no stagehand.yaml or werf.yaml in the project")

// LoadConfig reads the project's stage config from dir, rendering its Go
// templates with env (the job's variables).
func LoadConfig(dir string, env map[string]string) (*Config, error) {
	for _, name := range ConfigFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		return ParseConfig(name, b, env)
	}
	return nil, fmt.Errorf("%w (%s)", ErrNoConfig, dir)
}

// ParseConfig renders and parses one config file's contents.
func ParseConfig(file string, src []byte, env map[string]string) (*Config, error) {
	rendered, err := render(file, src, env)
	if err != nil {
		return nil, err
	}
	p := &parser{file: file}
	cfg, err := p.parse(rendered)
	if err != nil {
		return nil, err
	}
	cfg.File = file
	if err := p.check(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// render runs the file through Go templates as werf 1.1 did: `env "NAME"`
// and `.Env.NAME` give the job's variables.
func render(file string, src []byte, env map[string]string) ([]byte, error) {
	if env == nil {
		env = map[string]string{}
	}
	funcs := template.FuncMap{
		"env": func(name string) string { return env[name] },
		"required": func(msg string, v any) (any, error) {
			if v == nil || v == "" {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"default": func(def, v any) any {
			if v == nil || v == "" {
				return def
			}
			return v
		},
	}
	t, err := template.New(file).Funcs(funcs).Option("missingkey=zero").Parse(string(src))
	if err != nil {
		return nil, templateError(file, err)
	}
	out := &cappedBuffer{max: maxRenderedConfig}
	if err := t.Execute(out, map[string]any{"Env": env}); err != nil {
		if errors.Is(err, errConfigTooLarge) {
			return nil, &ConfigError{File: file, Msg: fmt.Sprintf("the templates render more than %d MiB: look for a range or template call that repeats without end", maxRenderedConfig>>20)}
		}
		return nil, templateError(file, err)
	}
	return out.Bytes(), nil
}

// maxRenderedConfig bounds what a config's templates may render: a
// runaway range must end as an error, not fill the runner host's memory.
const maxRenderedConfig = 16 << 20

var errConfigTooLarge = errors.New("rendered config too large")

// cappedBuffer is a bytes.Buffer that refuses to grow past max.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errConfigTooLarge
	}
	return b.Buffer.Write(p)
}

var templateLine = regexp.MustCompile(`^template: [^:]+:(\d+):(?:\d+:)? ?(.*)$`)

// templateStarted finds where an unclosed action began, which is where the
// user has to look, rather than the end of the file.
var templateStarted = regexp.MustCompile(`started at [^:]+:(\d+)`)

func templateError(file string, err error) error {
	if m := templateLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		if s := templateStarted.FindStringSubmatch(m[2]); s != nil {
			line, _ = strconv.Atoi(s[1])
		}
		return &ConfigError{File: file, Line: line, Msg: "template: " + m[2]}
	}
	return &ConfigError{File: file, Msg: "template: " + err.Error()}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

type parser struct {
	file string
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ConfigError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) parse(src []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	cfg := &Config{}
	meta := false
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				line, _ := strconv.Atoi(m[1])
				// For an unclosed flow collection the YAML library names the
				// line before the one the collection opens on.
				if strings.HasPrefix(m[2], "did not find expected") {
					line++
				}
				return nil, &ConfigError{File: p.file, Line: line, Msg: "YAML: " + m[2]}
			}
			return nil, &ConfigError{File: p.file, Msg: "YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue // an empty document
		}
		if root.Kind != yaml.MappingNode {
			return nil, p.errf(root, "a document must be a mapping of keys (project:, image:, artifact:, ...)")
		}
		if !meta {
			if err := p.meta(root, cfg); err != nil {
				return nil, err
			}
			meta = true
			continue
		}
		img, err := p.image(root)
		if err != nil {
			return nil, err
		}
		cfg.Images = append(cfg.Images, img)
	}
	if !meta {
		return nil, &ConfigError{File: p.file, Msg: "empty config: the first document must set project: and configVersion: 1"}
	}
	if len(cfg.Images) == 0 {
		return nil, &ConfigError{File: p.file, Msg: "no image: or artifact: document after the project document"}
	}
	return cfg, nil
}

// fields walks a mapping, giving each key to handle; keys it does not
// know are errors naming them.
func (p *parser) fields(m *yaml.Node, where string, handle func(key string, k, v *yaml.Node) (bool, error)) error {
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if seen[k.Value] {
			return p.errf(k, "%s: key %q is given twice", where, k.Value)
		}
		seen[k.Value] = true
		if msg, ok := unsupported[k.Value]; ok {
			return p.errf(k, "%s: %q is not supported: %s", where, k.Value, msg)
		}
		known, err := handle(k.Value, k, v)
		if err != nil {
			return err
		}
		if !known {
			return p.errf(k, "%s: unknown key %q", where, k.Value)
		}
	}
	return nil
}

// fieldSet maps a mapping's keys to where their values go: *string,
// *bool, *[]string (a list, or one value as a one-item list), *[]KeyValue,
// a commandField, or a fieldFunc for anything else.
type fieldSet map[string]any

// fieldFunc decodes a value the other field kinds do not cover.
type fieldFunc func(k, v *yaml.Node) error

// commandField is ENTRYPOINT/CMD: a list (exec form) or a string (shell
// form).
type commandField struct{ dst *[]string }

// decodeFields decodes the keys of m that set names; other keys are errors
// naming them.
func (p *parser) decodeFields(m *yaml.Node, where string, set fieldSet) error {
	return p.fields(m, where, func(key string, k, v *yaml.Node) (bool, error) {
		dst, ok := set[key]
		if !ok {
			return false, nil
		}
		return true, p.decodeValue(k, v, dst)
	})
}

func (p *parser) decodeValue(k, v *yaml.Node, dst any) error {
	key := k.Value
	var err error
	switch d := dst.(type) {
	case fieldFunc:
		err = d(k, v)
	case *string:
		*d, err = p.str(v, key)
	case *bool:
		*d, err = p.boolean(v, key)
	case *[]string:
		*d, err = p.strings(v, key)
	case *[]KeyValue:
		*d, err = p.keyValues(v, key)
	case commandField:
		*d.dst, err = p.command(v, key)
	default:
		panic(fmt.Sprintf("stages: no decoder for %s's %T", key, dst))
	}
	return err
}

// unsupported are werf 1.1 keys stagehand knowingly does not do, with what
// to do instead.
var unsupported = map[string]string{
	"ansible": "stagehand runs shell stages only; rewrite the tasks as shell: commands",
	"mount":   "build-time mounts are not supported; cache downloads in a stage or use a Dockerfile image with BuildKit mounts",
	"url":     "only the project's own repository can be added; vendor the other repository into it",
	"herebyIAdmitThatFromLatestMightBreakReproducibility": "not needed: fromLatest is allowed",
	"HEALTHCHECK": "only ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, ENTRYPOINT and CMD are supported",
	"STOPSIGNAL":  "only ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, ENTRYPOINT and CMD are supported",
	"ONBUILD":     "only ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, ENTRYPOINT and CMD are supported",
}

func (p *parser) meta(m *yaml.Node, cfg *Config) error {
	version := ""
	var versionNode *yaml.Node
	err := p.fields(m, "project document", func(key string, k, v *yaml.Node) (bool, error) {
		switch key {
		case "project":
			s, err := p.str(v, "project")
			cfg.Project = s
			return true, err
		case "configVersion":
			versionNode = v
			version = v.Value
			return true, nil
		case "cleanup":
			c, err := p.cleanup(v)
			cfg.cleanup = c
			return true, err
		case "deploy":
			return true, p.errf(k, "deploy: is not read: stagehand names the release and namespace itself; set STAGEHAND_RELEASE or STAGEHAND_NAMESPACE (or APP_NAMESPACE) on the job to choose them")
		case "image", "artifact":
			return true, p.errf(k, "the first document must be the project document (project: and configVersion: 1), then one document per image")
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	if cfg.Project == "" {
		return p.errf(m, "project: is missing or empty: name the project (it names the stages in the registry)")
	}
	if version != "1" {
		return p.errf(orNode(versionNode, m), "configVersion: must be 1 (the werf 1.1 format), not %q", version)
	}
	return nil
}

// policyOverride overrides one of ci-env's cleanup policies; nil keeps the
// job's STAGEHAND_*_STRATEGY_* value. -1 means no bound.
type policyOverride struct{ Limit, ExpiryDays *int }

// policyOverrides is the project document's cleanup: mapping.
type policyOverrides struct {
	GitTag, GitCommit, StagesSignature policyOverride
}

func (p *parser) cleanup(n *yaml.Node) (*policyOverrides, error) {
	c := &policyOverrides{}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "cleanup: maps gitTag:, gitCommit: and stagesSignature: to {limit:, expiryDays:}")
	}
	policy := func(dst *policyOverride) fieldFunc {
		return func(k, v *yaml.Node) error {
			if v.Kind != yaml.MappingNode {
				return p.errf(v, "cleanup %s: takes limit: and expiryDays:", k.Value)
			}
			num := func(into **int) fieldFunc {
				return func(k, v *yaml.Node) error {
					n, err := strconv.Atoi(v.Value)
					if v.Kind != yaml.ScalarNode || err != nil || n < -1 {
						return p.errf(v, "%s: takes a whole number (-1 for no bound), not %q", k.Value, v.Value)
					}
					*into = &n
					return nil
				}
			}
			return p.decodeFields(v, "cleanup "+k.Value, fieldSet{"limit": num(&dst.Limit), "expiryDays": num(&dst.ExpiryDays)})
		}
	}
	return c, p.decodeFields(n, "cleanup", fieldSet{
		"gitTag": policy(&c.GitTag), "gitCommit": policy(&c.GitCommit), "stagesSignature": policy(&c.StagesSignature),
	})
}

func orNode(n, def *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return def
}

func (p *parser) image(m *yaml.Node) (*Image, error) {
	img := &Image{Line: m.Line}
	var kind *yaml.Node
	where := "image"
	// The name comes first, so that later errors can say which image.
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Value != "image" && k.Value != "artifact" {
			continue
		}
		if kind != nil {
			return nil, p.errf(k, "a document is either an image: or an artifact:, not both")
		}
		kind = k
		img.Line = k.Line
		img.Artifact = k.Value == "artifact"
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			if img.Artifact {
				return nil, p.errf(v, "artifact: needs a name")
			}
		case v.Kind == yaml.ScalarNode:
			img.Name = v.Value
		default:
			return nil, p.errf(v, "%s: takes one name (a list of names is not supported: give each image its document)", k.Value)
		}
	}
	if kind == nil {
		return nil, p.errf(m, "document without image: or artifact:")
	}
	where = fmt.Sprintf("%s %q", kind.Value, img.Name)
	if img.Name == "" {
		where = "the unnamed image"
	}
	var dockerfileNode *yaml.Node
	var stapelNode *yaml.Node
	df := &Dockerfile{}
	err := p.fields(m, where, func(key string, k, v *yaml.Node) (bool, error) {
		var err error
		switch key {
		case "image", "artifact":
		case "from":
			stapelNode = k
			img.From, err = p.str(v, key)
		case "fromLatest":
			stapelNode = k
			img.FromLatest, err = p.boolean(v, key)
		case "fromCacheVersion":
			stapelNode = k
			img.FromCacheVersion, err = p.str(v, key)
		case "fromImage":
			stapelNode = k
			img.FromImage, err = p.str(v, key)
		case "fromArtifact":
			stapelNode = k
			img.FromArtifact, err = p.str(v, key)
		case "git":
			stapelNode = k
			img.Git, err = p.git(v, where)
		case "shell":
			stapelNode = k
			img.Shell, err = p.shell(v, where)
		case "docker":
			stapelNode = k
			if img.Artifact {
				return true, p.errf(k, "%s: docker: directives apply to images only; an artifact's config is never used", where)
			}
			img.Docker, err = p.docker(v, where)
		case "import":
			stapelNode = k
			img.Imports, err = p.imports(v, where)
		case "dockerfile":
			dockerfileNode = k
			df.Path, err = p.str(v, key)
		case "context":
			dockerfileNode = orNode(dockerfileNode, k)
			df.Context, err = p.str(v, key)
		case "target":
			dockerfileNode = orNode(dockerfileNode, k)
			df.Target, err = p.str(v, key)
		case "args":
			dockerfileNode = orNode(dockerfileNode, k)
			df.Args, err = p.keyValues(v, key)
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return nil, err
	}
	if dockerfileNode != nil {
		if img.Artifact {
			return nil, p.errf(dockerfileNode, "%s: an artifact cannot be built from a Dockerfile; make it an image: and import from it", where)
		}
		if df.Path == "" {
			return nil, p.errf(dockerfileNode, "%s: context:, target: and args: belong to Dockerfile images: add dockerfile: PATH", where)
		}
		if stapelNode != nil {
			return nil, p.errf(stapelNode, "%s: %q cannot be combined with dockerfile:", where, stapelNode.Value)
		}
		if err := relativePath(df.Path); err != nil {
			return nil, p.errf(dockerfileNode, "%s: dockerfile: %v", where, err)
		}
		if df.Context == "" {
			df.Context = "."
		}
		if err := relativePath(df.Context); err != nil {
			return nil, p.errf(dockerfileNode, "%s: context: %v", where, err)
		}
		img.Dockerfile = df
		return img, nil
	}
	bases := 0
	for _, b := range []string{img.From, img.FromImage, img.FromArtifact} {
		if b != "" {
			bases++
		}
	}
	if bases != 1 {
		return nil, p.errf(kind, "%s: give exactly one of from: (a base image), fromImage: or fromArtifact:", where)
	}
	return img, nil
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

func (p *parser) git(n *yaml.Node, where string) ([]GitMapping, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s: git: is a list of mappings (- add: /src ...)", where)
	}
	var out []GitMapping
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			return nil, p.errf(item, "%s: each git: entry is a mapping (add:, to:, ...)", where)
		}
		g := GitMapping{Line: item.Line, Add: "/"}
		w := where + " git"
		err := p.decodeFields(item, w, fieldSet{
			"add": &g.Add, "to": &g.To, "owner": &g.Owner, "group": &g.Group,
			"includePaths": &g.IncludePaths, "excludePaths": &g.ExcludePaths,
			"stageDependencies": fieldFunc(func(_, v *yaml.Node) (err error) {
				g.StageDependencies, err = p.stageDependencies(v, w)
				return err
			}),
		})
		if err != nil {
			return nil, err
		}
		if !path.IsAbs(g.Add) {
			return nil, p.errf(item, "%s: add: %q must be an absolute path in the repository (/ is its root)", w, g.Add)
		}
		if err := p.checkGlobs(item, w, g.IncludePaths, g.ExcludePaths, g.StageDependencies.Install, g.StageDependencies.BeforeSetup, g.StageDependencies.Setup); err != nil {
			return nil, err
		}
		if g.To == "" || !path.IsAbs(g.To) {
			return nil, p.errf(item, "%s: to: must be an absolute path in the image", w)
		}
		out = append(out, g)
	}
	return out, nil
}

func (p *parser) stageDependencies(n *yaml.Node, where string) (StageDependencies, error) {
	var d StageDependencies
	if n.Kind != yaml.MappingNode {
		return d, p.errf(n, "%s: stageDependencies: maps install:, beforeSetup: and setup: to globs", where)
	}
	err := p.decodeFields(n, where+" stageDependencies", fieldSet{
		"install": &d.Install, "beforeSetup": &d.BeforeSetup, "setup": &d.Setup,
		"beforeInstall": fieldFunc(func(k, _ *yaml.Node) error {
			return p.errf(k, "%s: beforeInstall cannot depend on files: it runs before any file is added", where)
		}),
	})
	return d, err
}

func (p *parser) shell(n *yaml.Node, where string) (Shell, error) {
	var s Shell
	if n.Kind != yaml.MappingNode {
		return s, p.errf(n, "%s: shell: maps beforeInstall:, install:, beforeSetup:, setup: to commands", where)
	}
	return s, p.decodeFields(n, where+" shell", fieldSet{
		"beforeInstall": &s.BeforeInstall, "install": &s.Install,
		"beforeSetup": &s.BeforeSetup, "setup": &s.Setup,
		"cacheVersion":              &s.CacheVersion,
		"beforeInstallCacheVersion": &s.BeforeInstallCacheVersion,
		"installCacheVersion":       &s.InstallCacheVersion,
		"beforeSetupCacheVersion":   &s.BeforeSetupCacheVersion,
		"setupCacheVersion":         &s.SetupCacheVersion,
	})
}

func (p *parser) docker(n *yaml.Node, where string) (Docker, error) {
	var d Docker
	if n.Kind != yaml.MappingNode {
		return d, p.errf(n, "%s: docker: maps directives (ENV:, CMD:, ...) to values", where)
	}
	return d, p.decodeFields(n, where+" docker", fieldSet{
		"ENV": &d.Env, "LABEL": &d.Label, "EXPOSE": &d.Expose, "VOLUME": &d.Volume,
		"WORKDIR": &d.Workdir, "USER": &d.User,
		"ENTRYPOINT": commandField{&d.Entrypoint}, "CMD": commandField{&d.Cmd},
	})
}

func (p *parser) imports(n *yaml.Node, where string) ([]Import, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s: import: is a list of mappings (- artifact: NAME ...)", where)
	}
	var out []Import
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			return nil, p.errf(item, "%s: each import: entry is a mapping (image: or artifact:, add:, to:, before: or after:)", where)
		}
		im := Import{Line: item.Line}
		w := where + " import"
		err := p.decodeFields(item, w, fieldSet{
			"image": &im.Image, "artifact": &im.Artifact, "add": &im.Add, "to": &im.To,
			"before": &im.Before, "after": &im.After, "owner": &im.Owner, "group": &im.Group,
			"includePaths": &im.IncludePaths, "excludePaths": &im.ExcludePaths,
		})
		if err != nil {
			return nil, err
		}
		if err := p.checkGlobs(item, w, im.IncludePaths, im.ExcludePaths); err != nil {
			return nil, err
		}
		if (im.Image == "") == (im.Artifact == "") {
			return nil, p.errf(item, "%s: give exactly one of image: or artifact: to import from", w)
		}
		if !path.IsAbs(im.Add) {
			return nil, p.errf(item, "%s: add: must be an absolute path in the source image", w)
		}
		if im.To == "" {
			im.To = im.Add
		}
		if !path.IsAbs(im.To) {
			return nil, p.errf(item, "%s: to: must be an absolute path", w)
		}
		if (im.Before == "") == (im.After == "") {
			return nil, p.errf(item, "%s: give exactly one of before: or after: (install or setup)", w)
		}
		for _, s := range []string{im.Before, im.After} {
			if s != "" && s != "install" && s != "setup" {
				return nil, p.errf(item, "%s: before:/after: is install or setup, not %q", w, s)
			}
		}
		out = append(out, im)
	}
	return out, nil
}

// checkGlobs refuses a malformed glob, which would otherwise select
// nothing without a word.
func (p *parser) checkGlobs(n *yaml.Node, where string, lists ...[]string) error {
	for _, l := range lists {
		for _, g := range l {
			if !validGlob(g) {
				return p.errf(n, "%s: %q is not a valid glob (an unclosed [ or a bad escape)", where, g)
			}
		}
	}
	return nil
}

func (p *parser) str(n *yaml.Node, key string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", p.errf(n, "%s: takes a single value", key)
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func (p *parser) boolean(n *yaml.Node, key string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		return false, p.errf(n, "%s: takes true or false", key)
	}
	return b, nil
}

// strings takes a list of scalars, or one scalar as a one-item list.
func (p *parser) strings(n *yaml.Node, key string) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		out := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return nil, p.errf(item, "%s: each item is a single value", key)
			}
			out = append(out, item.Value)
		}
		return out, nil
	}
	return nil, p.errf(n, "%s: takes a list of values", key)
}

// command is ENTRYPOINT/CMD: a list (exec form) or a string (shell form).
func (p *parser) command(n *yaml.Node, key string) ([]string, error) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{"/bin/sh", "-c", n.Value}, nil
	}
	return p.strings(n, key)
}

func (p *parser) keyValues(n *yaml.Node, key string) ([]KeyValue, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s: maps names to values", key)
	}
	var out []KeyValue
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return nil, p.errf(v, "%s: %s takes a single value", key, k.Value)
		}
		val := v.Value
		if v.Tag == "!!null" {
			val = ""
		}
		out = append(out, KeyValue{Key: k.Value, Value: val})
	}
	return out, nil
}

// check verifies what spans documents: unique names and references to
// images and artifacts that exist, without cycles.
func (p *parser) check(cfg *Config) error {
	byName := map[string]*Image{}
	for _, img := range cfg.Images {
		if prev, ok := byName[img.Name]; ok {
			what := fmt.Sprintf("name %q", img.Name)
			if img.Name == "" {
				what = "unnamed image"
			}
			return &ConfigError{File: p.file, Line: img.Line, Msg: fmt.Sprintf("%s is already used at line %d", what, prev.Line)}
		}
		byName[img.Name] = img
	}
	ref := func(img *Image, line int, name string, artifact bool) error {
		target, ok := byName[name]
		kind := "image"
		if artifact {
			kind = "artifact"
		}
		if !ok || target.Artifact != artifact {
			return &ConfigError{File: p.file, Line: line, Msg: fmt.Sprintf("no %s named %q in the file", kind, name)}
		}
		if target == img {
			return &ConfigError{File: p.file, Line: line, Msg: fmt.Sprintf("%s %q refers to itself", kind, name)}
		}
		return nil
	}
	for _, img := range cfg.Images {
		if img.FromImage != "" {
			if err := ref(img, img.Line, img.FromImage, false); err != nil {
				return err
			}
		}
		if img.FromArtifact != "" {
			if err := ref(img, img.Line, img.FromArtifact, true); err != nil {
				return err
			}
		}
		for _, im := range img.Imports {
			name, artifact := im.Image, false
			if im.Artifact != "" {
				name, artifact = im.Artifact, true
			}
			if err := ref(img, im.Line, name, artifact); err != nil {
				return err
			}
		}
	}
	// Cycles: depth-first over from*/import edges.
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[*Image]int{}
	var visit func(img *Image) error
	visit = func(img *Image) error {
		switch state[img] {
		case visiting:
			return &ConfigError{File: p.file, Line: img.Line, Msg: fmt.Sprintf("%q depends on itself through fromImage/fromArtifact/import", img.Name)}
		case done:
			return nil
		}
		state[img] = visiting
		for _, dep := range img.dependencies() {
			if err := visit(byName[dep]); err != nil {
				return err
			}
		}
		state[img] = done
		return nil
	}
	for _, img := range cfg.Images {
		if err := visit(img); err != nil {
			return err
		}
	}
	return nil
}

// dependencies names the images and artifacts img is built from.
func (img *Image) dependencies() []string {
	var deps []string
	for _, d := range []string{img.FromImage, img.FromArtifact} {
		if d != "" {
			deps = append(deps, d)
		}
	}
	for _, im := range img.Imports {
		deps = append(deps, im.Image+im.Artifact)
	}
	return deps
}

// LatestBases lists the base references whose digests NewPlan needs.
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

// Find is the image (or, with artifact, the artifact) of a name.
func (c *Config) Find(name string, artifact bool) *Image {
	for _, img := range c.Images {
		if img.Name == name && img.Artifact == artifact {
			return img
		}
	}
	return nil
}
