// Package worker is how the stagehand hooks hand heavy work (the Docker
// Engine now; builds, deploys and cleanups later) to the stagehand-worker
// program.
//
// Why a second program: gitlab-runner starts a hook process for every
// stage of every job, so the hooks' start-up time is paid many times per
// job. Linking the Docker client (and later Helm and client-go) into the
// hooks would multiply their start-up time several times over for jobs
// that never touch an engine. The hooks stay small and start the worker
// only when a job needs it.
//
// The protocol: one request as JSON on the worker's stdin; progress on its
// stdout and stderr, which are the job trace; one Response as JSON on file
// descriptor 3. SIGTERM asks the worker to stop what it does (a cancelled
// job); it still answers.
package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gitlab.com/stagehand/stagehand/fault"
)

// Program is the worker's file name, looked for next to stagehand.
const Program = "stagehand-worker"

// Operations.
const (
	// OpEnsureImage checks the engine and makes Image available per
	// PullPolicy, pulling with the job's DockerConfig credentials.
	OpEnsureImage = "ensure-image"
	// OpRunScript runs Script in a fresh container of Image and answers
	// its exit status.
	OpRunScript = "run-script"
	// OpRemoveJobContainers removes every container of JobKey and answers
	// how many.
	OpRemoveJobContainers = "remove-job-containers"
	// OpBuild builds the project's stages and publishes its images
	// (Build), answering the variables to export.
	OpBuild = "build"
	// OpStagesSync copies the stages one storage has and another lacks
	// (Stages).
	OpStagesSync = "stages-sync"
	// OpSwitchFromLocal moves a project's stages from :local to a
	// registry and blocks later :local builds (Stages).
	OpSwitchFromLocal = "switch-from-local"
	// OpDeploy builds the images, then deploys the environment (Deploy).
	OpDeploy = "deploy"
	// OpDismiss removes the environment (Deploy).
	OpDismiss = "dismiss"
	// OpCleanup cleans the registry, the stages and the host's builder
	// cache (Cleanup).
	OpCleanup = "cleanup"
)

// Pull policies for job images.
const (
	PullIfNotPresent = "if-not-present"
	PullAlways       = "always"
	PullNever        = "never"
)

// Request is one piece of work.
type Request struct {
	Op           string   `json:"op"`
	DockerHost   string   `json:"docker_host"`
	JobKey       string   `json:"job_key,omitempty"`
	Image        string   `json:"image,omitempty"`
	PullPolicy   string   `json:"pull_policy,omitempty"`
	DockerConfig string   `json:"docker_config,omitempty"`
	Script       *Script  `json:"script,omitempty"`
	Build        *Build   `json:"build,omitempty"`
	Stages       *Stages  `json:"stages,omitempty"`
	Deploy       *Deploy  `json:"deploy,omitempty"`
	Cleanup      *Cleanup `json:"cleanup,omitempty"`
}

// Cleanup is one cleanup of a project (a scheduled pipeline's job).
type Cleanup struct {
	APIURL  string `json:"api_url"`
	Token   string `json:"token"`
	Project string `json:"project"`
	// LockProject names the project lock builds take.
	LockProject     string   `json:"lock_project"`
	StagesRepo      string   `json:"stages_repo"`
	Kubeconfig      string   `json:"kubeconfig,omitempty"`
	Namespaces      []string `json:"namespaces,omitempty"`
	DryRun          bool     `json:"dry_run,omitempty"`
	Synchronization string   `json:"synchronization,omitempty"`
	LocksDir        string   `json:"locks_dir,omitempty"`
	Holder          string   `json:"holder,omitempty"`
	// Policies: limit and expiry days of git tag, commit and
	// stages-signature images (-1: no bound).
	GitTagLimit, GitTagExpiryDays       int
	GitCommitLimit, GitCommitExpiryDays int
	SignatureLimit, SignatureExpiryDays int
	// ProjectDir and Vars find the project's stagehand.yaml, whose
	// cleanup: policies override these.
	ProjectDir              string            `json:"project_dir,omitempty"`
	Vars                    map[string]string `json:"vars,omitempty"`
	BuilderThresholdPercent int               `json:"builder_threshold_percent,omitempty"`
	BuilderMaxBytes         int64             `json:"builder_max_bytes,omitempty"`
}

