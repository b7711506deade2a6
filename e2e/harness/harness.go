// Package harness runs jobs through the real gitlab-runner and stagehand
// against the components scripts/harness.sh started (Docker Engine,
// registry). The e2e tests and `make demo` share it.
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
)

// DefaultEnvFile is where scripts/harness.sh writes what it started.
const DefaultEnvFile = "/var/lib/stagehand-harness/harness.env"

// Harness knows the real components and a freshly built stagehand.
type Harness struct {
	Stagehand    string // stagehand binary built from this checkout
	GitlabRunner string
	DockerHost   string
	Registry     string
	// RegistryLog is the registry's log file.
	RegistryLog string
	BaseImage   string
	// Kubeconfig is the harness's API server (etcd, kube-apiserver,
	// kube-controller-manager).
	Kubeconfig string
	// KubeBin holds the etcd and kube-apiserver binaries, for tests that
	// need an API server of their own.
	KubeBin string
	// Engines are the Docker Engines standing for runner hosts, in order
	// (the first is DockerHost).
	Engines     []Engine
	Coordinator *coordinator.Server
	// Root holds everything jobs leave behind (builds, cache, runner temp
	// dirs, logs), so that tests can inspect it.
	Root string
}

// ErrNotStarted says the harness is not up; outside CI tests skip on it.
var ErrNotStarted = errors.New("harness not started: run `make harness` (scripts/harness.sh up)")

// Engine is one Docker Engine of the harness: a runner host.
type Engine struct{ Name, Host string }

// Env reads the harness env file (STAGEHAND_HARNESS_ENV, else the
// default), for tests that need the components but no runner.
func Env() (map[string]string, string, error) {
	path := os.Getenv("STAGEHAND_HARNESS_ENV")
	if path == "" {
		path = DefaultEnvFile
	}
	env, err := readEnvFile(path)
	if err != nil {
		return nil, path, fmt.Errorf("%w (%v)", ErrNotStarted, err)
	}
	return env, path, nil
}

// Engines reads the engines of an env file.
func Engines(env map[string]string) []Engine {
	var out []Engine
	for _, f := range strings.Fields(env["STAGEHAND_TEST_DOCKER_ENGINES"]) {
		if name, host, ok := strings.Cut(f, "="); ok {
			out = append(out, Engine{Name: name, Host: host})
		}
	}
	return out
}

// Load reads the harness env file, builds stagehand into root and starts a
// coordinator.
func Load(root string) (*Harness, error) {
	env, path, err := Env()
	if err != nil {
		return nil, err
	}
	h := &Harness{
		Engines:      Engines(env),
		GitlabRunner: env["STAGEHAND_TEST_GITLAB_RUNNER"],
		DockerHost:   env["STAGEHAND_TEST_DOCKER_HOST"],
		Registry:     env["STAGEHAND_TEST_REGISTRY"],
		RegistryLog:  env["STAGEHAND_TEST_REGISTRY_LOG"],
		BaseImage:    env["STAGEHAND_TEST_BASE_IMAGE"],
		Kubeconfig:   env["STAGEHAND_TEST_KUBECONFIG"],
		KubeBin:      env["STAGEHAND_TEST_KUBE_BIN"],
		Root:         root,
	}
	for name, v := range map[string]string{"gitlab-runner": h.GitlabRunner, "docker host": h.DockerHost, "registry": h.Registry, "base image": h.BaseImage, "kubeconfig": h.Kubeconfig, "Kubernetes binaries": h.KubeBin} {
		if v == "" {
			return nil, fmt.Errorf("%w: %s has no %s", ErrNotStarted, path, name)
		}
	}
	if _, err := os.Stat(h.GitlabRunner); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotStarted, err)
	}
	if h.Stagehand, err = BuildStagehand(filepath.Join(root, "bin")); err != nil {
		return nil, err
	}
	if h.Coordinator, err = coordinator.New(); err != nil {
		return nil, err
	}
	return h, nil
}

