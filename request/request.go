// Package request holds what stagehand's entry points ask of the packages
// that do the work: one type per operation (Build, Deploy, Dismiss,
// Cleanup, StagesSync, and the job-container operations), built once per
// entry point — from a job's hooks (package executor) or from an
// operator's shell (package cli) — and handed unchanged to the package
// that does it (stages, deploy, cleanup, jobcontainer), through
// stagehand-worker (package worker carries them as JSON).
//
// The types are plain data with the few pure rules every entry point must
// apply alike (the synchronization spec, the project's name in locks, the
// ref a build publishes). The hooks link this package, so it imports
// nothing heavy.
package request

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Engine is the Docker Engine an operation uses and the registry logins
// it uses there.
type Engine struct {
	// Host is the engine's address (unix:///var/run/docker.sock).
	Host string
	// Network is the network mode of the containers it starts ("" for the
	// engine's default).
	Network string
	// DockerConfig is a DOCKER_CONFIG directory holding registry logins
	// (the job's private one, or the operator's).
	DockerConfig string
}

// Cluster is the Kubernetes cluster an operation talks to.
type Cluster struct {
	// Kubeconfig is a kubeconfig file; "" means $KUBECONFIG, else the
	// pod's service account.
	Kubeconfig string
	// Context is the kubeconfig's context to use (KUBE_CONTEXT); "" its
	// current one.
	Context string
	// ScanContexts are the further contexts cleanup looks for images in
	// use in (the runner's --in-use-contexts; "all" is every context).
	ScanContexts []string
}

// Locks is where an operation takes its locks and how it names itself to
// those who wait for them.
type Locks struct {
	Sync Synchronization
	// Project is the project's name in lock names (see ProjectName).
	Project string
	// Dir holds the file locks of :local.
	Dir string
	// Cluster holds the leases of kubernetes://NAMESPACE.
	Cluster Cluster
	// Holder tells waiters who holds a lock (see Holder).
	Holder string
}

// Holder describes the taker of a lock for those who wait: the host, then
// who on it ("job 42", "`stagehand build` by pid 7").
func Holder(who string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("host %s, %s", host, who)
}

// ProjectName is a project's name in locks, stage labels and the :local
// storage, from its GitLab path (group/name, as CI_PROJECT_PATH) or a
// name an operator gives: GitLab's own slug of it, as CI_PROJECT_PATH_SLUG
// (lower-cased, every character but a-z and 0-9 made '-', at most 63
// characters, no '-' at either end). Jobs, shell builds and shell
// cleanups of one project name it alike, so that a cleanup's exclusive
// project lock keeps every build out.
func ProjectName(path string) string {
	b := []byte(strings.ToLower(path))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.Trim(string(b), "-")
}

// ParseList reads a comma-separated list (STAGEHAND_CLEANUP_NAMESPACES,
// --namespaces), leaving out blanks.
func ParseList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Ref is the git ref a build publishes: a branch or a tag (not both).
type Ref struct {
	Branch string `json:",omitempty"`
	Tag    string `json:",omitempty"`
}

// Name is the tag, else the branch.
func (r Ref) Name() string {
	if r.Tag != "" {
		return r.Tag
	}
	return r.Branch
}

// RefFromCI is the pipeline's ref, as GitLab gives it to a job: the tag of
// a tag pipeline (CI_COMMIT_TAG), else the branch (CI_COMMIT_BRANCH, else
// CI_COMMIT_REF_NAME). ok is false when the variables name none. A branch
// pipeline on a tagged commit publishes the branch, as werf did.
func RefFromCI(vars map[string]string) (r Ref, ok bool) {
	if t := vars["CI_COMMIT_TAG"]; t != "" {
		return Ref{Tag: t}, true
	}
	if b := vars["CI_COMMIT_BRANCH"]; b != "" {
		return Ref{Branch: b}, true
	}
	if b := vars["CI_COMMIT_REF_NAME"]; b != "" {
		return Ref{Branch: b}, true
	}
	return Ref{}, false
}

// ParseDuration reads a Go duration ("5m") or plain seconds ("300"), as
// werf took timeouts; it must be positive.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := time.ParseDuration(s + "s")
		if nerr != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 300s, 5m)", s)
		}
		d = n
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}