// Deploy is one deploy or dismiss of a GitLab environment.
type Deploy struct {
	// Build is the build that gives the images (deploy only).
	Build      *Build `json:"build,omitempty"`
	Namespace  string `json:"namespace"`
	Release    string `json:"release"`
	ChartDir   string `json:"chart_dir,omitempty"`
	Env        string `json:"env,omitempty"`
	CIURL      string `json:"ci_url,omitempty"`
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Sets are STAGEHAND_SET_* variables; Annotations go on every object.
	Sets        map[string]string `json:"sets,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Registry with DeployUser/DeployPassword (GitLab's deploy token) make
	// the pull secret; else it is copied from PullSecretFrom.
	Registry       string        `json:"registry,omitempty"`
	DeployUser     string        `json:"deploy_user,omitempty"`
	DeployPassword string        `json:"deploy_password,omitempty"`
	PullSecretFrom string        `json:"pull_secret_from,omitempty"`
	Timeout        time.Duration `json:"timeout"`
}

// Stages is a stages storage operation of an operator.
type Stages struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Project  string `json:"project"`
	BlockDir string `json:"block_dir,omitempty"`
}

// Build is one build of a project's images (OpBuild).
type Build struct {
	ProjectDir string `json:"project_dir"`
	// Vars are the job's variables, which the config's templates read
	// (they hold secrets: they travel on the pipe only).
	Vars       map[string]string `json:"vars"`
	Project    string            `json:"project"`
	StagesRepo string            `json:"stages_repo"`
	ImagesRepo string            `json:"images_repo"`
	Commit     string            `json:"commit"`
	CommitTime string            `json:"commit_time"`
	Branch     string            `json:"branch,omitempty"`
	GitTag     string            `json:"git_tag,omitempty"`
	RefSlug    string            `json:"ref_slug,omitempty"`
	// TagStrategy is STAGEHAND_TAG_STRATEGY.
	TagStrategy string `json:"tag_strategy"`
	Network     string `json:"network,omitempty"`
	// Synchronization is STAGEHAND_SYNCHRONIZATION: "" for none, ":local"
	// or kubernetes://NAMESPACE; Kubeconfig is for the latter.
	Synchronization string `json:"synchronization,omitempty"`
	Kubeconfig      string `json:"kubeconfig,omitempty"`
	LocksDir        string `json:"locks_dir,omitempty"`
	// Holder tells other hosts who holds a lock ("host X, job N").
	Holder string `json:"holder,omitempty"`
	// BlockDir holds switch-from-local block files.
	BlockDir string `json:"block_dir,omitempty"`
}

// Script is a runner script to run in a job container.
type Script struct {
	Path  string `json:"path"`
	Stage string `json:"stage"`
	// Env is the container's environment (it holds the job's secrets: it
	// travels on a pipe, never on a command line or in a file).
	Env []string `json:"env"`
	// Binds are host:container[:ro] mounts.
	Binds       []string      `json:"binds"`
	Network     string        `json:"network,omitempty"`
	StopTimeout time.Duration `json:"stop_timeout"`
}

// Response is the outcome of a request.
type Response struct {
	// ExitCode is the script's exit status (OpRunScript).
	ExitCode int `json:"exit_code"`
	// Removed counts removed containers (OpRemoveJobContainers).
	Removed int `json:"removed,omitempty"`
	// Exports are variables for the job's script (OpBuild).
	Exports map[string]string `json:"exports,omitempty"`
	// Copied and Present count stages (OpStagesSync, OpSwitchFromLocal).
	Copied  int `json:"copied,omitempty"`
	Present int `json:"present,omitempty"`
	// Error, when not empty, is why the work failed; JobFault tells
	// whether the job is to blame.
	Error    string `json:"error,omitempty"`
	JobFault bool   `json:"job_fault,omitempty"`
	// Stopped says the work was stopped by SIGTERM.
	Stopped bool `json:"stopped,omitempty"`
}

// Handler does one operation. Its error's fault kind goes back to the
// hook.
type Handler func(ctx context.Context, req Request, trace io.Writer) (Response, error)

// resultFD is where the worker writes its Response.
const resultFD = 3

// Serve is the worker program's main: it reads the request, runs its
// handler until done or SIGTERM, and writes the response. It returns the
// process exit status.
func Serve(handlers map[string]Handler, stdin io.Reader, trace io.Writer) int {
	result := os.NewFile(resultFD, "result")
	if result == nil {
		fmt.Fprintf(trace, "%s is started by stagehand's hooks, not by hand\n", Program)
		return 2
	}
	defer result.Close()
	resp := serve(handlers, stdin, trace)
	if err := json.NewEncoder(result).Encode(resp); err != nil {
		fmt.Fprintf(trace, "%s: write result: %v\n", Program, err)
		return 2
	}
	return 0
}

func serve(handlers map[string]Handler, stdin io.Reader, trace io.Writer) Response {
	var req Request
	if err := json.NewDecoder(stdin).Decode(&req); err != nil {
		return Response{Error: fmt.Sprintf("%s: read request: %v", Program, err)}
	}
	h, ok := handlers[req.Op]
	if !ok {
		return Response{Error: fmt.Sprintf("%s: unknown operation %q (stagehand and %s are from different versions?)", Program, req.Op, Program)}
	}
	// The runner stops a cancelled job's hooks with SIGTERM (and ^C reaches
	// a worker run by hand as SIGINT); the handler sees it as ctx's end.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	resp, err := h(ctx, req, trace)
	if err != nil {
		resp.Error = err.Error()
		resp.JobFault = fault.KindOf(err) == fault.KindJob
	}
	resp.Stopped = ctx.Err() != nil
	return resp
}

// Client starts the worker for the hooks.
type Client struct {
	// Path is the worker program.
	Path string
	// Trace receives the worker's output.
	Trace io.Writer
	// StopGrace is how long the worker gets after SIGTERM before it is
	// killed; it must cover stopping a container.
	StopGrace time.Duration
}

// DefaultPath is the worker next to the running stagehand.
func DefaultPath() string {
	self, err := os.Executable()
	if err != nil {
		return Program
	}
	return filepath.Join(filepath.Dir(self), Program)
}

// Call runs one request. When ctx ends, the worker gets SIGTERM, then
// SIGKILL after StopGrace. A failed operation comes back as an error
// carrying its fault kind; a stopped one as an error wrapping ctx's cause.
func (c Client) Call(ctx context.Context, req Request) (Response, error) {
	if _, err := os.Stat(c.Path); err != nil {
		return Response{}, fmt.Errorf("%s is not installed at %s: install it next to stagehand or set --worker: %w", Program, c.Path, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s request: %w", req.Op, err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return Response{}, err
	}
	defer pr.Close()
	cmd := exec.Command(c.Path)
	cmd.Stdin = bytes.NewReader(body)
	cmd.Stdout, cmd.Stderr = c.Trace, c.Trace
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	if err := cmd.Start(); err != nil {
		pw.Close()
		return Response{}, fmt.Errorf("start %s: %w", Program, err)
	}
	pw.Close()

	var resp Response
	decoded := make(chan error, 1)
	go func() { decoded <- json.NewDecoder(pr).Decode(&resp) }()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case werr = <-waited:
		case <-time.After(c.StopGrace):
			_ = cmd.Process.Kill()
			werr = <-waited
		}
	}
	if derr := <-decoded; derr != nil {
		if werr == nil {
			werr = derr
		}
		if ctx.Err() != nil {
			return resp, fmt.Errorf("%s stopped: %w", req.Op, context.Cause(ctx))
		}
		return resp, fmt.Errorf("%s %s gave no result: %w", Program, req.Op, werr)
	}
	if resp.Error != "" {
		err := errors.New(resp.Error)
		if resp.Stopped && ctx.Err() != nil {
			return resp, fmt.Errorf("%s stopped: %w", req.Op, context.Cause(ctx))
		}
		if resp.JobFault {
			return resp, fault.Job(err)
		}
		return resp, fault.System(err)
	}
	return resp, nil
}
