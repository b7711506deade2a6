package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

type parser struct {
	file  string
	lines *lineMap
}

// at is the file and line of a rendered line: the source's, when it is
// known; else the rendered config's, said so.
func (p *parser) at(line int) (string, int, string) {
	if p.lines == nil {
		return p.file, line, ""
	}
	file, l, ok := p.lines.source(line)
	if !ok && line > 0 {
		return p.file, l, " (line of the rendered config: see `stagehand config render`)"
	}
	return file, l, ""
}

// note is a note about node n, naming its source line.
func (p *parser) note(n *yaml.Node, format string, args ...any) string {
	_, line, _ := p.at(n.Line)
	return fmt.Sprintf("line %d: ", line) + fmt.Sprintf(format, args...)
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return p.errAt(line, fmt.Sprintf(format, args...))
}

func (p *parser) errAt(line int, msg string) error {
	file, l, note := p.at(line)
	return &ConfigError{File: file, Line: l, Msg: msg + note}
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
				return nil, p.errAt(line, "YAML: "+m[2])
			}
			return nil, &ConfigError{File: p.file, Msg: "YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if len(doc.Content) == 0 {
			continue
		}
		root, err := p.expand(doc.Content[0], 0)
		if err != nil {
			return nil, err
		}
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
		imgs, err := p.image(root, cfg)
		if err != nil {
			return nil, err
		}
		cfg.Images = append(cfg.Images, imgs...)
	}
	if !meta {
		return nil, &ConfigError{File: p.file, Msg: "empty config: the first document must set project: and configVersion: 1"}
	}
	if len(cfg.Images) == 0 {
		return nil, &ConfigError{File: p.file, Msg: "no image: or artifact: document after the project document"}
	}
	return cfg, nil
}

// maxAliasDepth bounds how deep aliases may lead (a YAML bomb).
const maxAliasDepth = 64

// expand resolves YAML aliases (*name) to what their anchors hold and
// merge keys (<<: *base) into the mapping that has them, keys given
// explicitly winning, so that the parser sees plain nodes. Anchors work
// within one document, as in werf (each document is read alone).
func (p *parser) expand(n *yaml.Node, depth int) (*yaml.Node, error) {
	if depth > maxAliasDepth {
		return nil, p.errf(n, "YAML: aliases nested more than %d deep", maxAliasDepth)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return p.expand(n.Alias, depth+1)
	case yaml.SequenceNode:
		out := *n
		out.Content = make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			e, err := p.expand(c, depth+1)
			if err != nil {
				return nil, err
			}
			out.Content[i] = e
		}
		return &out, nil
	case yaml.MappingNode:
		out := *n
		out.Content = nil
		given := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value != "<<" {
				given[n.Content[i].Value] = true
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				sources := []*yaml.Node{v}
				if v.Kind == yaml.SequenceNode {
					sources = v.Content
				}
				for _, src := range sources {
					m, err := p.expand(src, depth+1)
					if err != nil {
						return nil, err
					}
					if m.Kind != yaml.MappingNode {
						return nil, p.errf(k, "YAML: a merge key (<<) takes a mapping or a list of them")
					}
					for j := 0; j+1 < len(m.Content); j += 2 {
						if !given[m.Content[j].Value] {
							given[m.Content[j].Value] = true
							out.Content = append(out.Content, m.Content[j], m.Content[j+1])
						}
					}
				}
				continue
			}
			e, err := p.expand(v, depth+1)
			if err != nil {
				return nil, err
			}
			out.Content = append(out.Content, k, e)
		}
		return &out, nil
	}
	return n, nil
}

// unsupported are werf 1.1 keys stagehand knowingly does not do, with what
// to do instead.
var unsupported = map[string]string{
	"ansible":    "stagehand runs shell stages only; rewrite the tasks as shell: commands (README: \"From ansible to shell\")",
	"STOPSIGNAL": "werf 1.1 had no STOPSIGNAL either: use ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, ENTRYPOINT, CMD or HEALTHCHECK",
	"ONBUILD":    "werf 1.1 had no ONBUILD either: use ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, ENTRYPOINT, CMD or HEALTHCHECK",
}

