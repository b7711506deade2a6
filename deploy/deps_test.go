package deploy

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"
)

// library is a chart to depend on, packaged into dir.
func library(t *testing.T, dir, name, version string) string {
	t.Helper()
	c := &chart.Chart{
		Metadata:  &chart.Metadata{APIVersion: "v2", Name: name, Version: version},
		Templates: []*chart.File{{Name: "templates/cm.yaml", Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\n")}},
	}
	p, err := chartutil.Save(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parentChart(t *testing.T, deps string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n"+deps), 0o644)
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	return dir
}

// TestDependenciesFromAChartRepositoryAndAnOCIRegistry: a chart's
// dependencies are fetched into charts/ from an HTTP chart repository
// (versions resolved from Chart.yaml's range) and from an OCI registry;
// the repository's index is cached in the host's cache; a committed
// charts/ is used as is.
func TestDependenciesFromAChartRepositoryAndAnOCIRegistry(t *testing.T) {
	repoDir := t.TempDir()
	library(t, repoDir, "common", "1.2.0")
	library(t, repoDir, "common", "1.3.0")
	srv := httptest.NewServer(http.FileServer(http.Dir(repoDir)))
	defer srv.Close()
	idx, err := repo.IndexDirectory(repoDir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(repoDir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}

	oci := httptest.NewServer(ggcrregistry.New())
	defer oci.Close()
	host := strings.TrimPrefix(oci.URL, "http://")
	pkg := library(t, t.TempDir(), "redis", "17.0.1")
	data, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Push(data, host+"/charts/redis:17.0.1"); err != nil {
		t.Fatal(err)
	}

	dir := parentChart(t, "- name: common\n  version: ~1.2.0\n  repository: "+srv.URL+"\n- name: redis\n  version: 17.0.1\n  repository: oci://"+host+"/charts\n")
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	var trace bytes.Buffer
	got, err := withDependencies(ch, dir, "", cache, &trace)
	if err != nil {
		t.Fatalf("%v\n%s", err, trace.String())
	}
	versions := map[string]string{}
	for _, d := range got.Dependencies() {
		versions[d.Name()] = d.Metadata.Version
	}
	if versions["common"] != "1.2.0" || versions["redis"] != "17.0.1" {
		t.Errorf("dependencies %v, want common 1.2.0 (the range's) and redis 17.0.1", versions)
	}
	if idx, _ := filepath.Glob(filepath.Join(cache, "stagehand-*-index.yaml")); len(idx) != 1 {
		t.Errorf("the repository's index is not in the host's cache: %v", idx)
	}

	// Now committed: used as is, nothing fetched.
	srv.Close()
	ch, err = loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	trace.Reset()
	if _, err := withDependencies(ch, dir, "", cache, &trace); err != nil || trace.Len() != 0 {
		t.Errorf("a chart with its charts/ fetched again: %v\n%s", err, trace.String())
	}

	// A dependency nowhere to be found is the job's error, naming the chart.
	bad := parentChart(t, "- name: nope\n  version: 1.0.0\n  repository: oci://"+host+"/charts\n")
	ch, _ = loader.Load(bad)
	if _, err := withDependencies(ch, bad, "", cache, &trace); err == nil || !strings.Contains(err.Error(), "fetch the dependencies of the chart "+bad) {
		t.Errorf("a missing dependency: %v", err)
	}
}
