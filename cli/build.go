package cli

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// buildFlags are `stagehand build`'s own.
type buildFlags struct {
	dir, repo, stagesStorage, tagStrategy, project string
	// debug shows the engine's own output of each step.
	debug bool
}

func buildCommand() *cobra.Command {
	s := defaultSettings()
	var b buildFlags
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build and publish the project's images from a checkout, as a build job does",
		Long: "Builds the images of stagehand.yaml or werf.yaml in --dir as stages in the stages storage " +
			"and publishes them to --repo. The build's progress goes to stderr; the published references " +
			"go to stdout as export lines, for `eval \"$(stagehand build ...)\"`. Registry logins come from " +
			"DOCKER_CONFIG (docker login). The ref published is the pipeline's when CI_COMMIT_TAG, " +
			"CI_COMMIT_BRANCH or CI_COMMIT_REF_NAME is set (as in a job), else the checkout's: its branch, " +
			"or the tag a detached HEAD is at.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The checkout is read (git) while the worker starts.
			res, err := callPrepared[request.Build, request.BuildResult](cmd, s, func() (request.Build, error) {
				return shellBuildRequest(s, b)
			})
			if err != nil {
				return err
			}
			return printExports(cmd, res)
		},
	}
	addBuildFlags(cmd.Flags(), s, &b)
	return cmd
}

// addBuildFlags are the flags of the commands that build: build, deploy
// and render.
func addBuildFlags(f *pflag.FlagSet, s *executor.Settings, b *buildFlags) {
	f.StringVar(&b.dir, "dir", ".", "the project's checkout")
	f.StringVar(&b.repo, "repo", firstEnv(gitlab.VarImagesRepo, "CI_REGISTRY_IMAGE"), "images repository to publish to")
	f.StringVar(&b.stagesStorage, "stages-storage", "", "stages storage: a repository (default REPO/stages) or :local")
	f.StringVar(&b.tagStrategy, "tag-strategy", gitlab.TagStagesSignature, "stages-signature or tag-or-branch")
	f.StringVar(&b.project, "project", "", "the project's GitLab path (group/name), which names its locks (default: REPO's path)")
	f.BoolVar(&b.debug, "debug", false, "show the Docker Engine's own output of each build step")
	engineFlags(f, s)
	buildDirFlags(f, s)
	workerFlags(f, s)
	syncFlags(f, s)
	localStagesFlags(f, s)
	clusterFlags(f, s)
}

// shellBuildRequest is the build of an operator's checkout: the same
// request a job's build makes, with what a job learns from CI_* read from
// the checkout.
func shellBuildRequest(s *executor.Settings, b buildFlags) (request.Build, error) {
	if b.repo == "" {
		return request.Build{}, fmt.Errorf("no images repository: give --repo (or set STAGEHAND_IMAGES_REPO or CI_REGISTRY_IMAGE)")
	}
	switch b.tagStrategy {
	case gitlab.TagStagesSignature, gitlab.TagOrBranch:
	default:
		return request.Build{}, fmt.Errorf("--tag-strategy %q: use %s or %s", b.tagStrategy, gitlab.TagStagesSignature, gitlab.TagOrBranch)
	}
	stages := b.stagesStorage
	if stages == "" {
		stages = b.repo + "/stages"
	}
	// One git call says all of HEAD that a build needs: every process
	// started is a noticeable part of an idle build.
	head, err := gitOut(b.dir, "log", "-1", "--decorate=short", "--format=%H%n%cI%n%D", "HEAD")
	if err != nil {
		return request.Build{}, fmt.Errorf("%s is not a git checkout with a commit: %w", b.dir, err)
	}
	commit, rest, _ := strings.Cut(head, "\n")
	when, decorations, _ := strings.Cut(rest, "\n")
	vars := environ()
	ref, ok := request.RefFromCI(vars)
	if !ok {
		branch, tags := parseDecorations(decorations)
		tag := ""
		switch {
		case len(tags) == 1:
			tag = tags[0]
		case len(tags) > 1 && branch == "":
			// Several tags at HEAD: the one git describe picks.
			tag, _ = gitOut(b.dir, "describe", "--tags", "--exact-match", "HEAD")
		}
		ref = checkoutRef(branch, tag)
	}
	project := b.project
	if project == "" {
		project = repositoryPath(b.repo)
	}
	l, err := locks(s, request.ProjectName(project), "build")
	if err != nil {
		return request.Build{}, err
	}
	return request.Build{
		Dir: b.dir, Vars: vars, Project: l.Project,
		StagesStorage: stages, ImagesRepo: b.repo,
		Commit: commit, CommitTime: when, Ref: ref,
		RefSlug:     gitlab.DockerTag(ref.Name()),
		TagStrategy: b.tagStrategy,
		Engine:      engine(s), Locks: l, BlockDir: s.BlockDir,
		Mounts: s.Mounts(), Debug: b.debug,
	}, nil
}

// checkoutRef is the ref of a checkout without CI variables: its branch;
// the tag HEAD is at only when HEAD is detached (a tag's checkout).
func checkoutRef(branch, tagAtHead string) request.Ref {
	if branch != "" {
		return request.Ref{Branch: branch}
	}
	return request.Ref{Tag: tagAtHead}
}

// parseDecorations reads git's %D of HEAD ("HEAD -> main, tag: v1,
// origin/main"; "HEAD, tag: v1" when detached): the branch checked out
// and the tags at HEAD.
func parseDecorations(d string) (branch string, tags []string) {
	for _, item := range strings.Split(d, ", ") {
		if b, ok := strings.CutPrefix(item, "HEAD -> "); ok {
			branch = b
		} else if t, ok := strings.CutPrefix(item, "tag: "); ok {
			tags = append(tags, t)
		}
	}
	return branch, tags
}

// repositoryPath is a repository's path without its registry host:
// registry.example.com/group/project → group/project.
func repositoryPath(repo string) string {
	host, rest, ok := strings.Cut(repo, "/")
	if ok && (strings.ContainsAny(host, ".:") || host == "localhost") {
		return rest
	}
	return repo
}

// environ is the process's environment as a map.
func environ() map[string]string {
	vars := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

func gitOut(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	return strings.TrimSpace(string(out)), err
}