func (p *parser) meta(m *yaml.Node, cfg *Config) error {
	var versionNode *yaml.Node
	err := p.fields(m, "project document", func(key string, k, v *yaml.Node) (bool, error) {
		switch key {
		case "project":
			s, err := p.str(v, "project")
			cfg.Project = s
			return true, err
		case "configVersion":
			versionNode = v
			return true, nil
		case "cleanup":
			return true, p.cleanup(v, cfg)
		case "deploy":
			d, err := p.deploy(v)
			cfg.Deploy = d
			return true, err
		case "image", "artifact", "dockerfile":
			return true, p.errf(k, "the first document must be the project document (project: and configVersion: 1), then one document per image")
		case "build", "gitWorktree":
			// werf 1.2's build: (platforms, image spec) and gitWorktree:
			// (werf's own checkout): the runner's settings decide these.
			if v.Kind != yaml.MappingNode {
				return true, p.errf(v, "%s: is a mapping", key)
			}
			cfg.Notes = append(cfg.Notes, p.note(k, "%s: (werf 1.2) is not applied: images are built for the runner host's platform from the job's checkout", key))
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	if cfg.Project == "" {
		return p.errf(m, "project: is missing or empty: name the project (it names the stages in the registry)")
	}
	// werf read configVersion as a number: 1 and 1.0 are the same.
	if versionNode == nil || versionNode.Kind != yaml.ScalarNode {
		return p.errf(orNode(versionNode, m), "configVersion: must be 1 (the werf 1.1 format)")
	}
	if f, err := strconv.ParseFloat(versionNode.Value, 64); err != nil || f != 1 || versionNode.Tag == "!!str" {
		return p.errf(versionNode, "configVersion: must be 1 (the werf 1.1 format), not %q", versionNode.Value)
	}
	return nil
}

// deploy reads the project document's deploy: as werf 1.1 did.
func (p *parser) deploy(n *yaml.Node) (*Deploy, error) {
	d := &Deploy{Namespace: "[[ project ]]-[[ env ]]", Release: "[[ project ]]-[[ env ]]", NamespaceSlug: true, ReleaseSlug: true}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "deploy: maps namespace:, helmRelease:, namespaceSlug: and helmReleaseSlug:")
	}
	err := p.decodeFields(n, "deploy", fieldSet{
		"namespace": &d.Namespace, "helmRelease": &d.Release,
		"namespaceSlug": &d.NamespaceSlug, "helmReleaseSlug": &d.ReleaseSlug,
		// werf 1.2
		"helmChartDir": &d.ChartDir,
	})
	if err != nil {
		return nil, err
	}
	for _, t := range []struct{ key, v string }{{"namespace", d.Namespace}, {"helmRelease", d.Release}} {
		if strings.TrimSpace(t.v) == "" {
			return nil, p.errf(n, "deploy: %s: is empty: give a name or a template such as \"[[ project ]]-[[ env ]]\"", t.key)
		}
	}
	return d, nil
}

// werf12CleanupKey takes one of werf 1.2's cleanup switches and says it
// is not applied: stagehand's cleanup always keeps what runs in the
// cluster and young stages.
func werf12CleanupKey(p *parser, cfg *Config) fieldFunc {
	return func(k, v *yaml.Node) error {
		if v.Kind != yaml.ScalarNode {
			return p.errf(v, "cleanup %s: takes one value", k.Value)
		}
		cfg.Notes = append(cfg.Notes, p.note(k, "cleanup %s: (werf 1.2) is not applied: stagehand's cleanup keeps what runs in the cluster and stages younger than 2 h", k.Value))
		return nil
	}
}

// policyOverride overrides one of ci-env's cleanup policies; nil keeps the
// job's STAGEHAND_*_STRATEGY_* value. -1 means no bound.
type policyOverride struct{ Limit, ExpiryDays *int }

// policyOverrides is the project document's cleanup: mapping.
type policyOverrides struct {
	GitTag, GitCommit, StagesSignature policyOverride
}

// cleanup reads the project document's cleanup: stagehand's policies
// (gitTag:, gitCommit:, stagesSignature:) and werf's keepPolicies:.
func (p *parser) cleanup(n *yaml.Node, cfg *Config) error {
	c := &policyOverrides{}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "cleanup: maps gitTag:, gitCommit: and stagesSignature: to {limit:, expiryDays:} (or holds werf's keepPolicies:)")
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
	err := p.decodeFields(n, "cleanup", fieldSet{
		"gitTag": policy(&c.GitTag), "gitCommit": policy(&c.GitCommit), "stagesSignature": policy(&c.StagesSignature),
		"keepPolicies": fieldFunc(func(_, v *yaml.Node) (err error) {
			cfg.KeepPolicies, err = p.keepPolicies(v)
			return err
		}),
		// werf 1.2's switches of its own policies
		"disableKubernetesBasedPolicy": werf12CleanupKey(p, cfg), "disableGitHistoryBasedPolicy": werf12CleanupKey(p, cfg),
		"disableBuiltWithinLastNHoursPolicy": werf12CleanupKey(p, cfg), "keepImagesBuiltWithinLastNHours": werf12CleanupKey(p, cfg),
	})
	if err == nil && (c.GitTag != policyOverride{} || c.GitCommit != policyOverride{} || c.StagesSignature != policyOverride{}) {
		cfg.cleanup = c
	}
	return err
}