// Close stops the coordinator.
func (h *Harness) Close() { h.Coordinator.Close() }

func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

// BuildStagehand compiles this checkout's stagehand and stagehand-worker
// into dir and returns stagehand's path.
func BuildStagehand(dir string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	module := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(dir, "stagehand")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=e2e", "-o", dir+string(filepath.Separator), ".", "./cmd/stagehand-worker", "./cmd/stagehand-config", "./cmd/stagehand-deploy")
	cmd.Dir = module
	// As `make build` does: static binaries, which start faster (no
	// dynamic loader) and run on any runner host.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build stagehand: %v\n%s", err, b)
	}
	return out, nil
}

// Runner is one gitlab-runner configuration: a directory with its
// config.toml, builds, cache and temp dirs.
type Runner struct {
	h   *Harness
	Dir string
	// Env is added to the runner process's environment (and so to every
	// hook's), e.g. STAGEHAND_DOCKER_HOST.
	Env []string
	// Hooks, when set, replaces stagehand by another custom executor
	// (benchmarks compare against trivial shell hooks).
	Hooks *Hooks
}

// Hooks are the four custom executor programs and their arguments.
type Hooks struct {
	Config, Prepare, Run, Cleanup []string
}

// NewRunner makes a runner directory below the harness root.
func (h *Harness) NewRunner(name string) (*Runner, error) {
	// Test names become paths of the runner's builds, which gitlab-runner
	// writes into its scripts unquoted in places: plain characters only.
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_.-", r) {
			return r
		}
		return '_'
	}, name)
	dir := filepath.Join(h.Root, "runners", name)
	for _, d := range []string{"builds", "cache", "tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &Runner{h: h, Dir: dir, Env: []string{"STAGEHAND_DOCKER_HOST=" + h.DockerHost}}, nil
}

// BuildsDir, CacheDir and TempDir are what jobs of this runner leave behind.
func (r *Runner) BuildsDir() string { return filepath.Join(r.Dir, "builds") }
func (r *Runner) CacheDir() string  { return filepath.Join(r.Dir, "cache") }
func (r *Runner) TempDir() string   { return filepath.Join(r.Dir, "tmp") }

// configTOML is config.toml.example with the coordinator's URL, a token and
// this runner's paths put in: the tests run the documented configuration.
func (r *Runner) configTOML() (string, error) {
	s, err := r.documentedConfig()
	if err != nil || r.Hooks == nil {
		return s, err
	}
	return replaceHooks(s, r.Hooks), nil
}

// documentedConfig is config.toml.example with only the url, token and
// paths put in.
func (r *Runner) documentedConfig() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "config.toml.example"))
	if err != nil {
		return "", err
	}
	s := string(b)
	s = strings.Replace(s, `url = "https://gitlab.example.com/"`, fmt.Sprintf("url = %q", r.h.Coordinator.URL()), 1)
	s = strings.Replace(s, `token = "glrt-REPLACE-ME"`, `token = "glrt-e2e-runner"`, 1)
	s = strings.ReplaceAll(s, "/usr/local/bin/stagehand", r.h.Stagehand)
	s = strings.ReplaceAll(s, "/var/lib/stagehand/builds", r.BuildsDir())
	s = strings.ReplaceAll(s, "/var/lib/stagehand/cache", r.CacheDir())
	return s, nil
}

