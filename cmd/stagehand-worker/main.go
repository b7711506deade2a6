// Command stagehand-worker does the heavy work of stagehand's hooks and
// operator commands (the Docker Engine, registries, the Kubernetes API)
// in a process of its own, so that the hooks, which gitlab-runner starts
// for every stage of every job, stay quick to start. Deploys and cleanups
// are stagehand-deploy's (Helm, the GitLab API), reading configs
// stagehand-config's. It is started
// by stagehand, never by hand: see package worker for the protocol, and
// ops.go for what each operation calls.
package main

import (
	"os"

	"github.com/google/go-containerregistry/pkg/logs"

	"gitlab.com/stagehand/stagehand/worker"
)

func main() {
	// go-containerregistry says when it retries a registry request; the
	// trace (stderr) is where a job's people look for why a build is slow.
	logs.Warn.SetOutput(os.Stderr)
	logs.Warn.SetPrefix("Registry: ")
	logs.Warn.SetFlags(0)
	os.Exit(worker.Serve(handlers(), os.Stdin, os.Stderr))
}
