package deploy

import (
	"reflect"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// renderWerf renders one template of a chart given werf's API, with the
// values werf 1.1 would give for images built under strategy and ref.
func renderWerf(t *testing.T, tpl string, images []request.Image, in WerfInput, files map[string]string) (string, error) {
	t.Helper()
	ch := &chart.Chart{
		Metadata:  &chart.Metadata{Name: "app", Version: "0.1.0", APIVersion: "v2"},
		Templates: []*chart.File{{Name: "templates/t.yaml", Data: []byte(tpl)}},
	}
	withWerfAPI(ch, files)
	vals, err := Values(ValuesInput{Env: "production", Namespace: "shop-production", Images: images, Werf: &in})
	if err != nil {
		t.Fatal(err)
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "shop-production", Namespace: "shop-production"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, rv)
	return out["app/templates/t.yaml"], err
}

var (
	named = []request.Image{
		{Name: "backend", Repository: "reg/shop/backend", Tag: "main", Digest: "sha256:d1", ID: "sha256:i1"},
		{Name: "frontend", Repository: "reg/shop/frontend", Tag: "main", Digest: "sha256:d2", ID: "sha256:i2"},
	}
	nameless = []request.Image{{Repository: "reg/shop", Tag: "main", Digest: "sha256:d0", ID: "sha256:i0"}}
	onBranch = WerfInput{Project: "shop", Repo: "reg/shop", TagStrategy: gitlab.TagOrBranch, Ref: request.Ref{Branch: "main"}, RefSlug: "main"}
	onTag    = WerfInput{Project: "shop", Repo: "reg/shop", TagStrategy: gitlab.TagOrBranch, Ref: request.Ref{Tag: "v1.0"}, RefSlug: "v1.0"}
	bySig    = WerfInput{Project: "shop", Repo: "reg/shop", TagStrategy: gitlab.TagStagesSignature, Ref: request.Ref{Branch: "main"}, RefSlug: "main"}
)

// TestWerfContainerImage: werf 1.1's three call forms and their output
// (werf's helpers in pkg/deploy/helm/templates.go of werf 1.1): the image
// line, and imagePullPolicy: Always for a branch's image (else a newline);
// DOCKER_IMAGE_ID for a branch's image only.
func TestWerfContainerImage(t *testing.T) {
	for _, c := range []struct {
		name   string
		tpl    string
		images []request.Image
		in     WerfInput
		want   string
	}{
		{"named, branch", `{{ tuple "backend" . | werf_container_image }}`, named, onBranch, "image: reg/shop/backend:main\nimagePullPolicy: Always"},
		{"named, tag", `{{ tuple "backend" . | werf_container_image }}`, named, onTag, "image: reg/shop/backend:main\n"},
		{"named, signature", `{{ tuple "frontend" . | werf_container_image }}`, named, bySig, "image: reg/shop/frontend:main\n"},
		{"nameless, root", `{{ werf_container_image . }}`, nameless, onBranch, "image: reg/shop:main\nimagePullPolicy: Always"},
		{"nameless, tuple", `{{ tuple . | werf_container_image }}`, nameless, onTag, "image: reg/shop:main\n"},
		{"indented", "      containers:\n      - name: app\n{{ tuple \"backend\" . | werf_container_image | indent 8 }}\n", named, onBranch,
			"      containers:\n      - name: app\n        image: reg/shop/backend:main\n        imagePullPolicy: Always\n"},
		{"env, branch", `{{ tuple "backend" . | werf_container_env }}`, named, onBranch, "- name: DOCKER_IMAGE_ID\n  value: sha256:i1"},
		{"env, nameless branch", `{{ werf_container_env . }}`, nameless, onBranch, "- name: DOCKER_IMAGE_ID\n  value: sha256:i0"},
		{"env, tag", `{{ tuple "backend" . | werf_container_env }}`, named, onTag, ""},
		{"include form", `{{ include "werf_container_image" (tuple "backend" .) }}`, named, onTag, "image: reg/shop/backend:main\n"},
		{"image, image_id", `{{ tuple "frontend" . | image }} {{ tuple "frontend" . | image_id }}`, named, onBranch, "reg/shop/frontend:main sha256:i2"},
		{"values", `{{ .Values.global.werf.name }} {{ .Values.global.werf.repo }} {{ .Values.global.werf.docker_tag }} {{ .Values.global.werf.ci.is_branch }} {{ .Values.global.werf.ci.branch }} {{ .Values.global.werf.ci.tag }} {{ .Values.global.werf.image.backend.docker_image_digest }}`, named, onBranch,
			`shop reg/shop main true main "-" sha256:d1`},
		{"values, tag", `{{ .Values.global.werf.ci.is_tag }} {{ .Values.global.werf.ci.ref }} {{ .Values.global.werf.is_nameless_image }} {{ .Values.global.werf.image.docker_image }}`, nameless, onTag, "true v1.0 true reg/shop:main"},
		{"stagehand's values stay", `{{ .Values.global.stagehand.image.backend.reference }} {{ .Values.global.env }}`, named, bySig, "reg/shop/backend:main@sha256:d1 production"},
	} {
		got, err := renderWerf(t, c.tpl, c.images, c.in, nil)
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v\nwant %q", c.name, got, err, c.want)
		}
	}
}

