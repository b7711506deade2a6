package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"gitlab.com/gitlab-org/gitlab-runner/executors/custom/api"

	"gitlab.com/stagehand/stagehand/dockercfg"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/trace"
	"gitlab.com/stagehand/stagehand/worker"
)

// registryUser is the user GitLab's registry accepts with CI_JOB_TOKEN.
const registryUser = "gitlab-ci-token"

// DriverName is how the runner's trace names this executor.
const DriverName = "stagehand"

// Executor runs the custom executor hooks for one job.
type Executor struct {
	Settings Settings
	// Actions by kind; kinds missing here are refused in prepare.
	Actions map[ActionKind]Action
	Version string
	// Stdout receives the config JSON; Trace is the job trace (the hooks'
	// stderr, which the runner copies into the job log).
	Stdout, Trace io.Writer
	Job           *Job
	Log           *logrus.Logger
}

// New prepares an executor for the job described by environ.
func New(settings Settings, version string, environ []string, stdout, trace io.Writer) (*Executor, error) {
	e := &Executor{
		Settings: settings,
		Actions:  map[ActionKind]Action{ActionNone: noAction{}},
		Version:  version,
		Stdout:   stdout,
		Trace:    trace,
		Log:      NewLogger(trace),
	}
	job, err := LoadJob(environ)
	e.Job = job
	if err != nil {
		return e, err
	}
	if debugTrace(job.Vars) {
		e.Log.SetLevel(logrus.DebugLevel)
	}
	return e, settings.Validate()
}

// VarLogLevel set to debug makes the trace show each build step's own
// output (as does GitLab's CI_DEBUG_TRACE). It only adds output, so a job
// may choose it.
const VarLogLevel = "STAGEHAND_LOG_LEVEL"

func debugTrace(vars map[string]string) bool {
	return strings.EqualFold(vars[VarLogLevel], "debug") || vars["CI_DEBUG_TRACE"] == "true"
}

// Register plugs an action in.
func (e *Executor) Register(kind ActionKind, a Action) { e.Actions[kind] = a }

// derive computes the job's ci-env. Its errors name the variable and are
// the job's fault.
func (e *Executor) derive() (gitlab.Env, error) {
	env, err := gitlab.DeriveEnv(gitlab.Input{Vars: e.Job.Vars, DockerConfig: e.Job.DockerConfigDir()})
	if err != nil {
		return env, fault.Jobf("deriving the CI environment: %w", err)
	}
	return e.kubeNamespace(env), nil
}

// kubeNamespace leaves out KUBE_NAMESPACE when the runner does not let
// jobs choose their namespace: GitLab's legacy cluster integration sets
// it on every environment job, and werf never used it, so it is ignored
// (not refused) there; the namespace stays the derived one.
func (e *Executor) kubeNamespace(env gitlab.Env) gitlab.Env {
	if env.NamespaceFrom == gitlab.VarKubeNamespace && !e.Settings.AllowNamespaceOverride {
		env.Namespace, env.NamespaceFrom = env.DerivedNamespace, ""
	}
	return env
}

// Config prints the runner's configuration for the job (config_exec).
func (e *Executor) Config(ctx context.Context) error {
	out := api.ConfigExecOutput{
		Driver:            &api.DriverInfo{Name: ptr(DriverName), Version: ptr(e.Version)},
		Hostname:          ptr(hostname()),
		BuildsDir:         ptr(e.slotPath()),
		CacheDir:          ptr(e.Settings.CacheRoot),
		BuildsDirIsShared: ptr(false),
	}
	// A derivation error is reported by prepare, where it can fail the job
	// as the job's fault; config failures are always system failures.
	if env, err := e.derive(); err == nil {
		out.JobEnv = ptr(envMap(env))
	}
	enc := json.NewEncoder(e.Stdout)
	return enc.Encode(out)
}

