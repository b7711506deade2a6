package executor

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/worker"
)

// ShellBuild is `stagehand build` from an operator's shell: the same build
// as a job's, with the ref read from the checkout instead of CI_*.
type ShellBuild struct {
	Dir           string
	ImagesRepo    string
	StagesStorage string
	TagStrategy   string
	Project       string
	Settings      Settings
}

// Request is the worker's build request.
func (b ShellBuild) Request() (*worker.Build, error) {
	if b.ImagesRepo == "" {
		return nil, fmt.Errorf("no images repository: give --repo (or set STAGEHAND_IMAGES_REPO or CI_REGISTRY_IMAGE)")
	}
	stages := b.StagesStorage
	if stages == "" {
		stages = b.ImagesRepo + "/stages"
	}
	commit, err := gitOut(b.Dir, "rev-parse", "HEAD")
	if err != nil {
		return nil, fmt.Errorf("%s is not a git checkout with a commit: %w", b.Dir, err)
	}
	when, _ := gitOut(b.Dir, "log", "-1", "--format=%cI")
	branch, _ := gitOut(b.Dir, "symbolic-ref", "--quiet", "--short", "HEAD")
	tag, _ := gitOut(b.Dir, "describe", "--tags", "--exact-match", "HEAD")
	ref := branch
	if tag != "" {
		ref, branch = tag, ""
	}
	project := b.Project
	if project == "" {
		project = path.Base(b.ImagesRepo)
	}
	vars := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	host, _ := os.Hostname()
	strategy := b.TagStrategy
	if strategy == "" {
		strategy = gitlab.TagStagesSignature
	}
	sync := b.Settings.Synchronization
	if sync == "none" {
		sync = ""
	}
	return &worker.Build{
		ProjectDir: b.Dir, Vars: vars, Project: project,
		StagesRepo: stages, ImagesRepo: b.ImagesRepo,
		Commit: commit, CommitTime: when, Branch: branch, GitTag: tag,
		RefSlug:     gitlab.Slug(ref, gitlab.TagSlugLimit),
		TagStrategy: strategy, Network: b.Settings.DockerNetwork,
		Synchronization: sync, Kubeconfig: b.Settings.Kubeconfig,
		LocksDir: b.Settings.LocksDir, BlockDir: b.Settings.BlockDir,
		Holder: fmt.Sprintf("host %s, `stagehand build` by pid %d", host, os.Getpid()),
	}, nil
}

func gitOut(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	return strings.TrimSpace(string(out)), err
}