// TestWerfContainerImageErrors: werf's messages when a form does not fit.
func TestWerfContainerImageErrors(t *testing.T) {
	for _, c := range []struct {
		tpl    string
		images []request.Image
		want   string
	}{
		{`{{ werf_container_image . }}`, named, "No image specified for template"},
		{`{{ tuple "backend" . | werf_container_image }}`, nameless, "No image should be specified for template, got 'backend'"},
		{`{{ tuple "nope" . | werf_container_env }}`, named, ""},
		{`{{ tuple "nope" . | werf_container_image }}`, named, "Unknown image 'nope' specified for template"},
	} {
		_, err := renderWerf(t, c.tpl, c.images, onBranch, nil)
		if c.want == "" {
			c.want = "Unknown image 'nope'"
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.tpl, err, c.want)
		}
	}
}

// TestWerfSecretFile: werf's include and function forms over the
// decrypted files; a missing one names those present.
func TestWerfSecretFile(t *testing.T) {
	files := map[string]string{"saml/tls.key": "KEY\n\"quoted\" \x00 line", "db.txt": "pw"}
	for _, c := range []struct{ tpl, want string }{
		{`{{ tuple "saml/tls.key" . | include "werf_secret_file" }}`, files["saml/tls.key"]},
		{`{{ werf_secret_file "db.txt" | b64enc }}`, "cHc="},
		{`{{ include "werf_secret_file" "/db.txt" }}`, "pw"},
	} {
		got, err := renderWerf(t, c.tpl, named, onTag, files)
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.tpl, got, err, c.want)
		}
	}
	_, err := renderWerf(t, `{{ werf_secret_file "nope" }}`, named, onTag, files)
	if err == nil || !strings.Contains(err.Error(), "secret file 'nope' not found in .helm/secret/, use one of 'db.txt', 'saml/tls.key'") {
		t.Errorf("missing secret file: %v", err)
	}
}

// TestChartsWithoutWerfRenderAsBefore: a chart defining its own "image"
// keeps it; one defining werf's helpers (werf's Helm 3 mode) keeps them.
func TestChartsWithoutWerfRenderAsBefore(t *testing.T) {
	got, err := renderWerf(t, `{{- define "image" -}}mine{{- end -}}{{ include "image" . }} {{ .Values.global.namespace }}`, named, onTag, nil)
	if err != nil || got != "mine shop-production" {
		t.Errorf("own image template: %q %v", got, err)
	}
	own := `{{- define "werf_container_image" -}}own{{- end -}}{{ tuple "backend" . | werf_container_image }}`
	got, err = renderWerf(t, own, named, onTag, nil)
	if err != nil || got != "own" {
		t.Errorf("own werf helpers: %q %v", got, err)
	}
}

