package plan

import (
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/config"
)

// TestDockerfileContextsAndSignatures: werf's most common config, image:
// app + dockerfile: Dockerfile with no context, has the whole project as
// its context; a change to any root file rebuilds it; .dockerignore'd
// files do not; the Dockerfile is read from the project's root, not the
// context.
func TestDockerfileContextsAndSignatures(t *testing.T) {
	tree := Tree{
		{Path: ".dockerignore", Mode: ModeFile, Blob: BlobID([]byte("*.md\n"))},
		{Path: "Dockerfile", Mode: ModeFile, Blob: BlobID([]byte("FROM x\nCOPY . /app"))},
		{Path: "README.md", Mode: ModeFile, Blob: BlobID([]byte("readme"))},
		{Path: "docker/web.Dockerfile", Mode: ModeFile, Blob: BlobID([]byte("FROM y"))},
		{Path: "go.mod", Mode: ModeFile, Blob: BlobID([]byte("module x"))},
		{Path: "sub/main.go", Mode: ModeFile, Blob: BlobID([]byte("package main"))},
	}
	plan := func(t *testing.T, ctx string, tree Tree) *Stage {
		t.Helper()
		cfg, err := config.ParseConfig("werf.yaml", []byte("project: p\nconfigVersion: 1\n---\nimage: app\ndockerfile: Dockerfile\n"+ctx), nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(cfg, Inputs{Tree: tree, DockerIgnore: map[string]DockerIgnore{"": ParseDockerIgnore("*.md\n")}})
		if err != nil {
			t.Fatal(err)
		}
		return p.Images[0].Final
	}
	for _, ctx := range []string{"", "context: .\n", "context: ./\n"} {
		s := plan(t, ctx, tree)
		var rels []string
		for _, f := range s.Context {
			rels = append(rels, f.Rel)
		}
		if got := strings.Join(rels, " "); got != ".dockerignore Dockerfile docker/web.Dockerfile go.mod sub/main.go" {
			t.Errorf("%q: context %s", ctx, got)
		}
		if s.DockerfileEntry.Path != "Dockerfile" {
			t.Errorf("%q: Dockerfile %+v", ctx, s.DockerfileEntry)
		}
		if plan(t, ctx, edit(tree, "go.mod", "module y")).Signature == s.Signature {
			t.Errorf("%q: a root file's change keeps the signature", ctx)
		}
		if plan(t, ctx, edit(tree, "README.md", "changed")).Signature != s.Signature {
			t.Errorf("%q: a .dockerignore'd file's change rebuilds", ctx)
		}
	}
	sub := plan(t, "context: ./sub\n", tree)
	if len(sub.Context) != 1 || sub.Context[0].Rel != "main.go" || sub.DockerfileEntry.Path != "Dockerfile" {
		t.Errorf("./sub: %+v %+v", sub.Context, sub.DockerfileEntry)
	}
	if plan(t, "context: ./sub\n", edit(tree, "Dockerfile", "FROM z")).Signature == sub.Signature {
		t.Error("the Dockerfile outside the context does not enter the signature")
	}
	cfg, _ := config.ParseConfig("werf.yaml", []byte("project: p\nconfigVersion: 1\n---\nimage: app\ndockerfile: nope/Dockerfile\n"), nil)
	// A missing Dockerfile is planned (a config may be checked alone)
	// and named, with its line, for the build to refuse.
	missing, err := NewPlan(cfg, tree, nil)
	if err != nil || len(missing.Missing) != 1 || !strings.Contains(missing.Missing[0], "werf.yaml:4: image \"app\": dockerfile: nope/Dockerfile is not in the project") {
		t.Errorf("a missing Dockerfile: %v %q", err, missing.Missing)
	}
}

// TestImportFromAStage: import stage: takes the source as it was after
// that stage, not its last.
func TestImportFromAStage(t *testing.T) {
	src := `project: p
configVersion: 1
---
artifact: build
from: x
shell:
  beforeInstall: [a]
  install: [b]
  setup: [c]
---
image: app
from: y
import:
- artifact: build
  add: /out
  after: install
  stage: %s
`
	for stage, want := range map[string]StageName{"install": StageInstall, "beforeSetup": StageInstall, "beforeInstall": StageBeforeInstall, "setup": StageSetup} {
		p := mustPlan(t, strings.Replace(src, "%s", stage, 1), nil)
		app := p.Image("app")
		var imp *Stage
		for _, s := range app.Stages {
			if s.Kind == KindImports {
				imp = s
			}
		}
		if imp == nil || imp.ImportSource[0].Name != want || imp.ImportSource[0].Image.Name != "build" {
			t.Errorf("stage %s: imports from %v", stage, imp.ImportSource)
		}
	}
}

// TestRemoteGitMappings: a remote mapping's files come from its tree;
// without it the plan still stands, saying which repository it lacks.
func TestRemoteGitMappings(t *testing.T) {
	src := "project: p\nconfigVersion: 1\n---\nimage: app\nfrom: x\ngit:\n- url: https://example.com/lib.git\n  branch: main\n  add: /src\n  to: /lib\n"
	cfg, err := config.ParseConfig("werf.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	key := RemoteKey(cfg.Images[0].Git[0])
	if key != "https://example.com/lib.git@refs/heads/main" {
		t.Errorf("key %q", key)
	}
	unresolved, err := New(cfg, Inputs{})
	if err != nil || len(unresolved.Unresolved) != 1 || unresolved.Unresolved[0] != key {
		t.Fatalf("unresolved: %v %v", unresolved, err)
	}
	remote := Tree{{Path: "src/lib.go", Mode: ModeFile, Blob: BlobID([]byte("package lib"))}, {Path: "README", Mode: ModeFile, Blob: BlobID([]byte("r"))}}
	p, err := New(cfg, Inputs{Remotes: map[string]RemoteTree{key: {Commit: strings.Repeat("a", 40), Tree: remote}}})
	if err != nil || len(p.Unresolved) != 0 {
		t.Fatalf("resolved: %v %v", p, err)
	}
	files := p.Git[cfg.Images[0]][0]
	if len(files) != 1 || files[0].Dest != "/lib/lib.go" {
		t.Errorf("files %+v", files)
	}
	changed, _ := New(cfg, Inputs{Remotes: map[string]RemoteTree{key: {Commit: strings.Repeat("b", 40), Tree: edit(remote, "src/lib.go", "package lib2")}}})
	if changed.Images[0].Final.Signature == p.Images[0].Final.Signature || changed.Images[0].Final.Signature == unresolved.Images[0].Final.Signature {
		t.Error("the remote files do not enter the signature")
	}
}

// TestWerf12Dependencies: an image gets other images' names through
// dependencies:; their final stages are in its signature (a new builder
// rebuilds what depends on it) and are built first; final: false is not
// published; disableGitAfterPatch leaves gitLatestPatch out.
func TestWerf12Dependencies(t *testing.T) {
	src := `project: p
configVersion: 1
---
image: web
dockerfile: web.Dockerfile
dependencies:
- image: builder
  imports:
  - {type: ImageName, targetBuildArg: BUILDER}
---
image: builder
dockerfile: builder.Dockerfile
final: false
---
image: worker
from: alpine
git:
- add: /
  to: /app
disableGitAfterPatch: true
dependencies:
- image: web
  imports:
  - {type: ImageTag, targetEnv: WEB_TAG}
shell:
  install: [echo $WEB_TAG]
`
	tree := Tree{
		{Path: "builder.Dockerfile", Mode: ModeFile, Blob: BlobID([]byte("FROM x"))},
		{Path: "web.Dockerfile", Mode: ModeFile, Blob: BlobID([]byte("ARG BUILDER\nFROM $BUILDER"))},
	}
	cfg, err := config.ParseConfig("werf.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := func(tree Tree) *Plan {
		p, err := NewPlan(cfg, tree, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := plan(tree)
	var order, published []string
	for _, ip := range p.Images {
		order = append(order, ip.Image.Name)
	}
	for _, ip := range p.Published() {
		published = append(published, ip.Image.Name)
	}
	if strings.Join(order, " ") != "builder web worker" || strings.Join(published, " ") != "web worker" {
		t.Errorf("order %v, published %v", order, published)
	}
	web, worker := p.Image("web").Final, p.Image("worker")
	if len(web.Dependencies) != 1 || web.Dependencies[0].Final != p.Images[0].Final || web.Dependencies[0].TargetBuildArg != "BUILDER" {
		t.Errorf("web's dependencies: %+v", web.Dependencies)
	}
	var stages []string
	for _, s := range worker.Stages {
		stages = append(stages, string(s.Name))
		if s.Kind == KindShell && (len(s.Dependencies) != 1 || s.Dependencies[0].TargetEnv != "WEB_TAG") {
			t.Errorf("worker/%s: dependencies %+v", s.Name, s.Dependencies)
		}
	}
	if got := strings.Join(stages, " "); got != "from gitArchive install" {
		t.Errorf("worker's stages: %s (disableGitAfterPatch)", got)
	}
	changed := plan(edit(tree, "builder.Dockerfile", "FROM y"))
	if changed.Image("web").Final.Signature == web.Signature || changed.Image("worker").Final.Signature == worker.Final.Signature {
		t.Error("a new builder does not rebuild what depends on it")
	}
}