// keepPolicies reads werf 1.1's cleanup keepPolicies (checked, so that a
// mistake is named; see README for what stagehand applies).
func (p *parser) keepPolicies(n *yaml.Node) ([]KeepPolicy, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "cleanup: keepPolicies: is a list of {references: {branch: or tag:, limit:}, imagesPerReference:}")
	}
	limit := func(into **KeepLimit, where string) fieldFunc {
		return func(_, v *yaml.Node) error {
			l := &KeepLimit{}
			if v.Kind != yaml.MappingNode {
				return p.errf(v, "%s: takes last:, in: and operator:", where)
			}
			err := p.decodeFields(v, where, fieldSet{
				"last": fieldFunc(func(k, v *yaml.Node) error {
					n, err := strconv.Atoi(v.Value)
					if v.Kind != yaml.ScalarNode || err != nil || n < -1 {
						return p.errf(v, "%s last: takes a whole number, not %q", where, v.Value)
					}
					l.Last = &n
					return nil
				}),
				"in": fieldFunc(func(k, v *yaml.Node) error {
					if _, err := time.ParseDuration(v.Value); v.Kind != yaml.ScalarNode || err != nil {
						return p.errf(v, "%s in: takes a duration such as 168h, not %q", where, v.Value)
					}
					l.In = v.Value
					return nil
				}),
				"operator": &l.Operator,
			})
			if err == nil && l.Operator != "" && l.Operator != "And" && l.Operator != "Or" {
				return p.errf(v, "%s operator: is And or Or, not %q", where, l.Operator)
			}
			*into = l
			return err
		}
	}
	var out []KeepPolicy
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			return nil, p.errf(item, "cleanup keepPolicies: each policy is a mapping (references:, imagesPerReference:)")
		}
		kp := KeepPolicy{Line: item.Line}
		err := p.decodeFields(item, "cleanup keepPolicies", fieldSet{
			"references": fieldFunc(func(_, v *yaml.Node) error {
				if v.Kind != yaml.MappingNode {
					return p.errf(v, "keepPolicies references: takes branch: or tag:, and limit:")
				}
				return p.decodeFields(v, "keepPolicies references", fieldSet{
					"branch": &kp.Branch, "tag": &kp.Tag, "limit": limit(&kp.Limit, "keepPolicies references limit"),
				})
			}),
			"imagesPerReference": limit(&kp.ImagesPerReference, "keepPolicies imagesPerReference"),
		})
		if err != nil {
			return nil, err
		}
		if (kp.Branch == "") == (kp.Tag == "") {
			return nil, p.errf(item, "cleanup keepPolicies: references: takes one of branch: or tag:")
		}
		for _, r := range []string{kp.Branch, kp.Tag} {
			if len(r) > 1 && strings.HasPrefix(r, "/") && strings.HasSuffix(r, "/") {
				if _, err := regexp.Compile(r[1 : len(r)-1]); err != nil {
					return nil, p.errf(item, "cleanup keepPolicies: %s is not a regexp: %v", r, err)
				}
			}
		}
		out = append(out, kp)
	}
	return out, nil
}