func TestWerfTracking(t *testing.T) {
	for _, c := range []struct {
		ann             map[string]string
		track, optional bool
		note            string
	}{
		{map[string]string{}, true, false, ""},
		{map[string]string{"werf.io/fail-mode": "IgnoreAndContinueDeployProcess"}, true, true, ""},
		{map[string]string{"werf.io/track-termination-mode": "NonBlocking"}, true, true, ""},
		{map[string]string{"werf.io/fail-mode": "HopeUntilEndOfDeployProcess"}, true, false, "HopeUntilEndOfDeployProcess"},
		{map[string]string{"werf.io/fail-mode": "sometimes"}, false, false, "invalid value"},
		{map[string]string{"werf.io/failures-allowed-per-replica": "3"}, true, false, "does not count failures"},
		{map[string]string{"werf.io/failures-allowed-per-replica": "-1"}, false, false, "positive or zero"},
		{map[string]string{"werf.io/skip-logs": "true"}, true, false, "honoured"},
		{map[string]string{"werf.io/skip-logs": "maybe"}, false, false, "true or false"},
		{map[string]string{"werf.io/show-logs-only-for-containers": "app, ,x"}, false, false, "comma-separated"},
		{map[string]string{"werf.io/log-regex-for-app": "("}, false, false, "regular expression"},
		{map[string]string{"werf.io/log-regex-for-app": "^ERR"}, true, false, "honoured"},
		{map[string]string{"werf.io/set-replicas-only-on-creation": "true"}, true, false, "not applied"},
		{map[string]string{"werf.io/whatever": "x"}, true, false, "unknown werf annotation"},
		{map[string]string{"example.com/fail-mode": "x"}, true, false, ""},
	} {
		track, optional, notes := werfTracking(c.ann)
		var all []string
		for k, n := range notes {
			all = append(all, k+": "+n)
		}
		joined := strings.Join(all, "\n")
		if track != c.track || optional != c.optional || (c.note == "") != (joined == "") || !strings.Contains(joined, c.note) {
			t.Errorf("%v: track %v optional %v notes %q; want %v %v %q", c.ann, track, optional, joined, c.track, c.optional, c.note)
		}
	}
	manifest := `---
kind: Deployment
metadata: {name: web, annotations: {werf.io/skip-logs: "true"}}
---
kind: Deployment
metadata: {name: worker, annotations: {werf.io/skip-logs: "true", werf.io/fail-mode: IgnoreAndContinueDeployProcess}}
`
	ws, notes, err := Workloads(manifest)
	want := []Workload{{Kind: "Deployment", Name: "web"}, {Kind: "Deployment", Name: "worker", Optional: true}}
	if err != nil || !reflect.DeepEqual(withoutLogs(ws), want) || len(notes) != 1 || !strings.HasPrefix(notes[0], "werf.io/skip-logs (deployment/web, deployment/worker): ") {
		t.Errorf("Workloads: %v %q %v", ws, notes, err)
	}
}

func withoutLogs(ws []Workload) []Workload {
	out := append([]Workload{}, ws...)
	for i := range out {
		out[i].logs = nil
	}
	return out
}

// TestLogFilter: werf's log annotations decide which containers' logs a
// failed deploy shows, and through which expression.
func TestLogFilter(t *testing.T) {
	for _, c := range []struct {
		ann       map[string]string
		container string
		show      bool
		re        string
	}{
		{nil, "app", true, ""},
		{map[string]string{"werf.io/skip-logs": "true"}, "app", false, ""},
		{map[string]string{"werf.io/skip-logs": "false"}, "app", true, ""},
		{map[string]string{"werf.io/skip-logs-for-containers": "sidecar, proxy"}, "proxy", false, ""},
		{map[string]string{"werf.io/skip-logs-for-containers": "sidecar, proxy"}, "app", true, ""},
		{map[string]string{"werf.io/show-logs-only-for-containers": "app"}, "sidecar", false, ""},
		{map[string]string{"werf.io/show-logs-only-for-containers": "app"}, "app", true, ""},
		{map[string]string{"werf.io/log-regex": "ERR"}, "app", true, "ERR"},
		{map[string]string{"werf.io/log-regex": "ERR", "werf.io/log-regex-for-app": "^panic"}, "app", true, "^panic"},
		{map[string]string{"werf.io/log-regex": "ERR", "werf.io/log-regex-for-app": "^panic"}, "web", true, "ERR"},
	} {
		show, re := logFilterOf(c.ann).shows(c.container)
		got := ""
		if re != nil {
			got = re.String()
		}
		if show != c.show || got != c.re {
			t.Errorf("%v, %s: %v %q; want %v %q", c.ann, c.container, show, got, c.show, c.re)
		}
	}
}
