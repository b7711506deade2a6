package plan

import (
	"crypto/sha3"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	"gitlab.com/stagehand/stagehand/config"
)

// StageName names a stage of an image, in werf 1.1's order.
type StageName string

// The stages of a stapel image, in build order, and the single stage of a
// Dockerfile image. Stages with nothing to do are left out of a plan.
const (
	StageFrom                 StageName = "from"
	StageBeforeInstall        StageName = "beforeInstall"
	StageImportsBeforeInstall StageName = "importsBeforeInstall"
	StageGitArchive           StageName = "gitArchive"
	StageInstall              StageName = "install"
	StageImportsAfterInstall  StageName = "importsAfterInstall"
	StageBeforeSetup          StageName = "beforeSetup"
	StageImportsBeforeSetup   StageName = "importsBeforeSetup"
	StageSetup                StageName = "setup"
	StageImportsAfterSetup    StageName = "importsAfterSetup"
	StageGitLatestPatch       StageName = "gitLatestPatch"
	StageDockerInstructions   StageName = "dockerInstructions"
	StageDockerfile           StageName = "dockerfile"
)

// StageKind is how a stage is made, which decides where it is built.
type StageKind int

const (
	// KindBase copies the base image into the stages storage.
	KindBase StageKind = iota
	// KindShell runs commands in a container of the parent (Docker Engine).
	KindShell
	// KindGitArchive adds the mapped git files as a layer (no engine).
	KindGitArchive
	// KindGitPatch brings the git files up to the current tree (no engine).
	KindGitPatch
	// KindImports adds files of other images as layers.
	KindImports
	// KindDocker changes the image config only.
	KindDocker
	// KindDockerfile builds a Dockerfile with the engine.
	KindDockerfile
)

// signatureFormat changes when the meaning of the inputs changes, so that
// stages of older stagehand versions are not mistaken for new ones.
const signatureFormat = "stagehand-stage/1"

// Stage is one stage of an image in a build plan.
type Stage struct {
	Image     *config.Image
	Name      StageName
	Kind      StageKind
	Signature string
	// Parent is the stage this one is built on; nil for a base or a
	// Dockerfile stage.
	Parent *Stage

	// BaseRef is the base image of a KindBase stage.
	BaseRef string
	// Commands of a KindShell stage.
	Commands []string
	// Imports of a KindImports stage, with the final stages they copy from.
	Imports      []config.Import
	ImportSource []*Stage
	// ImportKey identifies the files a KindImports stage adds, whatever
	// its parent: the layer is made once and reused (see Storage.ImportLayer).
	ImportKey string
	// SyncGit is set on stages that bring the image's git files up to the
	// current tree first (shell stages after gitArchive, gitLatestPatch).
	SyncGit bool
	// DockerfileEntry and Context are a Dockerfile stage's Dockerfile and
	// build context (the files below the context directory that its
	// .dockerignore leaves in).
	DockerfileEntry TreeEntry
	Context         []GitFile
	// Dependencies are the values other images give a Dockerfile stage's
	// build args or a shell stage's environment (werf 1.2's
	// dependencies:).
	Dependencies []StageDependency
}

// StageDependency is one value of another image a stage gets.
type StageDependency struct {
	config.DependencyImport
	// Final is the other image's final stage.
	Final *Stage
}

// String names the stage for the trace: "backend/install".
func (s *Stage) String() string {
	name := s.Image.Name
	if name == "" {
		name = "~"
	}
	return name + "/" + string(s.Name)
}

// ImagePlan is the stages of one image or artifact, in build order.
type ImagePlan struct {
	Image  *config.Image
	Stages []*Stage
	// Final is the stage the image is published from. For an image that
	// only names another (fromImage with nothing else) it is that image's
	// final stage.
	Final *Stage
}

// Plan is the stages of every image of a config, for one tree.
type Plan struct {
	Config *config.Config
	// Images in dependency order: an image comes after those it is built
	// from or imports from.
	Images []*ImagePlan
	// Git holds, per image, the files each git mapping puts in the image.
	Git map[*config.Image][][]GitFile
	// Unresolved are the remote repositories (RemoteKey) whose trees the
	// inputs lacked: the stages that map their files have signatures of
	// the ref, not of the files, and cannot be built.
	Unresolved []string
	// Missing says which files the config names are not in the tree
	// (a Dockerfile): such a plan cannot be built.
	Missing []string
}

