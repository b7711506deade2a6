package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/downloader"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/internal/netaddr"
)

// ChartCacheDir is where a host keeps chart repositories' indexes, shared
// by its deploys: below the user's cache directory.
func ChartCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "stagehand", "charts")
}

// withDependencies answers the chart with its dependencies in charts/:
// when they are all there (a committed charts/), the chart as loaded;
// else they are fetched as `helm dependency build` does (Chart.lock's
// versions, or Chart.yaml's ranges resolved when there is no lock) from
// HTTP chart repositories (anonymous) and OCI registries (with the job's
// registry logins, dockerConfig), then the chart is loaded again.
func withDependencies(ch *chart.Chart, chartDir, dockerConfig, cacheDir string, trace io.Writer) (*chart.Chart, error) {
	deps := ch.Metadata.Dependencies
	if len(deps) == 0 {
		return ch, nil
	}
	if err := action.CheckDependencies(ch, deps); err == nil {
		return ch, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fault.System(fmt.Errorf("chart cache %s: %w", cacheDir, err))
	}
	// The HTTP repositories, under names of their own, in a repositories
	// file of this deploy's: Helm fetches only from repositories it knows.
	reposFile, err := os.CreateTemp("", "stagehand-repositories-*.yaml")
	if err != nil {
		return nil, fault.System(err)
	}
	reposFile.Close()
	defer os.Remove(reposFile.Name())
	rf := repo.NewFile()
	plainHTTP := false
	for _, d := range allDependencies(ch) {
		switch {
		case registry.IsOCI(d.Repository):
			if u, err := url.Parse(d.Repository); err == nil && netaddr.Loopback(u.Host) {
				// As go-containerregistry and the Docker Engine: a
				// registry on this host speaks plain HTTP.
				plainHTTP = true
			}
		case strings.HasPrefix(d.Repository, "http://") || strings.HasPrefix(d.Repository, "https://"):
			if !rf.Has(repoName(d.Repository)) {
				rf.Add(&repo.Entry{Name: repoName(d.Repository), URL: strings.TrimSuffix(d.Repository, "/")})
			}
		}
	}
	if err := rf.WriteFile(reposFile.Name(), 0o600); err != nil {
		return nil, fault.System(err)
	}
	opts := []registry.ClientOption{registry.ClientOptWriter(trace)}
	if dockerConfig != "" {
		opts = append(opts, registry.ClientOptCredentialsFile(filepath.Join(dockerConfig, "config.json")))
	}
	if plainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	rc, err := registry.NewClient(opts...)
	if err != nil {
		return nil, fault.System(fmt.Errorf("chart registry client: %w", err))
	}
	settings := cli.New()
	settings.RepositoryConfig, settings.RepositoryCache = reposFile.Name(), cacheDir
	m := &downloader.Manager{
		Out: trace, ChartPath: chartDir,
		Getters:        getter.All(settings),
		RegistryClient: rc, RepositoryConfig: reposFile.Name(), RepositoryCache: cacheDir,
	}
	fmt.Fprintf(trace, "Fetching the chart's %d dependencies\n", len(deps))
	if err := m.Build(); err != nil {
		return nil, fault.Jobf("fetch the dependencies of the chart %s (Chart.yaml, Chart.lock): %w", chartDir, err)
	}
	out, err := loader.Load(chartDir)
	if err != nil {
		return nil, fault.Jobf("load the chart %s: %w", chartDir, err)
	}
	if err := action.CheckDependencies(out, out.Metadata.Dependencies); err != nil {
		return nil, fault.Jobf("the chart %s: %w", chartDir, err)
	}
	return out, nil
}

// allDependencies are the dependencies the chart declares, and its lock's.
func allDependencies(ch *chart.Chart) []*chart.Dependency {
	deps := append([]*chart.Dependency{}, ch.Metadata.Dependencies...)
	if ch.Lock != nil {
		for _, d := range ch.Lock.Dependencies {
			deps = append(deps, &chart.Dependency{Name: d.Name, Version: d.Version, Repository: d.Repository})
		}
	}
	return deps
}

// repoName names a repository URL in the repositories file: the same URL
// gets the same name, so its cached index is found again.
func repoName(u string) string {
	sum := sha256.Sum256([]byte(strings.TrimSuffix(u, "/")))
	return "stagehand-" + hex.EncodeToString(sum[:8])
}