// slotDir separates checkouts per runner and per concurrent slot of a
// project; the runner then adds <namespace>/<project> below it.
func (e *Executor) slotDir() string {
	runner := e.Job.Vars["CI_RUNNER_SHORT_TOKEN"]
	if runner == "" {
		runner = "runner"
	}
	slot := e.Job.Vars["CI_CONCURRENT_PROJECT_ID"]
	if slot == "" {
		slot = "0"
	}
	return filepath.Join(sanitizeName(runner), sanitizeName(slot))
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

func ptr[T any](v T) *T { return &v }

// Prepare checks what the job will need and sets up its private state
// (prepare_exec).
func (e *Executor) Prepare(ctx context.Context) error {
	start := time.Now()
	fmt.Fprintf(e.Trace, "%sstagehand %s on %s%s\n", trace.Bold, e.Version, hostname(), trace.Reset)
	if len(e.Job.Forged) > 0 {
		return fault.Jobf("the job's variables %s give other values than GitLab's: stagehand takes the project, pipeline, commit, environment and image from GitLab's job payload, never from job variables; remove those variables", strings.Join(e.Job.Forged, ", "))
	}
	env, err := e.derive()
	if err != nil {
		return err
	}
	kind, action, err := e.action()
	if err != nil {
		return err
	}
	e.Log.Infof("Action: %s", kind)

	if err := os.MkdirAll(e.Job.StateDir(), 0o700); err != nil {
		return fmt.Errorf("create job state dir: %w", err)
	}
	reg, token := e.Job.Vars["CI_REGISTRY"], e.Job.Vars["CI_JOB_TOKEN"]
	if token == "" {
		reg = ""
	}
	if err := dockercfg.Write(e.Job.DockerConfigDir(), reg, registryUser, token); err != nil {
		return err
	}
	if reg != "" {
		e.Log.Infof("DOCKER_CONFIG %s: logged in to %s as %s", e.Job.DockerConfigDir(), reg, registryUser)
	} else {
		e.Log.Infof("DOCKER_CONFIG %s: no registry login (the job has no CI_REGISTRY or CI_JOB_TOKEN)", e.Job.DockerConfigDir())
	}

	if img := e.Job.Image(); img != "" {
		if err := e.prepareImage(ctx, img); err != nil {
			return err
		}
	}
	if err := e.startServices(ctx); err != nil {
		return err
	}
	ac := e.actionContext(env)
	if err := action.Check(ctx, ac); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	e.Log.Infof("Prepared in %s", time.Since(start).Round(time.Millisecond))
	return nil
}

func (e *Executor) prepareImage(ctx context.Context, img string) error {
	policies, err := request.PullPolicies(e.Job.ImagePullPolicies, e.Settings.PullPolicy, e.Settings.AllowedPullPolicies)
	if err != nil {
		return fault.Job(err)
	}
	_, err = worker.Call[struct{}](ctx, e.worker(), request.JobImage{
		Engine:       e.engine(),
		Image:        img,
		PullPolicies: policies,
	})
	return err
}

// engine is the runner's Docker Engine, with the job's logins.
func (e *Executor) engine() request.Engine {
	return request.Engine{Host: e.Settings.DockerHost, Network: e.Settings.DockerNetwork, DockerConfig: e.Job.DockerConfigDir()}
}

// worker is the client of stagehand-worker, which does the Docker work.
func (e *Executor) worker() worker.Client {
	// The worker stops a container within StopTimeout; it gets more to
	// remove it and answer.
	return worker.Client{Path: e.Settings.Worker, Trace: e.Trace, StopGrace: e.Settings.StopTimeout + 30*time.Second}
}

func (e *Executor) actionContext(env gitlab.Env) *ActionContext {
	return &ActionContext{Job: e.Job, Settings: &e.Settings, Env: env, Trace: e.Trace, Worker: e.worker(), Debug: e.Log.IsLevelEnabled(logrus.DebugLevel), BuildsDir: e.slotPath()}
}

// action resolves the job's action to its implementation.
func (e *Executor) action() (ActionKind, Action, error) {
	kind, err := ChooseAction(e.Job.Vars)
	if err != nil {
		return "", nil, fault.Job(err)
	}
	a, ok := e.Actions[kind]
	if !ok {
		return kind, nil, fault.Jobf("this job's action is %q, which this stagehand version does not provide; set %s=none on the job to only run its script", kind, VarAction)
	}
	return kind, a, nil
}

func envMap(env gitlab.Env) map[string]string {
	m := map[string]string{}
	for _, v := range env.Vars() {
		m[v.Name] = v.Value
	}
	return m
}

// deriveNamed is the job's ci-env with its environment's names as the
// project's config gives them (werf.yaml's project: and deploy:), read
// from the checkout: the user's stages run after it. Before the checkout
// (config, prepare) the names are the GitLab project's.
func (e *Executor) deriveNamed(ctx context.Context) (gitlab.Env, error) {
	env, err := e.derive()
	if err != nil || env.Environment == "" {
		return env, err
	}
	dir := e.Job.Vars["CI_PROJECT_DIR"]
	if dir == "" {
		return env, nil
	}
	c := worker.Client{Path: e.Settings.Worker, Trace: e.Trace, StopGrace: 5 * time.Second}
	res, err := worker.Call[request.NamesResult](ctx, c, request.ConfigNames{Dir: dir, Vars: e.Job.Vars})
	switch {
	case err == nil && res.Naming == nil:
		return env, nil
	case err != nil:
		// The names of an environment a job deploys or stops must be the
		// project's; other jobs keep the GitLab project's.
		if kind, _ := ChooseAction(e.Job.Vars); kind == ActionDeploy || kind == ActionDismiss {
			return env, fault.Jobf("the environment's names come from the project's config, which does not read: %w", err)
		}
		e.Log.Warnf("The project's config does not read (%v): the environment's names are the GitLab project's", err)
		return env, nil
	}
	named, err := gitlab.DeriveEnv(gitlab.Input{Vars: e.Job.Vars, DockerConfig: e.Job.DockerConfigDir(), Naming: res.Naming})
	if err != nil {
		return env, fault.Jobf("deriving the CI environment: %w", err)
	}
	return e.kubeNamespace(named), nil
}

// Run runs the runner's script for one stage (run_exec), performing the
// job's action first when the stage is the user's main script.
func (e *Executor) Run(ctx context.Context, scriptPath, stage string) error {
	env, err := e.derive()
	if userStage(stage) {
		env, err = e.deriveNamed(ctx)
	}
	if err != nil {
		return err
	}
	if scriptStage(stage) {
		exports, err := e.perform(ctx, env)
		if err != nil {
			return err
		}
		if err := e.saveExports(exports); err != nil {
			return err
		}
	}
	exports, err := e.loadExports()
	if err != nil {
		return err
	}
	// The script's environment: the derived variables, then what the
	// action exported.
	vars := envMap(env)
	for k, v := range exports {
		vars[k] = v
	}

	code, err := e.scriptRunner(stage).Run(ctx, Script{Path: scriptPath, Stage: stage, Env: envList(vars), Stdout: e.Trace, Stderr: e.Trace})
	if err != nil {
		if ctx.Err() != nil {
			e.Log.Warnf("Job stopped during %s: %v", stage, err)
			return fault.Job(err)
		}
		return err
	}
	if code != 0 {
		if e.Job.BuildExitCodeFile != "" {
			if werr := os.WriteFile(e.Job.BuildExitCodeFile, []byte(fmt.Sprint(code)), 0o600); werr != nil {
				return fmt.Errorf("write %s: %w", api.BuildCodeFileVariable, werr)
			}
		}
		return &ScriptExit{Code: code}
	}
	return nil
}

func (e *Executor) perform(ctx context.Context, env gitlab.Env) (map[string]string, error) {
	kind, action, err := e.action()
	if err != nil || kind == ActionNone {
		return nil, err
	}
	var exports map[string]string
	// A build's and a deploy's trace is the job's main news: open; the
	// others' collapsed.
	open := kind == ActionBuild || kind == ActionDeploy
	err = trace.Section(e.Trace, "stagehand_"+string(kind), "stagehand "+string(kind), !open, func() error {
		ac := e.actionContext(env)
		var err error
		exports, err = action.Perform(ctx, ac)
		if err != nil {
			return err
		}
		written, err := writeReports(e.Job.Vars, exports)
		if len(written) > 0 {
			e.Log.Infof("Reports for later jobs: %s", strings.Join(written, ", "))
		}
		return err
	})
	return exports, err
}

// scriptRunner picks where a stage runs: user stages of image jobs in a
// container (through the worker), everything else on the host.
func (e *Executor) scriptRunner(stage string) ScriptRunner {
	img := e.Job.Image()
	if img == "" || !userStage(stage) {
		return hostShell{baseEnv: e.Job.HostEnv, stopTimeout: e.Settings.StopTimeout}
	}
	binds := []string{e.slotPath() + ":" + e.slotPath()}
	if _, err := os.Stat(e.Job.DockerConfigDir()); err == nil {
		binds = append(binds, e.Job.DockerConfigDir()+":"+e.Job.DockerConfigDir()+":ro")
	}
	return containerShell{
		worker:      e.worker(),
		engine:      e.engine(),
		image:       img,
		jobKey:      e.Job.Key(),
		binds:       binds,
		stopTimeout: e.Settings.StopTimeout,
		entrypoint:  e.Job.ImageEntrypoint, overrideEntrypoint: e.Job.ImageEntrypointSet,
		network: e.jobNetwork(),
	}
}

// slotPath is the job's builds dir root on the host.
func (e *Executor) slotPath() string { return filepath.Join(e.Settings.BuildsRoot, e.slotDir()) }

func envList(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return out
}

func (e *Executor) exportsPath() string { return filepath.Join(e.Job.StateDir(), "exports.json") }

// saveExports keeps what the action exported for later stages
// (after_script runs in another hook process).
func (e *Executor) saveExports(m map[string]string) error {
	if len(m) == 0 {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(e.Job.StateDir(), 0o700); err != nil {
		return err
	}
	return os.WriteFile(e.exportsPath(), b, 0o600)
}

func (e *Executor) loadExports() (map[string]string, error) {
	b, err := os.ReadFile(e.exportsPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read exported values: %w", err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read exported values: %w", err)
	}
	return m, nil
}

// Cleanup removes everything the job left on this host (cleanup_exec). It
// reports problems but never fails the job.
func (e *Executor) Cleanup(ctx context.Context) {
	start := time.Now()
	var problems []string
	if e.Job.Image() != "" {
		if n, err := e.removeContainers(ctx); err != nil {
			problems = append(problems, err.Error())
		} else if n > 0 {
			e.Log.Infof("Removed %d leftover job container(s)", n)
		}
	}
	if err := os.RemoveAll(e.Job.StateDir()); err != nil {
		problems = append(problems, fmt.Sprintf("remove job state %s: %v", e.Job.StateDir(), err))
	}
	for _, p := range problems {
		e.Log.Warnf("cleanup: %s", p)
	}
	e.Log.Infof("Cleaned up in %s", time.Since(start).Round(time.Millisecond))
}

func (e *Executor) removeContainers(ctx context.Context) (int, error) {
	res, err := worker.Call[request.Removed](ctx, e.worker(), request.JobContainers{Engine: e.engine(), JobKey: e.Job.Key()})
	return res.Count, err
}

// ExitCode is the hook's exit status for err.
func (e *Executor) ExitCode(err error) int { return e.Job.ExitCode(err) }

// Report writes err to the trace the way the job log should show it.
func (e *Executor) Report(err error) {
	var se *ScriptExit
	if err == nil || errors.As(err, &se) {
		return
	}
	e.Log.Errorf("stagehand: %s (%s)", strings.TrimSpace(err.Error()), fault.KindOf(err))
}
