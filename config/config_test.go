package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/gitlab"
)

const sampleConfig = `project: {{ env "APP" }}
configVersion: 1
---
artifact: assets
from: node:20
git:
- add: /frontend
  to: /src
  includePaths: ["*.js", package.json]
  stageDependencies:
    install: package.json
    setup: ["**/*.js"]
shell:
  install: npm ci
  setup:
  - npm run build
---
image: backend
from: debian:12
git:
- to: /app
  excludePaths: [frontend]
  owner: app
shell:
  beforeInstall: [apt-get update, "apt-get install -y python3"]
  cacheVersion: "{{ .Env.CACHE }}"
import:
- artifact: assets
  add: /src/dist
  to: /app/static
  after: setup
docker:
  ENV:
    MODE: production
    EMPTY:
  WORKDIR: /app
  EXPOSE: "8000"
  CMD: [python3, -m, app]
  ENTRYPOINT: exec run
---
image: worker
fromImage: backend
---
image: web
dockerfile: web/Dockerfile
target: prod
args:
  VERSION: "1"
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("werf.yaml", []byte(sampleConfig), map[string]string{"APP": "shop", "CACHE": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project != "shop" || len(cfg.Images) != 4 {
		t.Fatalf("project %q, %d images", cfg.Project, len(cfg.Images))
	}
	assets, backend, worker, web := cfg.Images[0], cfg.Images[1], cfg.Images[2], cfg.Images[3]
	wantAssets := &Image{
		Name: "assets", Artifact: true, Line: 4, From: "node:20",
		Git: []GitMapping{{
			Line: 7, Add: "/frontend", To: "/src", IncludePaths: []string{"*.js", "package.json"},
			StageDependencies: StageDependencies{Install: []string{"package.json"}, Setup: []string{"**/*.js"}},
		}},
		Shell: Shell{Install: []string{"npm ci"}, Setup: []string{"npm run build"}},
	}
	if !reflect.DeepEqual(assets, wantAssets) {
		t.Errorf("assets:\n got %+v\nwant %+v", assets, wantAssets)
	}
	wantBackend := &Image{
		Name: "backend", Line: 18, From: "debian:12",
		Git:     []GitMapping{{Line: 21, Add: "/", To: "/app", ExcludePaths: []string{"frontend"}, Owner: "app"}},
		Shell:   Shell{BeforeInstall: []string{"apt-get update", "apt-get install -y python3"}, CacheVersion: "3"},
		Imports: []Import{{Line: 28, Artifact: "assets", Add: "/src/dist", To: "/app/static", After: "setup"}},
		Docker: Docker{
			Env:     []KeyValue{{"MODE", "production"}, {"EMPTY", ""}},
			Workdir: "/app", Expose: []string{"8000"},
			Cmd: []string{"python3", "-m", "app"}, Entrypoint: []string{"/bin/sh", "-c", "exec run"},
		},
	}
	if !reflect.DeepEqual(backend, wantBackend) {
		t.Errorf("backend:\n got %+v\nwant %+v", backend, wantBackend)
	}
	if worker.FromImage != "backend" || worker.Line != 41 {
		t.Errorf("worker %+v", worker)
	}
	wantWeb := &Dockerfile{Path: "web/Dockerfile", Context: "", Target: "prod", Args: []KeyValue{{"VERSION", "1"}}}
	if !reflect.DeepEqual(web.Dockerfile, wantWeb) {
		t.Errorf("web dockerfile %+v", web.Dockerfile)
	}
}

func TestParseConfigErrors(t *testing.T) {
	const head = "project: p\nconfigVersion: 1\n---\n"
	tests := []struct {
		name string
		src  string
		want string // file:line: and the message's gist
	}{
		{"yaml syntax", head + "image: a\nfrom: [x\n", "werf.yaml:5: YAML: did not find expected"},
		{"yaml mapping", head + "image: a\nfrom: x: y\n", "werf.yaml:5: YAML: mapping values are not allowed"},
		{"template syntax", head + "image: {{ .Env.X \n", "werf.yaml:4: template:"},
		{"template required", head + `image: a` + "\n" + `from: {{ required "set BASE" (env "BASE") }}` + "\n", "werf.yaml:5: template: "},
		{"no project", "configVersion: 1\n---\nimage: a\nfrom: x\n", "werf.yaml:1: project: is missing"},
		{"config version", "project: p\nconfigVersion: 2\n---\nimage: a\nfrom: x\n", "werf.yaml:2: configVersion: must be 1"},
		{"no images", "project: p\nconfigVersion: 1\n", "werf.yaml: no image: or artifact: document"},
		{"image first", "image: a\nfrom: x\n", "werf.yaml:1: the first document must be the project document"},
		{"deploy empty namespace", "project: p\nconfigVersion: 1\ndeploy:\n  namespace: ''\n---\nimage: a\nfrom: x\n", `werf.yaml:4: deploy: namespace: is empty`},
		{"deploy unknown key", "project: p\nconfigVersion: 1\ndeploy:\n  helmChart: x\n---\nimage: a\nfrom: x\n", `werf.yaml:4: deploy: unknown key "helmChart"`},
		{"config version as a string", "project: p\nconfigVersion: '1'\n---\nimage: a\nfrom: x\n", "werf.yaml:2: configVersion: must be 1"},
		{"ansible", head + "image: a\nfrom: x\nansible:\n  install: []\n", `werf.yaml:6: image "a": "ansible" is not supported: stagehand runs shell stages only`},
		{"mount from", head + "image: a\nfrom: x\nmount:\n- from: home_dir\n  to: /tmp\n", `werf.yaml:7: image "a" mount: from: is build_dir or tmp_dir, not "home_dir"`},
		{"mount both", head + "image: a\nfrom: x\nmount:\n- from: tmp_dir\n  fromPath: /x\n  to: /tmp\n", `werf.yaml:7: image "a" mount: give one of from: or fromPath:`},
		{"mount twice", head + "image: a\nfrom: x\nmount:\n- from: tmp_dir\n  to: /tmp\n- from: build_dir\n  to: /tmp/\n", `werf.yaml:9: image "a" mount: /tmp is mounted twice`},
		{"unknown key", head + "image: a\nfrom: x\nshel:\n  install: [x]\n", `werf.yaml:6: image "a": unknown key "shel"`},
		{"unknown shell key", head + "image: a\nfrom: x\nshell:\n  instal: [x]\n", `werf.yaml:7: image "a" shell: unknown key "instal"`},
		{"two bases", head + "image: a\nfrom: x\nfromImage: b\n", `werf.yaml:4: image "a": give exactly one of from:`},
		{"no base", head + "image: a\nshell:\n  install: [x]\n", `werf.yaml:4: image "a": give exactly one of from:`},
		{"both kinds", head + "image: a\nartifact: b\nfrom: x\n", "werf.yaml:5: a document is either an image: or an artifact:"},
		{"duplicate name", head + "image: a\nfrom: x\n---\nimage: a\nfrom: y\n", `werf.yaml:7: name "a" is already used at line 4`},
		{"duplicate key", head + "image: a\nfrom: x\nfrom: y\n", `werf.yaml:6: image "a": key "from" is given twice`},
		{"git relative to", head + "image: a\nfrom: x\ngit:\n- add: /src\n  to: app\n", `werf.yaml:7: image "a" git: to: must be an absolute path`},
		{"git branch of the project", head + "image: a\nfrom: x\ngit:\n- branch: main\n  to: /x\n", `werf.yaml:7: image "a" git: branch:, tag: and commit: belong to a remote repository`},
		{"git remote two refs", head + "image: a\nfrom: x\ngit:\n- url: https://example.com/x.git\n  branch: main\n  tag: v1\n  to: /x\n", `werf.yaml:7: image "a" git: give one of branch:, tag: or commit:`},
		{"stage dependency on beforeInstall", head + "image: a\nfrom: x\ngit:\n- to: /app\n  stageDependencies:\n    beforeInstall: ['*']\n", "werf.yaml:9: image \"a\" git: beforeInstall cannot depend on files"},
		{"docker directive", head + "image: a\nfrom: x\ndocker:\n  STOPSIGNAL: x\n", `werf.yaml:7: image "a" docker: "STOPSIGNAL" is not supported`},
		{"import stage", head + "artifact: b\nfrom: x\n---\nimage: a\nfrom: x\nimport:\n- artifact: b\n  add: /x\n  after: install\n  stage: gitArchive\n", `werf.yaml:10: image "a" import: stage: is beforeInstall, install, beforeSetup or setup`},
		{"keepPolicies operator", "project: p\nconfigVersion: 1\ncleanup:\n  keepPolicies:\n  - references:\n      branch: /.*/\n      limit: {last: 2, operator: Xor}\n---\nimage: a\nfrom: x\n", `werf.yaml:7: keepPolicies references limit operator: is And or Or, not "Xor"`},
		{"keepPolicies regexp", "project: p\nconfigVersion: 1\ncleanup:\n  keepPolicies:\n  - references:\n      tag: /v[/\n---\nimage: a\nfrom: x\n", `werf.yaml:5: cleanup keepPolicies: /v[/ is not a regexp`},
		{"both fromArtifact spellings", head + "image: a\nfromArtifact: b\nfromImageArtifact: b\n", `werf.yaml:6: image "a": give one of fromArtifact: or fromImageArtifact:`},
		{"docker on artifact", head + "artifact: a\nfrom: x\ndocker:\n  CMD: x\n", `werf.yaml:6: artifact "a": docker: directives apply to images only`},
		{"import unknown artifact", head + "image: a\nfrom: x\nimport:\n- artifact: nope\n  add: /x\n  after: install\n", `werf.yaml:7: no artifact named "nope"`},
		{"import without stage", head + "artifact: b\nfrom: x\n---\nimage: a\nfrom: x\nimport:\n- artifact: b\n  add: /x\n", `werf.yaml:10: image "a" import: give exactly one of before: or after:`},
		{"bad includePaths glob", head + "image: a\nfrom: x\ngit:\n- add: /\n  to: /app\n  includePaths: ['src/[a-z']\n", `werf.yaml:7: image "a" git: "src/[a-z" is not a valid glob`},
		{"bad stageDependencies glob", head + "image: a\nfrom: x\ngit:\n- add: /\n  to: /app\n  stageDependencies:\n    install: ['[']\n", `werf.yaml:7: image "a" git: "[" is not a valid glob`},
		{"bad import glob", head + "artifact: b\nfrom: x\n---\nimage: a\nfrom: x\nimport:\n- artifact: b\n  add: /x\n  after: install\n  excludePaths: ['a[']\n", `werf.yaml:10: image "a" import: "a[" is not a valid glob`},
		{"import bad stage", head + "artifact: b\nfrom: x\n---\nimage: a\nfrom: x\nimport:\n- artifact: b\n  add: /x\n  before: beforeSetup\n", `before:/after: is install or setup, not "beforeSetup"`},
		{"cycle", head + "image: a\nfromImage: b\n---\nimage: b\nfromImage: a\n", "depends on itself"},
		{"self reference", head + "image: a\nfromImage: a\n", `werf.yaml:4: image "a" refers to itself`},
		{"dockerfile with shell", head + "image: a\ndockerfile: Dockerfile\nshell:\n  install: [x]\n", `werf.yaml:6: image "a": "shell" cannot be combined with dockerfile:`},
		{"dockerfile outside", head + "image: a\ndockerfile: ../Dockerfile\n", `werf.yaml:5: image "a": dockerfile: "../Dockerfile" leaves the project`},
		{"context without dockerfile", head + "image: a\nfrom: x\ncontext: web\n", `werf.yaml:6: image "a": context:, target:, args: and addHost: belong to Dockerfile images`},
		{"artifact dockerfile", head + "artifact: a\ndockerfile: Dockerfile\n", `werf.yaml:5: artifact "a": an artifact cannot be built from a Dockerfile`},
		{"image name list of lists", head + "image: [[a], b]\nfrom: x\n", "werf.yaml:4: image: each name of the list is a single value"},
		{"not a mapping", head + "- image: a\n", "werf.yaml:4: a document must be a mapping"},
		{"bad fromLatest", head + "image: a\nfrom: x\nfromLatest: sometimes\n", "werf.yaml:6: fromLatest: takes true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("werf.yaml", []byte(tt.src), map[string]string{})
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *ConfigError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got  %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestLoadConfigPrefersStagehandYAML(t *testing.T) {
	dir := t.TempDir()
	write := func(name, project string) {
		src := "project: " + project + "\nconfigVersion: 1\n---\nimage: ~\nfrom: x\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadConfig(dir, nil); !errors.Is(err, ErrNoConfig) {
		t.Errorf("empty dir: %v", err)
	}
	write("werf.yaml", "from-werf")
	cfg, err := LoadConfig(dir, nil)
	if err != nil || cfg.Project != "from-werf" || cfg.File != "werf.yaml" || cfg.Images[0].Name != "" {
		t.Fatalf("werf.yaml: %+v %v", cfg, err)
	}
	write("stagehand.yaml", "from-stagehand")
	cfg, err = LoadConfig(dir, nil)
	if err != nil || cfg.Project != "from-stagehand" || cfg.File != "stagehand.yaml" {
		t.Fatalf("stagehand.yaml: %+v %v", cfg, err)
	}
}

// FuzzParseConfig: any input gives a config or a *ConfigError, never a
// panic.
func FuzzParseConfig(f *testing.F) {
	f.Add(sampleConfig)
	f.Add("project: p\nconfigVersion: 1\n---\nimage: a\nfrom: x\n")
	f.Add("{{")
	f.Add("project: p\nconfigVersion: 1\n---\nimage: a\nimport:\n- {}\n")
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := ParseConfig("werf.yaml", []byte(src), map[string]string{"APP": "x"})
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			return
		}
		if cfg.Project == "" || len(cfg.Images) == 0 {
			t.Fatalf("config without project or images: %+v", cfg)
		}
	})
}

// FuzzRenderTemplate: any template and variable give the rendered text
// or a *ConfigError, never a panic; a variable's value is inserted as it
// is, never evaluated as a template itself.
func FuzzRenderTemplate(f *testing.F) {
	f.Add(`from: {{ env "BASE" }}`, "BASE", "alpine:3")
	f.Add(`{{ .Env.X | default "d" }}`, "X", "")
	f.Add(`{{ required "set X" (env "X") }}`, "X", "")
	f.Add(`{{ range $i, $e := .Env }}{{ $i }}={{ $e }}{{ end }}`, "K", "{{ panic }}")
	f.Add(`{{ template "x" }}`, "A", "b")
	f.Add(`{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`, "A", "b")
	f.Add(`{{ range 20000000 }}0123456789{{ end }}`, "A", "b")
	f.Add("{{ if }}\n\n{{", "", "")
	f.Add(`{{ repeat 100000000 "x" }}`, "A", "b")
	f.Add(`{{ include "x" . }}{{ define "x" }}{{ include "x" . }}{{ end }}`, "A", "b")
	f.Add(`{{ tpl "{{ tpl .T . }}" (dict "T" "{{ tpl .T . }}") }}`, "A", "b")
	f.Add(`{{ indent 99999999 "x" }}{{ until 99999999 }}`, "A", "b")
	f.Add(`{{ .Files.Get "../../etc/passwd" }}`, "A", "b")
	f.Add(`{{ $_ := set . "k" "v" }}{{ .k }} {{ sha256sum "x" }} {{ list 1 2 | toJson }}`, "A", "b")
	f.Fuzz(func(t *testing.T, src, key, value string) {
		env := map[string]string{key: value}
		r, err := Render(Source{File: "werf.yaml", Text: []byte(src)}, env)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.File != "werf.yaml" || ce.Msg == "" {
				t.Fatalf("error %#v is not a *ConfigError naming werf.yaml", err)
			}
			return
		}
		if len(r.Text) > maxRenderedConfig {
			t.Fatalf("rendered %d bytes", len(r.Text))
		}
		got, err := Render(Source{File: "werf.yaml", Text: []byte(`{{ env ` + strconv.Quote(key) + ` }}`)}, env)
		if err != nil || string(got.Text) != value {
			t.Fatalf("env %q rendered %+v, %v; want the value as it is", key, got, err)
		}
	})
}

func TestParseConfigCleanupPolicies(t *testing.T) {
	src := "project: p\nconfigVersion: 1\ncleanup:\n  gitCommit: {limit: 20, expiryDays: -1}\n  stagesSignature: {limit: 5}\n---\nimage: ~\nfrom: base\n"
	cfg, err := ParseConfig("stagehand.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Overrides apply over the job's policies; keys not given keep them.
	base := gitlab.Policies{GitTag: gitlab.Policy{Limit: 10, ExpiryDays: 30}, GitCommit: gitlab.Policy{Limit: 50, ExpiryDays: 30}, StagesSignature: gitlab.Policy{Limit: 7, ExpiryDays: 7}}
	want := gitlab.Policies{GitTag: gitlab.Policy{Limit: 10, ExpiryDays: 30}, GitCommit: gitlab.Policy{Limit: 20, ExpiryDays: -1}, StagesSignature: gitlab.Policy{Limit: 5, ExpiryDays: 7}}
	if got := cfg.CleanupPolicies(base); got != want {
		t.Fatalf("cleanup policies = %+v, want %+v", got, want)
	}
	// A config without cleanup: keeps the job's.
	plain, err := ParseConfig("stagehand.yaml", []byte("project: p\nconfigVersion: 1\n---\nimage: ~\nfrom: base\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.CleanupPolicies(base); got != base {
		t.Errorf("without cleanup: = %+v, want %+v", got, base)
	}
	for _, bad := range []string{
		"cleanup:\n  gitCommit: {limit: many}\n",
		"cleanup:\n  gitCommit: {limit: -5}\n",
		"cleanup:\n  branches: {limit: 1}\n",
		"cleanup: 3\n",
	} {
		_, err := ParseConfig("stagehand.yaml", []byte("project: p\nconfigVersion: 1\n"+bad+"---\nimage: ~\nfrom: base\n"), nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Line == 0 {
			t.Errorf("%q: err = %v, want a ConfigError with its line", bad, err)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		glob, path string
		want       bool
	}{
		{"src", "src/main.go", true},
		{"src", "srcs/main.go", false},
		{"*.py", "main.py", true},
		{"*.py", "pkg/main.py", false},
		{"**/*.py", "pkg/sub/main.py", true},
		{"**/*.py", "main.py", true},
		{"migrations/**", "migrations/0001.sql", true},
		{"migrations/**", "other/0001.sql", false},
		{"a/*/c", "a/b/c/d", true},
		{"requirements.txt", "requirements.txt", true},
		{"/requirements.txt", "requirements.txt", true},
		{"[ab].txt", "c.txt", false},
		{"", "anything", true},
	}
	for _, c := range cases {
		if got := globMatch(c.glob, c.path); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.glob, c.path, got, c.want)
		}
	}
}