func orNode(n, def *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return def
}

// image reads an image:, artifact: or Dockerfile document; `image: [a, b]`
// makes one image per name.
func (p *parser) image(m *yaml.Node, cfg *Config) ([]*Image, error) {
	img := &Image{Line: m.Line}
	var kind *yaml.Node
	var names []string
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
			names = []string{""}
		case v.Kind == yaml.ScalarNode:
			names = []string{v.Value}
		case v.Kind == yaml.SequenceNode && !img.Artifact && len(v.Content) > 0:
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode || item.Value == "" {
					return nil, p.errf(item, "image: each name of the list is a single value")
				}
				names = append(names, item.Value)
			}
		default:
			return nil, p.errf(v, "%s: takes a name (image: also a list of names)", k.Value)
		}
	}
	if kind == nil {
		return nil, p.errf(m, "document without image: or artifact:")
	}
	img.Name = names[0]
	where := fmt.Sprintf("%s %q", kind.Value, img.Name)
	if len(names) > 1 {
		where = fmt.Sprintf("image %q", names)
	} else if img.Name == "" {
		where = "the unnamed image"
	}
	var dockerfileNode *yaml.Node
	var stapelNode *yaml.Node
	df := &Dockerfile{}
	err := p.fields(m, where, func(key string, k, v *yaml.Node) (bool, error) {
		var err error
		stapel := func() { stapelNode = orNode(stapelNode, k) }
		// A section a template left empty (`docker:` whose every line was
		// in an {{ if }}) is no section, as werf read it.
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" && emptySections[key] {
			stapel()
			return true, nil
		}
		switch key {
		case "image", "artifact":
		case "from":
			stapel()
			img.From, err = p.str(v, key)
		case "fromLatest":
			stapel()
			img.FromLatest, err = p.boolean(v, key)
		case "herebyIAdmitThatFromLatestMightBreakReproducibility":
			// werf 1.1 asked for it beside fromLatest; stagehand takes
			// fromLatest as it is.
			stapel()
			_, err = p.boolean(v, key)
		case "fromCacheVersion":
			stapel()
			img.FromCacheVersion, err = p.str(v, key)
		case "fromImage":
			stapel()
			img.FromImage, err = p.str(v, key)
		case "fromArtifact", "fromImageArtifact":
			stapel()
			if img.FromArtifact != "" {
				return true, p.errf(k, "%s: give one of fromArtifact: or fromImageArtifact:", where)
			}
			img.FromArtifact, err = p.str(v, key)
		case "git":
			stapel()
			img.Git, err = p.git(v, where)
		case "shell":
			stapel()
			img.Shell, err = p.shell(v, where)
		case "docker":
			stapel()
			if img.Artifact {
				return true, p.errf(k, "%s: docker: directives apply to images only; an artifact's config is never used", where)
			}
			img.Docker, err = p.docker(v, where)
		case "import":
			stapel()
			img.Imports, err = p.imports(v, where)
		case "mount":
			stapel()
			img.Mounts, err = p.mounts(v, where)
		case "asLayers":
			stapel()
			if _, err = p.boolean(v, key); err == nil {
				cfg.Notes = append(cfg.Notes, fmt.Sprintf("%s: asLayers: has no effect (each shell stage is one layer)", where))
			}
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
		case "addHost":
			dockerfileNode = orNode(dockerfileNode, k)
			df.AddHost, err = p.strings(v, key)
		case "network":
			dockerfileNode = orNode(dockerfileNode, k)
			var nw string
			if nw, err = p.str(v, key); err == nil {
				cfg.Notes = append(cfg.Notes, fmt.Sprintf("%s: network: %s is not applied: the runner's --docker-network decides the build's network", where, nw))
			}
		case "ssh":
			dockerfileNode = orNode(dockerfileNode, k)
			df.SSH, err = p.str(v, key)
		// werf 1.2's keys (werf 1.1 refused them): applied where they
		// mean something here, else named as not applied.
		case "staged", "contextAddFiles", "contextAddFile":
			dockerfileNode = orNode(dockerfileNode, k)
			if key == "staged" {
				_, err = p.boolean(v, key)
			} else {
				_, err = p.strings(v, key)
			}
			if err == nil {
				cfg.Notes = append(cfg.Notes, p.note(k, "%s: %s (werf 1.2) is not applied: %s", where, key, map[string]string{
					"staged":          "the Dockerfile is built as one stage",
					"contextAddFiles": "the build context is the commit's files",
					"contextAddFile":  "the build context is the commit's files",
				}[key]))
			}
		case "disableGitAfterPatch":
			stapel()
			img.DisableGitAfterPatch, err = p.boolean(v, key)
		case "final":
			var final bool
			final, err = p.boolean(v, key)
			img.NotFinal = !final
		case "platform":
			if _, err = p.strings(v, key); err == nil {
				cfg.Notes = append(cfg.Notes, p.note(k, "%s: platform: (werf 1.2) is not applied: images are built for the runner host's platform", where))
			}
		case "dependencies":
			img.Dependencies, err = p.dependencies(v, where)
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
			return nil, p.errf(dockerfileNode, "%s: context:, target:, args: and addHost: belong to Dockerfile images: add dockerfile: PATH", where)
		}
		if stapelNode != nil {
			return nil, p.errf(stapelNode, "%s: %q cannot be combined with dockerfile:", where, stapelNode.Value)
		}
		if err := relativePath(df.Path); err != nil {
			return nil, p.errf(dockerfileNode, "%s: dockerfile: %v", where, err)
		}
		// The project's root is "": ".", "./" and "./sub" are cleaned, as
		// werf joined them to the project's directory.
		if err := relativePath(df.Context); df.Context != "" && err != nil {
			return nil, p.errf(dockerfileNode, "%s: context: %v", where, err)
		}
		df.Path = path.Clean(df.Path)
		if df.Context = path.Clean(df.Context); df.Context == "." {
			df.Context = ""
		}
		img.Dockerfile = df
		return clones(img, names), nil
	}
	bases := 0
	for _, b := range []string{img.From, img.FromImage, img.FromArtifact} {
		if b != "" {
			bases++
		}
	}
	if bases != 1 {
		return nil, p.errf(kind, "%s: give exactly one of from: (a base image), fromImage: or fromImageArtifact:", where)
	}
	return clones(img, names), nil
}

