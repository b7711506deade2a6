// Package executor implements gitlab-runner's custom executor protocol: the
// config, prepare, run and cleanup hooks, the choice of the job's action and
// the place where the user's script runs.
package executor

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"gitlab.com/gitlab-org/gitlab-runner/executors/custom/api"
)

// customEnvPrefix marks the job's variables in a hook's environment: the
// runner passes every job variable as CUSTOM_ENV_<name>, next to its own.
const customEnvPrefix = "CUSTOM_ENV_"

// Job is what one hook invocation knows about its job. It is decoded once,
// from the hook's environment, by LoadJob.
type Job struct {
	// Vars are the job's variables (predefined CI_* and user ones), without
	// the CUSTOM_ENV_ prefix.
	Vars map[string]string
	// HostEnv is the hook's own environment less the job's variables: what
	// the runner and the operator set for the executor process.
	HostEnv []string

	BuildFailureCode  int
	SystemFailureCode int
	// BuildExitCodeFile receives the user's script exit code, so that the
	// runner reports the script's own code rather than ours.
	BuildExitCodeFile string
	// TempDir is the per-job directory the runner creates before config_exec
	// and removes after cleanup_exec; stagehand keeps its job state below it.
	TempDir string
	// Trusted: the variables that decide what stagehand touches are
	// GitLab's, from the job payload (JOB_RESPONSE_FILE), not job
	// variables'. Forged are the decisive variables a job variable tried
	// to change; prepare refuses such a job.
	Trusted bool
	Forged  []string
	// ImageEntrypoint is the job's `image: entrypoint:` when it sets one
	// (ImageEntrypointSet); ImagePullPolicies its `image: pull_policy:`.
	// Both come from the job payload only.
	ImageEntrypoint    []string
	ImageEntrypointSet bool
	ImagePullPolicies  []string
	// Services are the job's `services:`, from the job payload only.
	Services []payloadService
}

// LoadJob decodes a hook's environment (os.Environ() form). It is the only
// place that knows about the CUSTOM_ENV_ prefix.
func LoadJob(environ []string) (*Job, error) {
	j := &Job{Vars: map[string]string{}, BuildFailureCode: 1, SystemFailureCode: 2}
	host := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if name, isJob := strings.CutPrefix(k, customEnvPrefix); isJob {
			j.Vars[name] = v
			continue
		}
		host[k] = v
		j.HostEnv = append(j.HostEnv, kv)
	}
	var err error
	if j.BuildFailureCode, err = exitCodeVar(host, api.BuildFailureExitCodeVariable, 1); err != nil {
		return j, err
	}
	if j.SystemFailureCode, err = exitCodeVar(host, api.SystemFailureExitCodeVariable, 2); err != nil {
		return j, err
	}
	j.BuildExitCodeFile = host[api.BuildCodeFileVariable]
	p, err := readPayload(host["JOB_RESPONSE_FILE"])
	if err != nil {
		return j, err
	}
	if p != nil {
		j.Trusted = true
		j.Forged = applyTrusted(j.Vars, p.trusted())
		if p.Image != nil {
			j.ImageEntrypoint, j.ImageEntrypointSet = p.Image.Entrypoint, p.Image.Entrypoint != nil
			j.ImagePullPolicies = p.Image.PullPolicy
		}
		j.Services = p.Services
	}
	j.TempDir = host["TMPDIR"]
	if j.TempDir == "" {
		return j, errors.New("TMPDIR is not set: stagehand hooks must be run by gitlab-runner's custom executor (see config.toml.example)")
	}
	if !filepath.IsAbs(j.TempDir) {
		return j, fmt.Errorf("TMPDIR %q is not an absolute path", j.TempDir)
	}
	return j, nil
}

func exitCodeVar(env map[string]string, name string, def int) (int, error) {
	s, ok := env[name]
	if !ok || s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 255 {
		return def, fmt.Errorf("%s=%q is not an exit code (1-255)", name, s)
	}
	return n, nil
}

// Image is the job's image (`image:` in .gitlab-ci.yml); "" when the job has
// none and its script runs on the host.
func (j *Job) Image() string { return j.Vars["CI_JOB_IMAGE"] }

// ProjectPath is the job's project as GitLab names it (group/name), or
// its name when the job has no path.
func (j *Job) ProjectPath() string {
	if p := j.Vars["CI_PROJECT_PATH"]; p != "" {
		return p
	}
	return j.Vars["CI_PROJECT_NAME"]
}

// Key names the job uniquely on this host: the job id alone may repeat
// across GitLab instances served by one runner host.
func (j *Job) Key() string {
	return fmt.Sprintf("%s-%s", sanitizeName(j.Vars["CI_SERVER_HOST"]), sanitizeName(j.Vars["CI_JOB_ID"]))
}

// StateDir holds everything stagehand keeps for the job between hooks
// (docker config, exported values). It lives in the runner's per-job
// TMPDIR, which is private (0700) and removed by the runner after cleanup.
func (j *Job) StateDir() string { return filepath.Join(j.TempDir, "stagehand") }

// DockerConfigDir is the per-job DOCKER_CONFIG.
func (j *Job) DockerConfigDir() string { return filepath.Join(j.StateDir(), "docker") }

func sanitizeName(s string) string {
	if s == "" {
		return "unknown"
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}
