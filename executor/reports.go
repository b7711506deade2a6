package executor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gitlab.com/stagehand/stagehand/fault"
)

// Job variables naming the reports a build or deploy writes for later
// jobs, relative to CI_PROJECT_DIR.
const (
	VarDotenv     = "STAGEHAND_DOTENV"
	VarReport     = "STAGEHAND_REPORT"
	defaultDotenv = "stagehand.env"
	defaultReport = "stagehand-report.json"
)

// reportPath is a report's path in the job's project directory; a name
// that leaves it is the job's error.
func reportPath(vars map[string]string, variable, def string) (string, error) {
	dir := vars["CI_PROJECT_DIR"]
	name := vars[variable]
	if name == "" {
		name = def
	}
	if dir == "" {
		return "", nil
	}
	p := filepath.Join(dir, name)
	if rel, err := filepath.Rel(dir, p); err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(name) {
		return "", fault.Jobf("%s=%q must name a file within the project directory (CI_PROJECT_DIR)", variable, name)
	}
	return p, nil
}

// dotenv is GitLab's dotenv report format: KEY=VALUE lines, sorted.
func dotenv(vars map[string]string) []byte {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, vars[k])
	}
	return []byte(b.String())
}

// writeReports writes what a build or deploy exported as a dotenv file
// (for `artifacts: reports: dotenv:`, so later jobs and `environment:
// url:` see the variables) and as a JSON object, in the project
// directory.
func writeReports(vars map[string]string, exports map[string]string) ([]string, error) {
	if len(exports) == 0 {
		return nil, nil
	}
	var written []string
	envPath, err := reportPath(vars, VarDotenv, defaultDotenv)
	if err != nil || envPath == "" {
		return nil, err
	}
	jsonPath, err := reportPath(vars, VarReport, defaultReport)
	if err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(exports, "", "  ")
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{envPath, dotenv(exports)}, {jsonPath, append(js, '\n')}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return written, fmt.Errorf("report %s: %w", f.path, err)
		}
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			return written, fmt.Errorf("report %s: %w", f.path, err)
		}
		written = append(written, f.path)
	}
	return written, nil
}
