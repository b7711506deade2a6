// Command stagehand-worker does the stagehand hooks' heavy work (the Docker
// Engine for job images, builds) in a process of its own, so that the hooks, which
// gitlab-runner starts for every stage of every job, stay quick to start.
// It is started by stagehand, never by hand: see package worker.
package main

import (
	"os"

	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/worker"
	"gitlab.com/stagehand/stagehand/worker/docker"
)

func main() {
	handlers := docker.Handlers()
	for op, h := range stages.Handlers() {
		handlers[op] = h
	}
	os.Exit(worker.Serve(handlers, os.Stdin, os.Stderr))
}
