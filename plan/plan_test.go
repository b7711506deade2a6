package plan

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/config"
)

const planYAML = `project: shop
configVersion: 1
---
image: backend
from: registry.example/base:1
git:
- add: /app
  to: /srv/app
  excludePaths: [docs]
  stageDependencies:
    install: [requirements.txt]
    beforeSetup: ["migrations/**"]
    setup: ["**/*.py"]
shell:
  beforeInstall: [apk add python3]
  install: [pip install -r /srv/app/requirements.txt]
  beforeSetup: [ls /srv/app/migrations]
  setup: [python3 -m compileall /srv/app]
docker:
  CMD: [python3, /srv/app/main.py]
---
artifact: assets
from: registry.example/node:1
git:
- add: /web
  to: /web
shell:
  install: [npm ci]
---
image: frontend
fromImage: backend
import:
- artifact: assets
  add: /web/dist
  to: /srv/static
  after: setup
---
image: tool
dockerfile: tools/Dockerfile
context: tools
`

func planTree() Tree {
	return Tree{
		{Path: "README.md", Mode: ModeFile, Blob: BlobID([]byte("readme"))},
		{Path: "app/docs/index.md", Mode: ModeFile, Blob: BlobID([]byte("docs"))},
		{Path: "app/main.py", Mode: ModeFile, Blob: BlobID([]byte("print(1)"))},
		{Path: "app/migrations/0001.sql", Mode: ModeFile, Blob: BlobID([]byte("create"))},
		{Path: "app/requirements.txt", Mode: ModeFile, Blob: BlobID([]byte("flask"))},
		{Path: "app/static/style.css", Mode: ModeFile, Blob: BlobID([]byte("body{}"))},
		{Path: "tools/Dockerfile", Mode: ModeFile, Blob: BlobID([]byte("FROM x"))},
		{Path: "web/package.json", Mode: ModeFile, Blob: BlobID([]byte("{}"))},
	}
}