// DefaultHooks reads the four hooks (exec and args) of config.toml.example,
// as this runner would run them.
func (r *Runner) DefaultHooks() (*Hooks, error) {
	cfg, err := r.documentedConfig()
	if err != nil {
		return nil, err
	}
	hooks := &Hooks{}
	slots := map[string]*[]string{"config": &hooks.Config, "prepare": &hooks.Prepare, "run": &hooks.Run, "cleanup": &hooks.Cleanup}
	args := map[string][]string{}
	for _, line := range strings.Split(cfg, "\n") {
		key, value, ok := strings.Cut(strings.TrimSpace(line), " = ")
		if !ok {
			continue
		}
		name, kind, ok := strings.Cut(key, "_")
		slot, known := slots[name]
		if !ok || !known {
			continue
		}
		switch kind {
		case "exec":
			var exe string
			if err := json.Unmarshal([]byte(value), &exe); err != nil {
				return nil, fmt.Errorf("config.toml.example: %s: %w", key, err)
			}
			*slot = append([]string{exe}, *slot...)
		case "args":
			var a []string
			if err := json.Unmarshal([]byte(value), &a); err != nil {
				return nil, fmt.Errorf("config.toml.example: %s: %w", key, err)
			}
			args[name] = a
		}
	}
	for name, slot := range slots {
		if len(*slot) != 1 {
			return nil, fmt.Errorf("config.toml.example: no %s_exec", name)
		}
		*slot = append(*slot, args[name]...)
	}
	return hooks, nil
}

func replaceHooks(s string, h *Hooks) string {
	lines := strings.Split(s, "\n")
	set := map[string][]string{"config": h.Config, "prepare": h.Prepare, "run": h.Run, "cleanup": h.Cleanup}
	for i, l := range lines {
		t := strings.TrimSpace(l)
		for name, argv := range set {
			switch {
			case strings.HasPrefix(t, name+"_exec "):
				lines[i] = fmt.Sprintf("    %s_exec = %q", name, argv[0])
			case strings.HasPrefix(t, name+"_args "):
				q := make([]string, len(argv)-1)
				for j, a := range argv[1:] {
					q[j] = fmt.Sprintf("%q", a)
				}
				lines[i] = fmt.Sprintf("    %s_args = [%s]", name, strings.Join(q, ", "))
			}
		}
	}
	return strings.Join(lines, "\n")
}

// JobRun is one job's outcome and what the runner printed.
type JobRun struct {
	ID        int64
	Token     string
	Result    coordinator.Result
	RunnerLog string
	Duration  time.Duration
}

// Run hands job to the coordinator and runs `gitlab-runner run-single` for
// it. onStart, when not nil, is called while the job runs (e.g. to cancel
// it).
func (r *Runner) Run(ctx context.Context, job coordinator.Job, onStart func(id int64)) (*JobRun, error) {
	cfg, err := r.configTOML()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(r.Dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	start := time.Now()
	id, token := r.h.Coordinator.Enqueue(job)
	logPath := filepath.Join(r.Dir, "logs", fmt.Sprintf("runner-job-%d.log", id))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	cmd := exec.CommandContext(ctx, r.h.GitlabRunner, "run-single", "-c", cfgPath, "-r", "stagehand",
		"--wait-timeout", "30", "--max-builds", "1")
	cmd.Dir = r.Dir
	// gitlab-runner on PATH, as installed: the job's own stages call it
	// (artifacts and caches are uploaded by `gitlab-runner
	// artifacts-uploader` in the job's shell).
	bin := filepath.Join(r.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(r.h.GitlabRunner, filepath.Join(bin, "gitlab-runner")); err != nil && !os.IsExist(err) {
		return nil, err
	}
	cmd.Env = append(append(os.Environ(), "TMPDIR="+r.TempDir(), "PATH="+bin+":"+os.Getenv("PATH")), r.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gitlab-runner: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if onStart != nil {
		go onStart(id)
	}
	res, werr := r.h.Coordinator.Wait(ctx, id)
	select {
	case err = <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		err = errors.New("gitlab-runner did not exit after the job")
	}
	log, _ := os.ReadFile(logPath)
	run := &JobRun{ID: id, Token: token, Result: res, RunnerLog: string(log), Duration: time.Since(start)}
	if werr != nil {
		return run, fmt.Errorf("job %d: %w (runner log %s)", id, werr, logPath)
	}
	if err != nil {
		return run, fmt.Errorf("gitlab-runner: %w (log %s)", err, logPath)
	}
	return run, nil
}

// ReadTree reads a directory (a test project) as slash path -> contents,
// the form gitserver.CreateRepo takes.
func ReadTree(root string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	return files, err
}