// GitFile is a project file as a git mapping puts it in an image.
type GitFile struct {
	TreeEntry
	// Dest is the file's absolute path in the image.
	Dest string
	// Rel is the path relative to the mapping's add:, which globs match.
	Rel string
}

// BaseDigests are the current digests of the base images of `fromLatest`
// images, by reference: with fromLatest, a new base rebuilds the image.
type BaseDigests map[string]string

// Inputs are what a plan reads besides the config.
type Inputs struct {
	// Tree is the project's files.
	Tree Tree
	// Bases are the digests of fromLatest base images.
	Bases BaseDigests
	// DockerIgnore are the .dockerignore files of Dockerfile images, by
	// context directory ("" the project's root).
	DockerIgnore map[string]DockerIgnore
	// Remotes are the trees of remote git mappings, by RemoteKey; a
	// mapping whose tree is missing is planned unresolved (see
	// Plan.Unresolved).
	Remotes map[string]RemoteTree
}

// RemoteTree is a remote repository's tree at the commit a mapping's ref
// resolved to.
type RemoteTree struct {
	Commit string
	Tree   Tree
}

// RemoteKey names a remote mapping's repository and ref.
func RemoteKey(m config.GitMapping) string {
	ref := "HEAD"
	switch {
	case m.Commit != "":
		ref = m.Commit
	case m.Tag != "":
		ref = "refs/tags/" + m.Tag
	case m.Branch != "":
		ref = "refs/heads/" + m.Branch
	}
	return m.URL + "@" + ref
}

// NewPlan computes every image's stages and signatures from the project's
// tree and the base digests (no remote mapping, no .dockerignore).
func NewPlan(cfg *config.Config, tree Tree, bases BaseDigests) (*Plan, error) {
	return New(cfg, Inputs{Tree: tree, Bases: bases})
}

