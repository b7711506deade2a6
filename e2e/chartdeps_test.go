package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/stagehand/stagehand/e2e/harness"
)

// packageChart saves a chart as NAME-VERSION.tgz into dir.
func packageChart(t *testing.T, dir string, c *chart.Chart) string {
	t.Helper()
	p, err := chartutil.Save(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestChartDependenciesAreFetched: a chart with Bitnami-style
// dependencies (a library chart of named templates from an HTTP chart
// repository, and a chart from an OCI registry, the harness's) deploys
// through the real gitlab-runner with nothing committed in charts/; the
// dependencies' objects are in the cluster.
func TestChartDependenciesAreFetched(t *testing.T) {
	// The chart repository: a library chart, as Bitnami's "common".
	repoDir := t.TempDir()
	packageChart(t, repoDir, &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "common", Version: "2.1.0", Type: "library"},
		Templates: []*chart.File{{Name: "templates/_names.tpl", Data: []byte(
			`{{- define "common.names.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}`)}},
	})
	srv := httptest.NewServer(http.FileServer(http.Dir(repoDir)))
	defer srv.Close()
	idx, err := repo.IndexDirectory(repoDir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(repoDir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The OCI chart, in the harness's registry.
	cache := packageChart(t, t.TempDir(), &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "cache", Version: "17.0.1"},
		Values:   map[string]any{"port": 6379},
		Templates: []*chart.File{{Name: "templates/cm.yaml", Data: []byte(
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cache\ndata:\n  port: {{ .Values.port | quote }}\n")}},
	})
	data, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP())
	if err != nil {
		t.Fatal(err)
	}
	ociRepo := h.Registry + "/stagehand/charts-" + strings.ReplaceAll(t.Name(), "/", "-")
	if _, err := rc.Push(data, strings.ToLower(ociRepo)+"/cache:17.0.1"); err != nil {
		t.Fatal(err)
	}

	p := newBuildProject(t)
	files := sampleFiles(t)
	chartYAML := files[".helm/Chart.yaml"] + "dependencies:\n" +
		"- name: common\n  version: 2.x.x\n  repository: " + srv.URL + "\n" +
		"- name: cache\n  version: 17.0.1\n  repository: oci://" + strings.ToLower(ociRepo) + "\n"
	changed, err := p.gs.Commit(p.project, map[string]string{
		".helm/Chart.yaml":           chartYAML,
		".helm/values.yaml":          "cache:\n  port: 6380\n",
		".helm/templates/names.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"common.names.fullname\" . }}-names\ndata: {}\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	p.repo = changed
	ns := p.namespace("review-deps")
	run, _, _ := runWhile(t, p.runner(t, h.Engines[0]), p.envJob(t, "review/deps", ""), ns, harness.PodReady)
	wantState(t, run, "success", "")
	wantTrace(t, run, "Fetching the chart's 2 dependencies")
	c := kubeClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cms, err := c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	port := ""
	for _, cm := range cms.Items {
		names = append(names, cm.Name)
		if strings.HasSuffix(cm.Name, "-cache") {
			port = cm.Data["port"]
		}
	}
	joined := strings.Join(names, " ")
	if !strings.Contains(joined, "-sample-names") || port != "6380" {
		t.Errorf("configmaps %v, cache port %q: want the library's name and the OCI chart's object with the parent's value 6380", names, port)
	}
	wantState(t, runOn(t, p.runner(t, h.Engines[0]), p.envJob(t, "review/deps", "stop"), nil), "success", "")
}
