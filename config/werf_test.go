package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// project writes files into a fresh directory.
func project(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestWerfTemplates renders what werf 1.1's werf.yaml templates had:
// sprig, include and tpl, partials of .werf, .Files, env from the job.
func TestWerfTemplates(t *testing.T) {
	dir := project(t, map[string]string{
		"werf.yaml": `{{ $_ := set . "Base" "alpine:3.12" }}
project: {{ "My App" | lower | replace " " "-" | trunc 20 }}
configVersion: 1
---
{{ include "images/backend.tmpl" . }}
---
image: frontend
from: {{ .Base }}
shell:
  install:
{{ .Files.Get "scripts/install.sh" | trimSuffix "\n" | splitList "\n" | toYaml | indent 2 }}
docker:
  ENV:
    CHECKSUM: {{ .Files.Get "scripts/install.sh" | sha256sum | trunc 12 }}
    RELEASE: {{ env "CI_COMMIT_REF_NAME" | default "none" }}
    FILES: "{{ range $p, $_ := .Files.Glob "scripts/**/*.sh" }}{{ base $p }} {{ end }}"
    MISSING: "{{ .Files.Get "nope.txt" }}"
    VIA_TPL: {{ tpl "{{ .Base }}-x" . }}
`,
		".werf/images/backend.tmpl": `image: backend
from: {{ .Base }}
{{ include "shell" (dict "cmds" (list "echo one" "echo two")) }}`,
		".werf/common/shell.tmpl": `{{ define "shell" }}shell:
  setup:
{{- range .cmds }}
  - {{ . }}
{{- end }}{{ end }}`,
		".werf/README.md":       "not a template",
		"scripts/install.sh":    "apk add curl\napk add git\n",
		"scripts/sub/extra.sh":  "true\n",
		"scripts/not-shell.txt": "x\n",
	})
	cfg, err := LoadConfig(dir, map[string]string{"CI_COMMIT_REF_NAME": "main"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project != "my-app" || cfg.File != "werf.yaml" {
		t.Errorf("project %q file %q", cfg.Project, cfg.File)
	}
	backend, frontend := cfg.Find("backend", false), cfg.Find("frontend", false)
	if backend == nil || backend.From != "alpine:3.12" || !reflect.DeepEqual(backend.Shell.Setup, []string{"echo one", "echo two"}) {
		t.Errorf("backend %+v", backend)
	}
	if frontend == nil || !reflect.DeepEqual(frontend.Shell.Install, []string{"apk add curl", "apk add git"}) {
		t.Fatalf("frontend %+v", frontend)
	}
	env := map[string]string{}
	for _, kv := range frontend.Docker.Env {
		env[kv.Key] = kv.Value
	}
	if len(env["CHECKSUM"]) != 12 || env["RELEASE"] != "main" || env["FILES"] != "install.sh extra.sh " || env["MISSING"] != "" || env["VIA_TPL"] != "alpine:3.12-x" {
		t.Errorf("env %v", env)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "nope.txt") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
}

func TestWerfYmlIsRead(t *testing.T) {
	dir := project(t, map[string]string{"werf.yml": "project: yml\nconfigVersion: 1\n---\nimage: a\nfrom: x\n"})
	cfg, err := LoadConfig(dir, nil)
	if err != nil || cfg.File != "werf.yml" || cfg.Project != "yml" {
		t.Fatalf("werf.yml: %+v %v", cfg, err)
	}
	// werf 1.1 read werf.yml before werf.yaml.
	dir = project(t, map[string]string{
		"werf.yml":  "project: yml\nconfigVersion: 1\n---\nimage: a\nfrom: x\n",
		"werf.yaml": "project: yaml\nconfigVersion: 1\n---\nimage: a\nfrom: x\n",
	})
	if cfg, err := LoadConfig(dir, nil); err != nil || cfg.Project != "yml" {
		t.Errorf("with both: %+v %v", cfg, err)
	}
}

// TestWerfSpellings: werf 1.1 configs parse as they are.
func TestWerfSpellings(t *testing.T) {
	src := `project: shop
configVersion: 1.0
deploy:
  namespace: "shop-[[ env ]]"
  helmReleaseSlug: false
cleanup:
  keepPolicies:
  - references:
      branch: /.*/
      limit: {last: 10, in: 168h, operator: And}
    imagesPerReference: {last: 2}
  - references: {tag: /.*/}
---
artifact: assets
from: node:14
shell: &sh
  install: npm ci
  setup:
  - npm run build
---
image: [backend, worker]
fromLatest: true
herebyIAdmitThatFromLatestMightBreakReproducibility: true
from: python:3.8
asLayers: false
mount:
- from: build_dir
  to: /root/.cache/pip
- from: tmp_dir
  to: /tmp/build
- fromPath: /var/cache/apt
  to: /var/cache/apt
git:
- add: /
  to: /app
  owner: app
  group: www-data
shell:
  <<: *sh
  install: pip install -r requirements.txt
import:
- artifact: assets
  add: /app/dist
  to: /app/static
  after: setup
  stage: install
docker:
  HEALTHCHECK: --interval=5s CMD curl -f http://localhost/
---
image: tools
fromImageArtifact: assets
---
image: web
dockerfile: ./docker/Dockerfile
context: ./web
addHost: [db:10.0.0.1]
network: host
`
	cfg, err := ParseConfig("werf.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Deploy; d == nil || d.Namespace != "shop-[[ env ]]" || d.Release != "[[ project ]]-[[ env ]]" || !d.NamespaceSlug || d.ReleaseSlug {
		t.Errorf("deploy %+v", d)
	}
	if len(cfg.KeepPolicies) != 2 || cfg.KeepPolicies[0].Branch != "/.*/" || *cfg.KeepPolicies[0].Limit.Last != 10 || cfg.KeepPolicies[0].ImagesPerReference == nil || cfg.KeepPolicies[1].Tag != "/.*/" {
		t.Errorf("keepPolicies %+v", cfg.KeepPolicies)
	}
	backend, worker := cfg.Find("backend", false), cfg.Find("worker", false)
	if backend == nil || worker == nil || worker.From != "python:3.8" || !backend.FromLatest {
		t.Fatalf("image list: %+v %+v", backend, worker)
	}
	// The merge key brought setup:; install: given beside it wins.
	if !reflect.DeepEqual(backend.Shell.Install, []string{"pip install -r requirements.txt"}) || !reflect.DeepEqual(backend.Shell.Setup, []string{"npm run build"}) {
		t.Errorf("shell %+v", backend.Shell)
	}
	wantMounts := []Mount{
		{Line: 27, Kind: MountBuildDir, To: "/root/.cache/pip"},
		{Line: 29, Kind: MountTmpDir, To: "/tmp/build"},
		{Line: 31, Kind: MountHostPath, FromPath: "/var/cache/apt", To: "/var/cache/apt"},
	}
	if !reflect.DeepEqual(backend.Mounts, wantMounts) {
		t.Errorf("mounts %+v", backend.Mounts)
	}
	if backend.Git[0].Owner != "app" || backend.Git[0].Group != "www-data" || backend.Imports[0].Stage != "install" {
		t.Errorf("git %+v import %+v", backend.Git, backend.Imports)
	}
	if backend.Docker.Healthcheck != "--interval=5s CMD curl -f http://localhost/" {
		t.Errorf("healthcheck %q", backend.Docker.Healthcheck)
	}
	if tools := cfg.Find("tools", false); tools == nil || tools.FromArtifact != "assets" {
		t.Errorf("fromImageArtifact: %+v", tools)
	}
	web := cfg.Find("web", false).Dockerfile
	if web.Path != "docker/Dockerfile" || web.Context != "web" || !reflect.DeepEqual(web.AddHost, []string{"db:10.0.0.1"}) {
		t.Errorf("web %+v", web)
	}
	if len(cfg.Notes) != 2 {
		t.Errorf("notes %q (asLayers, network)", cfg.Notes)
	}
}

// TestDockerfileContexts: an omitted context, ".", "./" and "./sub" are
// the project's root and its sub directory.
func TestDockerfileContexts(t *testing.T) {
	for ctx, want := range map[string]string{"": "", "context: .\n": "", "context: ./\n": "", "context: ./sub\n": "sub", "context: sub/\n": "sub"} {
		cfg, err := ParseConfig("werf.yaml", []byte("project: p\nconfigVersion: 1\n---\nimage: app\ndockerfile: Dockerfile\n"+ctx), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Images[0].Dockerfile.Context; got != want {
			t.Errorf("%q: context %q, want %q", ctx, got, want)
		}
	}
}

// TestErrorsNameTheSourceLine: in a templated file an error names the
// line the user wrote (the config's or a partial's), not the rendered one.
func TestErrorsNameTheSourceLine(t *testing.T) {
	dir := project(t, map[string]string{
		"werf.yaml": `{{- $images := list "a" "b" }}
project: p
configVersion: 1
{{- range $images }}
---
image: {{ . }}
from: alpine
{{- end }}
---
{{ include "ansible.tmpl" . }}
`,
		".werf/ansible.tmpl": `{{/* a partial */}}
image: c
from: alpine
ansible:
  install:
  - apt: name=curl
`,
	})
	_, err := LoadConfig(dir, nil)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != ".werf/ansible.tmpl" || ce.Line != 4 || !strings.Contains(ce.Msg, `"ansible" is not supported`) || !strings.Contains(ce.Msg, "From ansible to shell") {
		t.Fatalf("err = %v, want .werf/ansible.tmpl:4 and the guide", err)
	}
	dir = project(t, map[string]string{"werf.yaml": `{{ $x := "y" }}project: p
configVersion: 1
---
image: a
from: alpine
ansible:
  setup: []
`})
	_, err = LoadConfig(dir, nil)
	if !errors.As(err, &ce) || ce.File != "werf.yaml" || ce.Line != 6 {
		t.Fatalf("err = %v, want werf.yaml:6", err)
	}
}

func TestFilesStayInTheProject(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s3cret"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := project(t, map[string]string{"werf.yaml": "project: p\nconfigVersion: 1\n---\nimage: a\nfrom: {{ .Files.Get \"link/secret\" }}\n"})
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	// An absolute path is the project's (as werf joined it to the
	// directory); ".." and links may not leave it.
	for _, src := range []string{`{{ .Files.Get "../x" }}`, `{{ .Files.Get "link/secret" }}`} {
		_, err := Parse(Source{File: "werf.yaml", Text: []byte("project: p\nconfigVersion: 1\n---\nimage: a\nfrom: " + src + "\n"), Dir: dir, Root: dir}, nil)
		if err == nil || !strings.Contains(err.Error(), "leaves the project") {
			t.Errorf("%s: %v", src, err)
		}
	}
	// Glob does not follow a link out of the project either.
	r, err := Render(Source{File: "werf.yaml", Text: []byte(`{{ .Files.Glob "**" | toJson }}`), Dir: dir, Root: dir}, nil)
	if err != nil || strings.Contains(string(r.Text), "s3cret") {
		t.Errorf("Glob: %v %q", err, r.Text)
	}
}

// TestWerf12KeysAreTaken: configs written for werf 1.2 (which werf 1.1
// refused) parse; what stagehand applies is applied, the rest is named
// in a note with its line.
func TestWerf12KeysAreTaken(t *testing.T) {
	src := `project: app
configVersion: 1
build:
  platform: [linux/amd64, linux/arm64]
gitWorktree:
  allowUnshallow: true
deploy:
  helmChartDir: ./infra/helm
cleanup:
  disableKubernetesBasedPolicy: true
---
image: builder
dockerfile: builder.Dockerfile
staged: true
final: false
platform: linux/amd64
---
image: web
dockerfile: web.Dockerfile
contextAddFiles: [dist]
dependencies:
- image: builder
  imports:
  - type: ImageName
    targetBuildArg: BUILDER_IMAGE
  - type: ImageDigest
    targetBuildArg: BUILDER_DIGEST
---
image: worker
from: alpine
disableGitAfterPatch: true
dependencies:
- image: web
  imports:
  - type: ImageTag
    targetEnv: WEB_TAG
shell:
  install: [echo $WEB_TAG]
`
	cfg, err := ParseConfig("werf.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Deploy == nil || cfg.Deploy.ChartDir != "./infra/helm" {
		t.Errorf("helmChartDir: %+v", cfg.Deploy)
	}
	builder, web, worker := cfg.Find("builder", false), cfg.Find("web", false), cfg.Find("worker", false)
	if !builder.NotFinal || web.NotFinal {
		t.Errorf("final: builder %v web %v", builder.NotFinal, web.NotFinal)
	}
	wantDeps := []Dependency{{Line: 22, Image: "builder", Imports: []DependencyImport{{Type: "ImageName", TargetBuildArg: "BUILDER_IMAGE"}, {Type: "ImageDigest", TargetBuildArg: "BUILDER_DIGEST"}}}}
	if !reflect.DeepEqual(web.Dependencies, wantDeps) {
		t.Errorf("dependencies: %+v", web.Dependencies)
	}
	if !worker.DisableGitAfterPatch || worker.Dependencies[0].Imports[0].TargetEnv != "WEB_TAG" {
		t.Errorf("worker: %+v", worker)
	}
	notes := strings.Join(cfg.Notes, "\n")
	for _, want := range []string{"line 3: build:", "line 5: gitWorktree:", "line 10: cleanup disableKubernetesBasedPolicy:", "line 14: image \"builder\": staged", "line 16: image \"builder\": platform:", "line 20: image \"web\": contextAddFiles"} {
		if !strings.Contains(notes, want) {
			t.Errorf("no note %q in:\n%s", want, notes)
		}
	}

	for _, c := range []struct{ name, src, want string }{
		{"unknown dependency", "image: a\nfrom: x\ndependencies:\n- image: nope\n  imports:\n  - {type: ImageName, targetEnv: X}\n", "no image named \"nope\""},
		{"bad type", "image: a\nfrom: x\n---\nimage: b\nfrom: x\ndependencies:\n- image: a\n  imports:\n  - {type: ImageSize, targetEnv: X}\n", "type: is one of ImageName"},
		{"build arg of a stapel image", "image: a\nfrom: x\n---\nimage: b\nfrom: x\ndependencies:\n- image: a\n  imports:\n  - {type: ImageName, targetBuildArg: X}\n", "a stapel image targetEnv:"},
		{"cycle", "image: a\nfrom: x\ndependencies:\n- image: b\n  imports:\n  - {type: ImageName, targetEnv: X}\n---\nimage: b\nfromImage: a\n", "depends on itself"},
	} {
		_, err := ParseConfig("werf.yaml", []byte("project: p\nconfigVersion: 1\n---\n"+c.src), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