// eachMapping gives each entry of a list of mappings to fn; list and
// entry say what the list and an entry must be when they are not.
func (p *parser) eachMapping(n *yaml.Node, list, entry string, fn func(item *yaml.Node) error) error {
	if n.Kind != yaml.SequenceNode {
		return p.errf(n, "%s", list)
	}
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			return p.errf(item, "%s", entry)
		}
		if err := fn(item); err != nil {
			return err
		}
	}
	return nil
}

// emptySections are the image keys that may be given no value.
var emptySections = map[string]bool{"git": true, "shell": true, "docker": true, "import": true, "mount": true}

// dependencies reads werf 1.2's dependencies: list.
func (p *parser) dependencies(n *yaml.Node, where string) ([]Dependency, error) {
	var out []Dependency
	err := p.eachMapping(n, fmt.Sprintf("%s: dependencies: is a list of mappings (- image: NAME, imports: [...])", where), fmt.Sprintf("%s: each dependencies: entry is a mapping (image:, imports:)", where), func(item *yaml.Node) error {
		d := Dependency{Line: item.Line}
		w := where + " dependencies"
		err := p.decodeFields(item, w, fieldSet{
			"image": &d.Image,
			"imports": fieldFunc(func(_, v *yaml.Node) error {
				if v.Kind != yaml.SequenceNode {
					return p.errf(v, "%s: imports: is a list of mappings (- type: ImageName, targetBuildArg: ARG)", w)
				}
				for _, im := range v.Content {
					if im.Kind != yaml.MappingNode {
						return p.errf(im, "%s: each imports: entry is a mapping (type:, targetBuildArg: or targetEnv:)", w)
					}
					var di DependencyImport
					if err := p.decodeFields(im, w+" imports", fieldSet{"type": &di.Type, "targetBuildArg": &di.TargetBuildArg, "targetEnv": &di.TargetEnv}); err != nil {
						return err
					}
					if !slices.Contains(DependencyTypes, di.Type) {
						return p.errf(im, "%s: type: is one of %s, not %q", w, strings.Join(DependencyTypes, ", "), di.Type)
					}
					if (di.TargetBuildArg == "") == (di.TargetEnv == "") {
						return p.errf(im, "%s: give one of targetBuildArg: (Dockerfile images) or targetEnv: (stapel images)", w)
					}
					d.Imports = append(d.Imports, di)
				}
				return nil
			}),
		})
		if err != nil {
			return err
		}
		if d.Image == "" {
			return p.errf(item, "%s: image: names the image this one depends on", w)
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// clones are img under each of names (`image: [a, b]`).
func clones(img *Image, names []string) []*Image {
	out := []*Image{img}
	for _, n := range names[1:] {
		c := *img
		c.Name = n
		out = append(out, &c)
	}
	return out
}

// mounts reads mount: (werf's: from: build_dir or tmp_dir, or fromPath:).
func (p *parser) mounts(n *yaml.Node, where string) ([]Mount, error) {
	var out []Mount
	targets := map[string]bool{}
	err := p.eachMapping(n, fmt.Sprintf("%s: mount: is a list of mappings (- from: build_dir, to: /root/.cache)", where), fmt.Sprintf("%s: each mount: entry is a mapping (from: or fromPath:, to:)", where), func(item *yaml.Node) error {
		m := Mount{Line: item.Line}
		var from string
		w := where + " mount"
		if err := p.decodeFields(item, w, fieldSet{"from": &from, "fromPath": &m.FromPath, "to": &m.To}); err != nil {
			return err
		}
		switch {
		case from != "" && m.FromPath != "":
			return p.errf(item, "%s: give one of from: or fromPath:", w)
		case from == MountBuildDir || from == MountTmpDir:
			m.Kind = from
		case from != "":
			return p.errf(item, "%s: from: is %s or %s, not %q", w, MountBuildDir, MountTmpDir, from)
		case m.FromPath != "":
			m.Kind = MountHostPath
		default:
			return p.errf(item, "%s: give from: (%s or %s) or fromPath:", w, MountBuildDir, MountTmpDir)
		}
		if m.To == "" || !path.IsAbs(m.To) {
			return p.errf(item, "%s: to: must be an absolute path in the image", w)
		}
		m.To = path.Clean(m.To)
		if targets[m.To] {
			return p.errf(item, "%s: %s is mounted twice", w, m.To)
		}
		targets[m.To] = true
		out = append(out, m)
		return nil
	})
	return out, err
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

func (p *parser) git(n *yaml.Node, where string) ([]GitMapping, error) {
	var out []GitMapping
	err := p.eachMapping(n, fmt.Sprintf("%s: git: is a list of mappings (- add: /src ...)", where), fmt.Sprintf("%s: each git: entry is a mapping (add:, to:, ...)", where), func(item *yaml.Node) error {
		g := GitMapping{Line: item.Line, Add: "/"}
		w := where + " git"
		err := p.decodeFields(item, w, fieldSet{
			"add": &g.Add, "to": &g.To, "owner": &g.Owner, "group": &g.Group,
			"includePaths": &g.IncludePaths, "excludePaths": &g.ExcludePaths,
			"stageDependencies": fieldFunc(func(_, v *yaml.Node) (err error) {
				g.StageDependencies, err = p.stageDependencies(v, w)
				return err
			}),
			"url": &g.URL, "branch": &g.Branch, "tag": &g.Tag, "commit": &g.Commit,
			"herebyIAdmitThatBranchMightBreakReproducibility": fieldFunc(func(_, v *yaml.Node) error {
				_, err := p.boolean(v, "herebyIAdmitThatBranchMightBreakReproducibility")
				return err
			}),
		})
		if err != nil {
			return err
		}
		if !path.IsAbs(g.Add) {
			return p.errf(item, "%s: add: %q must be an absolute path in the repository (/ is its root)", w, g.Add)
		}
		refs := 0
		for _, r := range []string{g.Branch, g.Tag, g.Commit} {
			if r != "" {
				refs++
			}
		}
		switch {
		case g.URL == "" && refs > 0:
			return p.errf(item, "%s: branch:, tag: and commit: belong to a remote repository (url:)", w)
		case refs > 1:
			return p.errf(item, "%s: give one of branch:, tag: or commit:", w)
		}
		if err := p.checkGlobs(item, w, g.IncludePaths, g.ExcludePaths, g.StageDependencies.Install, g.StageDependencies.BeforeSetup, g.StageDependencies.Setup); err != nil {
			return err
		}
		if g.To == "" || !path.IsAbs(g.To) {
			return p.errf(item, "%s: to: must be an absolute path in the image", w)
		}
		out = append(out, g)
		return nil
	})
	return out, err
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
		"HEALTHCHECK": &d.Healthcheck,
	})
}

func (p *parser) imports(n *yaml.Node, where string) ([]Import, error) {
	var out []Import
	err := p.eachMapping(n, fmt.Sprintf("%s: import: is a list of mappings (- artifact: NAME ...)", where), fmt.Sprintf("%s: each import: entry is a mapping (image: or artifact:, add:, to:, before: or after:)", where), func(item *yaml.Node) error {
		im := Import{Line: item.Line}
		w := where + " import"
		err := p.decodeFields(item, w, fieldSet{
			"image": &im.Image, "artifact": &im.Artifact, "add": &im.Add, "to": &im.To,
			"before": &im.Before, "after": &im.After, "owner": &im.Owner, "group": &im.Group,
			"includePaths": &im.IncludePaths, "excludePaths": &im.ExcludePaths,
			"stage": &im.Stage,
		})
		if err != nil {
			return err
		}
		if err := p.checkGlobs(item, w, im.IncludePaths, im.ExcludePaths); err != nil {
			return err
		}
		if (im.Image == "") == (im.Artifact == "") {
			return p.errf(item, "%s: give exactly one of image: or artifact: to import from", w)
		}
		if !path.IsAbs(im.Add) {
			return p.errf(item, "%s: add: must be an absolute path in the source image", w)
		}
		if im.To == "" {
			im.To = im.Add
		}
		if !path.IsAbs(im.To) {
			return p.errf(item, "%s: to: must be an absolute path", w)
		}
		if (im.Before == "") == (im.After == "") {
			return p.errf(item, "%s: give exactly one of before: or after: (install or setup)", w)
		}
		for _, s := range []string{im.Before, im.After} {
			if s != "" && s != "install" && s != "setup" {
				return p.errf(item, "%s: before:/after: is install or setup, not %q", w, s)
			}
		}
		switch im.Stage {
		case "", "beforeInstall", "install", "beforeSetup", "setup":
		default:
			return p.errf(item, "%s: stage: is beforeInstall, install, beforeSetup or setup (the source's stage to import from), not %q", w, im.Stage)
		}
		out = append(out, im)
		return nil
	})
	return out, err
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
		for _, d := range img.Dependencies {
			target, ok := byName[d.Image]
			if !ok {
				return &ConfigError{File: p.file, Line: d.Line, Msg: fmt.Sprintf("dependencies: no image named %q in the file", d.Image)}
			}
			if err := ref(img, d.Line, d.Image, target.Artifact); err != nil {
				return err
			}
			for _, di := range d.Imports {
				if img.Dockerfile != nil && di.TargetEnv != "" || img.Dockerfile == nil && di.TargetBuildArg != "" {
					return &ConfigError{File: p.file, Line: d.Line, Msg: "dependencies: a Dockerfile image takes targetBuildArg:, a stapel image targetEnv:"}
				}
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
			return &ConfigError{File: p.file, Line: img.Line, Msg: fmt.Sprintf("%q depends on itself through fromImage/fromArtifact/import/dependencies", img.Name)}
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
	for _, d := range img.Dependencies {
		deps = append(deps, d.Image)
	}
	return deps
}
