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
	if _, err := NewPlan(cfg, tree, nil); err == nil || !strings.Contains(err.Error(), "nope/Dockerfile is not in the project") {
		t.Errorf("a missing Dockerfile: %v", err)
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
