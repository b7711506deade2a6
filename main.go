// Command stagehand is a GitLab Runner custom executor: `stagehand hook
// ...` are the four hooks gitlab-runner calls; the other commands are for
// operators (see package cli).
package main

import (
	"os"

	"gitlab.com/stagehand/stagehand/cli"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(cli.Main(version, os.Args[1:], os.Stdout, os.Stderr))
}