func mustPlan(t *testing.T, src string, tree Tree) *Plan {
	t.Helper()
	cfg, err := config.ParseConfig("werf.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(cfg, tree, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// signatures maps "image/stage" to signature.
func signatures(p *Plan) map[string]string {
	m := map[string]string{}
	for _, ip := range p.Images {
		for _, s := range ip.Stages {
			m[s.String()] = s.Signature
		}
	}
	return m
}

func TestPlanStageOrder(t *testing.T) {
	p := mustPlan(t, planYAML, planTree())
	var got []string
	for _, ip := range p.Images {
		for _, s := range ip.Stages {
			got = append(got, s.String())
		}
	}
	want := []string{
		"backend/from", "backend/beforeInstall", "backend/gitArchive", "backend/install",
		"backend/beforeSetup", "backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions",
		"assets/from", "assets/gitArchive", "assets/install", "assets/gitLatestPatch",
		"frontend/importsAfterSetup",
		"tool/dockerfile",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stages:\n got %v\nwant %v", got, want)
	}
	front := p.Image("frontend")
	if front.Stages[0].Parent != p.Image("backend").Final {
		t.Error("frontend's first stage is not built on backend's final stage")
	}
	if p.Image("frontend").Stages[0].ImportSource[0] != p.Images[1].Final {
		t.Error("the import does not copy from the assets artifact's final stage")
	}
	if got := len(p.Published()); got != 3 {
		t.Errorf("published images = %d, want 3 (the artifact is not published)", got)
	}
}

func edit(tree Tree, path, contents string) Tree {
	out := append(Tree{}, tree...)
	for i := range out {
		if out[i].Path == path {
			if contents == "" {
				return append(out[:i:i], out[i+1:]...)
			}
			out[i].Blob = BlobID([]byte(contents))
			return out
		}
	}
	out = append(out, TreeEntry{Path: path, Mode: ModeFile, Blob: BlobID([]byte(contents))})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func TestSignaturesChangeWithTheirInputs(t *testing.T) {
	base := signatures(mustPlan(t, planYAML, planTree()))
	cases := []struct {
		name string
		tree func(Tree) Tree
		src  func(string) string
		want []string // the stages whose signature changes
	}{
		{name: "nothing changed", want: nil},
		{
			name: "a file no mapping adds",
			tree: func(tr Tree) Tree { return edit(tr, "README.md", "new readme") },
		},
		{
			name: "an excluded file",
			tree: func(tr Tree) Tree { return edit(tr, "app/docs/index.md", "more docs") },
		},
		{
			name: "a file only the latest patch carries",
			tree: func(tr Tree) Tree { return edit(tr, "app/static/style.css", "body{color:red}") },
			want: []string{"backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "a setup dependency",
			tree: func(tr Tree) Tree { return edit(tr, "app/main.py", "print(2)") },
			want: []string{"backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "a beforeSetup dependency (migrations/**)",
			tree: func(tr Tree) Tree { return edit(tr, "app/migrations/0002.sql", "alter") },
			want: []string{"backend/beforeSetup", "backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "an install dependency",
			tree: func(tr Tree) Tree { return edit(tr, "app/requirements.txt", "flask\nredis") },
			want: []string{"backend/install", "backend/beforeSetup", "backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "a file removed",
			tree: func(tr Tree) Tree { return edit(tr, "app/main.py", "") },
			want: []string{"backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "the artifact's files",
			tree: func(tr Tree) Tree { return edit(tr, "web/package.json", `{"a":1}`) },
			want: []string{"assets/gitLatestPatch", "frontend/importsAfterSetup"},
		},
		{
			name: "the Dockerfile context",
			tree: func(tr Tree) Tree { return edit(tr, "tools/Dockerfile", "FROM y") },
			want: []string{"tool/dockerfile"},
		},
		{
			name: "a setup command",
			src:  func(s string) string { return strings.Replace(s, "compileall", "compileall -q", 1) },
			want: []string{"backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "the base image",
			src:  func(s string) string { return strings.Replace(s, "base:1", "base:2", 1) },
			want: []string{"backend/from", "backend/beforeInstall", "backend/gitArchive", "backend/install", "backend/beforeSetup", "backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "a docker directive",
			src:  func(s string) string { return strings.Replace(s, "/srv/app/main.py]", "/srv/app/main.py, --debug]", 1) },
			want: []string{"backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
		{
			name: "the import's destination",
			src:  func(s string) string { return strings.Replace(s, "to: /srv/static", "to: /srv/public", 1) },
			want: []string{"frontend/importsAfterSetup"},
		},
		{
			name: "the mapping's destination",
			src:  func(s string) string { return strings.Replace(s, "to: /srv/app", "to: /opt/app", 1) },
			want: []string{"backend/gitArchive", "backend/install", "backend/beforeSetup", "backend/setup", "backend/gitLatestPatch", "backend/dockerInstructions", "frontend/importsAfterSetup"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, tree := planYAML, planTree()
			if tc.src != nil {
				src = tc.src(src)
			}
			if tc.tree != nil {
				tree = tc.tree(tree)
			}
			got := signatures(mustPlan(t, src, tree))
			var changed []string
			for k, v := range got {
				if base[k] != v {
					changed = append(changed, k)
				}
			}
			sort.Strings(changed)
			want := append([]string{}, tc.want...)
			sort.Strings(want)
			if !reflect.DeepEqual(changed, want) && !(len(changed) == 0 && len(want) == 0) {
				t.Errorf("changed stages:\n got %v\nwant %v", changed, want)
			}
		})
	}
}

func TestFromLatestNeedsTheBaseDigest(t *testing.T) {
	src := "project: p\nconfigVersion: 1\n---\nimage: ~\nfrom: base:1\nfromLatest: true\n"
	cfg, err := config.ParseConfig("werf.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.LatestBases(); !reflect.DeepEqual(got, []string{"base:1"}) {
		t.Fatalf("LatestBases = %v", got)
	}
	if _, err := NewPlan(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "fromLatest") {
		t.Fatalf("without the digest: err = %v", err)
	}
	a, _ := NewPlan(cfg, nil, BaseDigests{"base:1": "sha256:aa"})
	b, _ := NewPlan(cfg, nil, BaseDigests{"base:1": "sha256:bb"})
	if a.Images[0].Final.Signature == b.Images[0].Final.Signature {
		t.Error("a new base digest does not change the from stage")
	}
}

func TestSelectGit(t *testing.T) {
	tree := planTree()
	got := selectGit(config.GitMapping{Add: "/app", To: "/srv", IncludePaths: []string{"*.py", "migrations"}, ExcludePaths: []string{"migrations/0001.sql"}}, tree)
	if len(got) != 1 || got[0].Dest != "/srv/main.py" || got[0].Rel != "main.py" {
		t.Fatalf("selectGit = %+v", got)
	}
	one := selectGit(config.GitMapping{Add: "/README.md", To: "/etc/readme"}, tree)
	if len(one) != 1 || one[0].Dest != "/etc/readme" {
		t.Fatalf("single file mapping = %+v", one)
	}
}

func TestNeededStagesFollowImports(t *testing.T) {
	p := mustPlan(t, planYAML, planTree())
	front := NeededStages(p.Image("frontend").Final)
	has := map[string]bool{}
	for _, s := range front {
		if has[s] {
			t.Errorf("signature %s listed twice", s)
		}
		has[s] = true
	}
	for _, ip := range p.Images {
		if ip.Image.Name == "tool" {
			continue
		}
		for _, s := range ip.Stages {
			// frontend is built on backend and imports the assets artifact.
			if !has[s.Signature] {
				t.Errorf("frontend's needed stages lack %s", s)
			}
		}
	}
	if has[p.Image("tool").Final.Signature] {
		t.Error("frontend's needed stages include the unrelated tool image")
	}
}
