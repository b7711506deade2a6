package stages

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/internal/pathname"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/stagesrepo"
	"gitlab.com/stagehand/stagehand/trace"
)

// A shell stage runs as werf ran it: a container of the parent stage,
// the image's git files brought up to date first (copied in, not run),
// its mounts bound, its commands under `sh -e` as root; then the
// container is committed with the parent's config and the stage's labels,
// so nothing of how it ran (entrypoint, user) leaks into the image. The
// engine's own steps never reach the trace: only what the commands print,
// each line marked as the stage's.

// failedMark starts the line a failing stage's script prints to say which
// command failed; the trace does not show it.
const failedMark = "##stagehand-failed-command## "

// shellScript is how a shell stage's commands run: under sh -e, after
// removing the git files the stage's patch deletes; a failing command is
// named on a line of its own (failedMark).
func shellScript(commands, remove []string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	b.WriteString(`trap 'rc=$?; if [ "$rc" -ne 0 ] && [ -n "${__stagehand_cmd:-}" ]; then printf '"'"'%s%s\n'"'"' "` + failedMark + `" "$__stagehand_cmd" >&2; fi' EXIT` + "\n")
	for _, p := range remove {
		b.WriteString("rm -rf -- " + shellQuote(p) + "\n")
	}
	for _, c := range commands {
		b.WriteString("__stagehand_cmd=" + shellQuote(oneLine(c)) + "\n")
		b.WriteString(c + "\n")
	}
	b.WriteString("__stagehand_cmd=\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// oneLine is a command as the failure message quotes it.
func oneLine(c string) string {
	c = strings.TrimSpace(c)
	if i := strings.IndexByte(c, '\n'); i >= 0 {
		c = c[:i] + " …"
	}
	return c
}

// keepLines is how many of a failing stage's last output lines its error
// quotes.
const keepLines = 20

// runShellStage builds a shell stage on parent (a reference the engine
// has) and answers the committed image.
func (b *Builder) runShellStage(ctx context.Context, e *Engine, s *plan.Stage, parent string, labels map[string]string) (built, error) {
	return b.runStage(ctx, e, s, parent, labels, s.Commands, s.SyncGit)
}

// runStage runs commands (none for a :local git stage) in a container of
// parent, the image's git files brought up to date first when syncGit.
func (b *Builder) runStage(ctx context.Context, e *Engine, s *plan.Stage, parent string, labels map[string]string, commands []string, syncGit bool) (built, error) {
	info, ok, err := e.Inspect(ctx, parent)
	if err == nil && !ok {
		err = fmt.Errorf("no image %s on %s", parent, e.Host())
	}
	if err != nil {
		return built{}, fault.System(err)
	}
	binds, err := b.mountBinds(s.Image)
	if err != nil {
		return built{}, err
	}
	// The git files first: their owners are looked up in the parent.
	var remove []string
	var gitFiles *tempLayer
	if syncGit {
		owners := Owners{}
		if needsOwners(s.Image) {
			if owners, err = engineOwners(ctx, e, parent); err != nil {
				return built{}, fault.System(err)
			}
		}
		if gitFiles, remove, err = b.gitPatchTar(s, info.Labels, labels, owners); err != nil {
			return built{}, err
		}
	}
	// The commands run as root, as werf ran them, whoever the image's
	// user is.
	user := ""
	if info.User != "" && info.User != "root" && info.User != "0" && info.User != "0:0" {
		user = "0"
	}
	env := info.Env
	if len(s.Dependencies) > 0 {
		values, err := b.dependencyValues(ctx, e, s)
		if err != nil {
			return built{}, err
		}
		env = append([]string(nil), env...)
		for _, d := range s.Dependencies {
			if d.TargetEnv != "" {
				env = append(env, d.TargetEnv+"="+values[d.TargetEnv])
			}
		}
	}
	c, err := e.Create(ctx, docker.ContainerSpec{
		Name:  fmt.Sprintf("stagehand-stage-%s-%d", s.Signature[:12], time.Now().UnixNano()%1e9),
		Image: parent,
		// The script is the entrypoint and the parent's command its
		// arguments, which the script ignores: what the engine keeps of
		// the container's command is the image's own.
		Entrypoint:  []string{"/bin/sh", "-c", shellScript(commands, remove), "stagehand-stage"},
		Cmd:         info.Cmd,
		Env:         env,
		User:        user,
		WorkingDir:  info.WorkingDir,
		Labels:      map[string]string{stagesrepo.LabelStage: string(s.Name)},
		Binds:       binds,
		Network:     e.Network,
		StopTimeout: 10 * time.Second,
	})
	if err != nil {
		return built{}, fault.System(err)
	}
	// The container is removed while the build goes on (the engine takes
	// tens of milliseconds); Build waits for it.
	b.background.Add(1)
	defer func() {
		go func() {
			defer b.background.Done()
			c.Remove(ctx)
		}()
	}()
	if gitFiles != nil {
		r, err := gitFiles.Reader()
		if err != nil {
			return built{}, fault.System(err)
		}
		err = c.CopyTo(ctx, "/", r)
		r.Close()
		if err != nil {
			return built{}, fault.System(err)
		}
	}

	out := trace.NewLines(b.Trace, keepLines)
	var failed string
	out.Drop = func(line string) bool {
		if cmd, ok := strings.CutPrefix(line, failedMark); ok {
			failed = cmd
			return true
		}
		return false
	}
	code, err := c.Wait(ctx, out, out)
	out.Flush()
	if err != nil {
		return built{}, fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	if code != 0 {
		return built{}, fault.Job(&StageFailure{Stage: s.String(), Command: failed, Code: code, Last: out.Last()})
	}
	id, err := c.Commit(ctx, docker.ImageConfig{
		User: info.User, Env: info.Env, Entrypoint: info.Entrypoint, Cmd: info.Cmd, WorkingDir: info.WorkingDir,
		Labels: mergeLabels(info.Labels, labels),
	})
	if err != nil {
		return built{}, fault.System(fmt.Errorf("stage %s: %w", s, err))
	}
	return built{engineID: id, engine: e}, nil
}

// StageFailure is a stage whose command failed: the job's fault, told
// with the command and its last lines so that the cause is at the end of
// the trace.
type StageFailure struct {
	Stage   string
	Command string
	Code    int
	// Message is the engine's, for a Dockerfile's step.
	Message string
	Last    []string
}

func (f *StageFailure) Error() string {
	var b strings.Builder
	switch {
	case f.Message != "":
		fmt.Fprintf(&b, "stage %s failed: %s", f.Stage, f.Message)
	case f.Command != "":
		fmt.Fprintf(&b, "stage %s failed: `%s` exited with %d", f.Stage, f.Command, f.Code)
	default:
		fmt.Fprintf(&b, "stage %s failed: a command exited with %d", f.Stage, f.Code)
	}
	if len(f.Last) > 0 {
		fmt.Fprintf(&b, "; its last lines:")
		for _, l := range f.Last {
			b.WriteString("\n" + trace.Prefix + l)
		}
	}
	return b.String()
}

// gitPatchTar writes the git files that differ from the parent's
// listings, with their owners, into a tar rooted at / (nil when none
// differ), puts the new listings into labels and answers the paths the
// script deletes.
func (b *Builder) gitPatchTar(s *plan.Stage, parentLabels, labels map[string]string, owners Owners) (*tempLayer, []string, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	var remove []string
	total := 0
	for i := range s.Image.Git {
		n, listing, rm, err := b.mappingPatch(tw, s, i, parentLabels, false, owners)
		if err != nil {
			return nil, nil, err
		}
		total += n
		remove = append(remove, rm...)
		labels[stagesrepo.GitListingLabel(i)] = listing
	}
	if err := tw.Close(); err != nil {
		return nil, nil, fault.System(err)
	}
	if total == 0 {
		return nil, remove, nil
	}
	return tl, remove, nil
}

// needsOwners tells whether an image's git mappings name owners the
// image must look up.
func needsOwners(img *config.Image) bool {
	for _, m := range img.Git {
		if needsLookup(m.Owner, m.Group) {
			return true
		}
	}
	return false
}

// engineOwners reads the users and groups of an image the engine has,
// from a container created (not started) for it.
func engineOwners(ctx context.Context, e *Engine, ref string) (Owners, error) {
	c, err := e.Create(ctx, docker.ContainerSpec{Name: fmt.Sprintf("stagehand-owners-%d", time.Now().UnixNano()), Image: ref, Entrypoint: []string{"true"}})
	if err != nil {
		return Owners{}, err
	}
	defer c.Remove(ctx)
	passwd, _, err := c.ReadFile(ctx, "/etc/passwd")
	if err != nil {
		return Owners{}, err
	}
	group, _, err := c.ReadFile(ctx, "/etc/group")
	if err != nil {
		return Owners{}, err
	}
	return ParseOwners(passwd, group), nil
}

// mountBinds are the bind mounts of an image's mounts: a build_dir is the
// project's directory below the runner's mounts directory (kept between
// builds: a cache), a tmp_dir one of this build's, a fromPath a host path
// the runner's settings allow.
func (b *Builder) mountBinds(img *config.Image) ([]string, error) {
	var binds []string
	for _, m := range img.Mounts {
		var host string
		switch m.Kind {
		case config.MountBuildDir:
			if b.Mounts.Dir == "" {
				return nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: m.Line, Msg: "mount: from: build_dir needs the runner's --mounts-dir"})
			}
			host = filepath.Join(b.Mounts.Dir, pathname.Dir(b.Project), pathname.Dir(m.To))
		case config.MountTmpDir:
			dir, err := b.tmpDir()
			if err != nil {
				return nil, fault.System(err)
			}
			host = filepath.Join(dir, pathname.Dir(img.Name), pathname.Dir(m.To))
		case config.MountHostPath:
			p, err := allowedHostPath(m.FromPath, b.Mounts.AllowedPaths)
			if err != nil {
				return nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: m.Line, Msg: err.Error()})
			}
			host = p
		}
		if err := os.MkdirAll(host, 0o755); err != nil {
			return nil, fault.System(fmt.Errorf("mount %s: %w", m.To, err))
		}
		binds = append(binds, host+":"+m.To)
	}
	return binds, nil
}

// allowedHostPath is fromPath when the runner allows it: a path equal to
// or below one of allowed. A job may not mount what the runner did not
// choose.
func allowedHostPath(fromPath string, allowed []string) (string, error) {
	if !filepath.IsAbs(fromPath) {
		return "", fmt.Errorf("mount: fromPath: %s must be an absolute path of the runner host", fromPath)
	}
	p := filepath.Clean(fromPath)
	for _, a := range allowed {
		a = filepath.Clean(a)
		if p == a || strings.HasPrefix(p, a+string(filepath.Separator)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("mount: fromPath: %s is not among the host paths this runner allows (its --allowed-mount-paths: %s)", fromPath, orNone(allowed))
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