// New computes every image's stages and signatures. It is pure: the
// inputs are all it reads.
func New(cfg *config.Config, in Inputs) (*Plan, error) {
	p := &Plan{Config: cfg, Git: map[*config.Image][][]GitFile{}}
	byName := map[string]*ImagePlan{}
	var add func(img *config.Image) (*ImagePlan, error)
	add = func(img *config.Image) (*ImagePlan, error) {
		if ip, ok := byName[key(img)]; ok {
			return ip, nil
		}
		deps := map[string]*ImagePlan{}
		for _, dep := range dependencies(img) {
			target := cfg.Find(dep.name, dep.artifact)
			if dep.either {
				target = cfg.FindAny(dep.name)
			}
			if target == nil {
				return nil, fmt.Errorf("%s: no image %q", cfg.File, dep.name)
			}
			ip, err := add(target)
			if err != nil {
				return nil, err
			}
			deps[key(target)] = ip
		}
		ip, err := p.planImage(img, in, deps)
		if err != nil {
			return nil, err
		}
		byName[key(img)] = ip
		p.Images = append(p.Images, ip)
		return ip, nil
	}
	for _, img := range cfg.Images {
		if _, err := add(img); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Image finds an image's plan by name ("" for the unnamed image).
func (p *Plan) Image(name string) *ImagePlan {
	for _, ip := range p.Images {
		if !ip.Image.Artifact && ip.Image.Name == name {
			return ip
		}
	}
	return nil
}

// Published are the plans of images (not artifacts, nor images with
// final: false), in config order.
func (p *Plan) Published() []*ImagePlan {
	var out []*ImagePlan
	for _, img := range p.Config.Images {
		if img.Artifact || img.NotFinal {
			continue
		}
		out = append(out, p.Image(img.Name))
	}
	return out
}

type dependency struct {
	name     string
	artifact bool
	// either: an image, else an artifact, of that name (dependencies:).
	either bool
}

func dependencies(img *config.Image) []dependency {
	var out []dependency
	if img.FromImage != "" {
		out = append(out, dependency{img.FromImage, false, false})
	}
	if img.FromArtifact != "" {
		out = append(out, dependency{img.FromArtifact, true, false})
	}
	for _, im := range img.Imports {
		if im.Artifact != "" {
			out = append(out, dependency{im.Artifact, true, false})
		} else {
			out = append(out, dependency{im.Image, false, false})
		}
	}
	for _, d := range img.Dependencies {
		out = append(out, dependency{d.Image, false, true})
	}
	return out
}

func key(img *config.Image) string {
	if img.Artifact {
		return "artifact:" + img.Name
	}
	return "image:" + img.Name
}

func (p *Plan) planImage(img *config.Image, in Inputs, deps map[string]*ImagePlan) (*ImagePlan, error) {
	tree, bases := in.Tree, in.Bases
	ip := &ImagePlan{Image: img}
	// werf 1.2's dependencies: the other image's final stage is in the
	// signature of each stage that gets its values.
	var stageDeps []StageDependency
	var depInputs []string
	for _, d := range img.Dependencies {
		target := deps["image:"+d.Image]
		if target == nil {
			target = deps["artifact:"+d.Image]
		}
		for _, di := range d.Imports {
			stageDeps = append(stageDeps, StageDependency{DependencyImport: di, Final: target.Final})
			depInputs = append(depInputs, "dependency="+target.Final.Signature+" "+di.Type+" "+di.TargetBuildArg+di.TargetEnv)
		}
	}
	push := func(s *Stage, inputs ...string) {
		s.Image = img
		if n := len(ip.Stages); n > 0 {
			s.Parent = ip.Stages[n-1]
		} else if ip.Final != nil {
			s.Parent = ip.Final // fromImage / fromArtifact
		}
		parent := ""
		if s.Parent != nil {
			parent = s.Parent.Signature
		}
		s.Signature = signature(append([]string{signatureFormat, parent, string(s.Name)}, inputs...)...)
		ip.Stages = append(ip.Stages, s)
		ip.Final = s
	}

	if d := img.Dockerfile; d != nil {
		s := &Stage{Name: StageDockerfile, Kind: KindDockerfile, Dependencies: stageDeps}
		inputs := []string{"dockerfile=" + d.Path, "context=" + d.Context, "target=" + d.Target}
		inputs = append(inputs, depInputs...)
		for _, a := range d.Args {
			inputs = append(inputs, "arg="+a.Key+"="+a.Value)
		}
		for _, h := range d.AddHost {
			inputs = append(inputs, "addHost="+h)
		}
		// werf 1.1 read dockerfile: from the project's root, whatever the
		// context: it enters the signature by its contents.
		for _, e := range tree {
			if e.Path == d.Path {
				s.DockerfileEntry = e
			}
		}
		if s.DockerfileEntry.Blob == "" {
			// A plan is still shown (a config may be checked alone); a
			// build refuses it (see Missing).
			p.Missing = append(p.Missing, fmt.Sprintf("%s:%d: %s: dockerfile: %s is not in the project (paths are relative to the project's root, as in werf 1.1)", p.Config.File, img.Line, img.Describe(), d.Path))
			inputs = append(inputs, "dockerfile-missing")
		} else {
			inputs = append(inputs, "dockerfile-blob="+s.DockerfileEntry.Blob)
		}
		s.Context = ContextFiles(d.Context, tree, in.DockerIgnore[d.Context])
		for _, f := range s.Context {
			inputs = append(inputs, f.Mode+" "+f.Blob+" "+f.Rel)
		}
		push(s, inputs...)
		return ip, nil
	}

	switch {
	case img.FromImage != "":
		ip.Final = deps["image:"+img.FromImage].Final
	case img.FromArtifact != "":
		ip.Final = deps["artifact:"+img.FromArtifact].Final
	default:
		inputs := []string{img.From, "cacheVersion=" + img.FromCacheVersion}
		if img.FromLatest {
			digest, ok := bases[img.From]
			if !ok || digest == "" {
				return nil, fmt.Errorf("%s: the digest of %s (fromLatest) is not known", img.Describe(), img.From)
			}
			inputs = append(inputs, "digest="+digest)
		}
		push(&Stage{Name: StageFrom, Kind: KindBase, BaseRef: img.From}, inputs...)
	}

	git := make([][]GitFile, len(img.Git))
	for i, m := range img.Git {
		if m.URL == "" {
			git[i] = selectGit(m, tree)
			continue
		}
		remote, ok := in.Remotes[RemoteKey(m)]
		if !ok {
			p.unresolved(RemoteKey(m))
		}
		git[i] = selectGit(m, remote.Tree)
	}
	p.Git[img] = git
	hasGit := len(img.Git) > 0

	shell := func(name StageName, cmds []string, stageVersion string, deps func(config.StageDependencies) []string, afterGit bool) {
		if len(cmds) == 0 {
			return
		}
		inputs := []string{"cacheVersion=" + img.Shell.CacheVersion, "stageCacheVersion=" + stageVersion}
		inputs = append(inputs, depInputs...)
		inputs = append(inputs, cmds...)
		if deps != nil {
			for i, m := range img.Git {
				globs := deps(m.StageDependencies)
				if len(globs) == 0 {
					continue
				}
				inputs = append(inputs, fmt.Sprintf("git[%d]", i))
				for _, f := range git[i] {
					if config.AnyGlob(globs, f.Rel) {
						inputs = append(inputs, f.Mode+" "+f.Blob+" "+f.Dest)
					}
				}
			}
		}
		push(&Stage{Name: name, Kind: KindShell, Commands: cmds, SyncGit: afterGit && hasGit, Dependencies: stageDeps}, inputs...)
	}
	var importErr error
	imports := func(name StageName, before, after string) {
		var ims []config.Import
		var srcs []*Stage
		var inputs []string
		for _, im := range img.Imports {
			if (before != "" && im.Before == before) || (after != "" && im.After == after) {
				src := deps["image:"+im.Image]
				if im.Artifact != "" {
					src = deps["artifact:"+im.Artifact]
				}
				from, err := importedStage(src, im.Stage)
				if err != nil {
					importErr = fmt.Errorf("%s:%d: import: %w", p.Config.File, im.Line, err)
					return
				}
				ims = append(ims, im)
				srcs = append(srcs, from)
				inputs = append(inputs, from.Signature, im.Add, im.To, im.Owner, im.Group,
					"include="+strings.Join(im.IncludePaths, ","), "exclude="+strings.Join(im.ExcludePaths, ","))
			}
		}
		if len(ims) > 0 {
			key := signature(append([]string{signatureFormat, "imports"}, inputs...)...)
			push(&Stage{Name: name, Kind: KindImports, Imports: ims, ImportSource: srcs, ImportKey: key}, inputs...)
		}
	}

	sh := img.Shell
	shell(StageBeforeInstall, sh.BeforeInstall, sh.BeforeInstallCacheVersion, nil, false)
	imports(StageImportsBeforeInstall, "install", "")
	if hasGit {
		var inputs []string
		for _, m := range img.Git {
			if m.URL != "" {
				inputs = append(inputs, "remote="+RemoteKey(m))
			}
			inputs = append(inputs, m.Add, m.To, m.Owner, m.Group,
				"include="+strings.Join(m.IncludePaths, ","), "exclude="+strings.Join(m.ExcludePaths, ","))
		}
		push(&Stage{Name: StageGitArchive, Kind: KindGitArchive}, inputs...)
	}
	shell(StageInstall, sh.Install, sh.InstallCacheVersion, func(d config.StageDependencies) []string { return d.Install }, true)
	imports(StageImportsAfterInstall, "", "install")
	shell(StageBeforeSetup, sh.BeforeSetup, sh.BeforeSetupCacheVersion, func(d config.StageDependencies) []string { return d.BeforeSetup }, true)
	imports(StageImportsBeforeSetup, "setup", "")
	shell(StageSetup, sh.Setup, sh.SetupCacheVersion, func(d config.StageDependencies) []string { return d.Setup }, true)
	imports(StageImportsAfterSetup, "", "setup")
	if hasGit && !img.DisableGitAfterPatch {
		var inputs []string
		for i, m := range img.Git {
			inputs = append(inputs, fmt.Sprintf("git[%d]", i))
			if m.URL != "" && p.isUnresolved(RemoteKey(m)) {
				inputs = append(inputs, "unresolved")
			}
			for _, f := range git[i] {
				inputs = append(inputs, f.Mode+" "+f.Blob+" "+f.Dest)
			}
		}
		push(&Stage{Name: StageGitLatestPatch, Kind: KindGitPatch, SyncGit: true}, inputs...)
	}
	if importErr != nil {
		return nil, importErr
	}
	if d := dockerInputs(img.Docker); len(d) > 0 {
		push(&Stage{Name: StageDockerInstructions, Kind: KindDocker}, d...)
	}
	return ip, nil
}

// dockerInputs serialises the docker: directives in a fixed order.
func dockerInputs(d config.Docker) []string {
	var out []string
	for _, kv := range d.Env {
		out = append(out, "ENV "+kv.Key+"="+kv.Value)
	}
	for _, kv := range d.Label {
		out = append(out, "LABEL "+kv.Key+"="+kv.Value)
	}
	for _, v := range d.Expose {
		out = append(out, "EXPOSE "+v)
	}
	for _, v := range d.Volume {
		out = append(out, "VOLUME "+v)
	}
	if d.Workdir != "" {
		out = append(out, "WORKDIR "+d.Workdir)
	}
	if d.User != "" {
		out = append(out, "USER "+d.User)
	}
	if d.Entrypoint != nil {
		out = append(out, "ENTRYPOINT "+strings.Join(d.Entrypoint, "\x00"))
	}
	if d.Cmd != nil {
		out = append(out, "CMD "+strings.Join(d.Cmd, "\x00"))
	}
	return out
}

// selectGit lists the files a git mapping puts in the image.
func selectGit(m config.GitMapping, tree Tree) []GitFile {
	sel := m.Selection()
	var out []GitFile
	for _, e := range tree {
		rel, ok := sel.Match(e.Path)
		if !ok {
			continue
		}
		dest := m.To
		if rel != "" {
			dest = path.Join(m.To, rel)
		}
		out = append(out, GitFile{TreeEntry: e, Dest: dest, Rel: rel})
	}
	return out
}

// signature hashes a stage's inputs (SHA3-224, as werf 1.1).
func signature(parts ...string) string {
	h := sha3.New224()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte(":::"))
	}
	return hex.EncodeToString(h.Sum(nil))
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

func (p *Plan) unresolved(key string) {
	if !p.isUnresolved(key) {
		p.Unresolved = append(p.Unresolved, key)
	}
}

func (p *Plan) isUnresolved(key string) bool {
	for _, k := range p.Unresolved {
		if k == key {
			return true
		}
	}
	return false
}

// ContextFiles are the files of a Dockerfile image's build context: those
// below dir ("" the project's root) that ignore leaves in, by their path
// relative to dir (Rel).
func ContextFiles(dir string, tree Tree, ignore DockerIgnore) []GitFile {
	var out []GitFile
	for _, e := range tree {
		rel := e.Path
		if dir != "" {
			r, ok := strings.CutPrefix(e.Path, dir+"/")
			if !ok {
				continue
			}
			rel = r
		}
		if ignore.Excluded(rel) {
			continue
		}
		out = append(out, GitFile{TreeEntry: e, Dest: "/" + rel, Rel: rel})
	}
	return out
}

// stageOrder is werf 1.1's order of a stapel image's stages.
var stageOrder = []StageName{StageFrom, StageBeforeInstall, StageImportsBeforeInstall, StageGitArchive, StageInstall,
	StageImportsAfterInstall, StageBeforeSetup, StageImportsBeforeSetup, StageSetup, StageImportsAfterSetup,
	StageGitLatestPatch, StageDockerInstructions}

func orderOf(n StageName) int {
	for i, s := range stageOrder {
		if s == n {
			return i
		}
	}
	return len(stageOrder)
}

// importedStage is what an import takes its files from: the source's
// final stage, or, with stage:, the source as it was after that stage
// (its latest stage up to it, as werf imported from a stage).
func importedStage(src *ImagePlan, stage string) (*Stage, error) {
	if stage == "" {
		return src.Final, nil
	}
	if src.Image.Dockerfile != nil {
		return nil, fmt.Errorf("stage: %s: %s is built from a Dockerfile and has no stapel stages", stage, src.Image.Describe())
	}
	var from *Stage
	for _, s := range src.Stages {
		if orderOf(s.Name) <= orderOf(StageName(stage)) {
			from = s
		}
	}
	if from == nil && len(src.Stages) > 0 {
		from = src.Stages[0].Parent // the image it was built from
	}
	if from == nil {
		return nil, fmt.Errorf("stage: %s: %s has no stage up to %s", stage, src.Image.Describe(), stage)
	}
	return from, nil
}
