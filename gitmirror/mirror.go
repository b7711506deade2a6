// Package gitmirror keeps bare copies of the remote repositories that
// werf.yaml's git mappings name (git: - url: ...), one per project and URL
// on the runner host, and fetches the ref a mapping asks for.
//
// The copies are per project: a repository fetched with one project's
// credentials must not become readable to another project's build.
package gitmirror

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"gitlab.com/stagehand/stagehand/internal/pathname"
)

// Auth is how a fetch authenticates: HTTP basic credentials, sent only to
// Host (the job's GitLab: the job token reads the projects its user may
// read there, and nothing else should see it).
type Auth struct {
	Host, User, Password string
}

// Ref is what a mapping asks for: a commit, a tag, a branch, or (all
// empty) the remote's default branch.
type Ref struct {
	Commit, Tag, Branch string
}

func (r Ref) String() string {
	switch {
	case r.Commit != "":
		return "commit " + r.Commit
	case r.Tag != "":
		return "tag " + r.Tag
	case r.Branch != "":
		return "branch " + r.Branch
	}
	return "the default branch"
}

// Mirror is one project's copy of one remote repository.
type Mirror struct {
	// Dir is the bare repository.
	Dir string
	URL string
	// Auth, when its Host is the URL's host, authenticates the fetch.
	Auth Auth
}

// New is the mirror of rawURL below root, for project. URLs that would
// read the runner host's own files (file://, local paths) are refused, and
// so are ssh URLs: the runner holds no keys of the job's.
func New(root, project, rawURL string, auth Auth) (*Mirror, error) {
	if err := CheckURL(rawURL); err != nil {
		return nil, err
	}
	return &Mirror{Dir: filepath.Join(root, pathname.Dir(project), pathname.Dir(Redact(rawURL))+".git"), URL: rawURL, Auth: auth}, nil
}

// CheckURL says why a mapping's url: cannot be fetched, or nil.
func CheckURL(rawURL string) error {
	sshAddress := fmt.Errorf("url: %s is an ssh address; stagehand fetches remote repositories over https (the job token authenticates to this GitLab): use the https URL", Redact(rawURL))
	u, err := url.Parse(rawURL)
	switch {
	case err != nil || u.Scheme == "":
		if strings.Contains(rawURL, "@") && strings.Contains(rawURL, ":") {
			return sshAddress
		}
	case u.Scheme == "ssh" || u.Scheme == "git+ssh":
		return sshAddress
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("url: %s: the %s scheme is not allowed (only https and http: other schemes would read the runner host's files or run commands on it)", Redact(rawURL), u.Scheme)
	case u.Host != "":
		return nil
	}
	return fmt.Errorf("url: %q is not a repository URL: use https://HOST/PATH.git", Redact(rawURL))
}

// Redact is rawURL without a password, for traces and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Fetch brings ref from the remote into the mirror and answers its commit.
// Concurrent fetches of one mirror on this host take turns.
func (m *Mirror) Fetch(ctx context.Context, ref Ref) (string, error) {
	if err := os.MkdirAll(filepath.Dir(m.Dir), 0o700); err != nil {
		return "", err
	}
	unlock, err := lockFile(m.Dir + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(m.Dir, "HEAD")); err != nil {
		if _, err := m.git(ctx, "init", "--quiet", "--bare", m.Dir); err != nil {
			return "", err
		}
	}
	var refspecs []string
	local := ""
	switch {
	case ref.Commit != "":
		// A commit may be on any branch or tag: fetch them all (a server
		// need not serve a commit by its id alone).
		refspecs = []string{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}
		local = ref.Commit
	case ref.Tag != "":
		refspecs = []string{"+refs/tags/" + ref.Tag + ":refs/tags/" + ref.Tag}
		local = "refs/tags/" + ref.Tag
	case ref.Branch != "":
		refspecs = []string{"+refs/heads/" + ref.Branch + ":refs/heads/" + ref.Branch}
		local = "refs/heads/" + ref.Branch
	default:
		refspecs = []string{"+HEAD:refs/stagehand/default"}
		local = "refs/stagehand/default"
	}
	args := append([]string{"-C", m.Dir, "fetch", "--quiet", "--no-tags", "--prune", "--", m.URL}, refspecs...)
	if _, err := m.git(ctx, args...); err != nil {
		return "", fmt.Errorf("fetch %s of %s: %w", ref, Redact(m.URL), err)
	}
	out, err := m.git(ctx, "-C", m.Dir, "rev-parse", "--verify", "--quiet", local+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("%s of %s: not found after the fetch", ref, Redact(m.URL))
	}
	return strings.TrimSpace(out), nil
}

// git runs git with the credentials in its environment (never on the
// command line, where ps would show them) and no prompts.
func (m *Mirror) git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	env := append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GIT_CONFIG_NOSYSTEM=1")
	var cfg [][2]string
	// Never follow a redirect to another host with the credentials.
	cfg = append(cfg, [2]string{"http.followRedirects", "initial"})
	if u, err := url.Parse(m.URL); err == nil && m.Auth.Host != "" && m.Auth.Password != "" && u.Hostname() == m.Auth.Host {
		basic := base64.StdEncoding.EncodeToString([]byte(m.Auth.User + ":" + m.Auth.Password))
		cfg = append(cfg, [2]string{"http." + u.Scheme + "://" + u.Host + "/.extraHeader", "Authorization: Basic " + basic})
	}
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(cfg)))
	for i, kv := range cfg {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, kv[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, kv[1]))
	}
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if m.Auth.Password != "" {
			msg = strings.ReplaceAll(msg, m.Auth.Password, "[MASKED]")
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && msg != "" {
			return "", errors.New(msg)
		}
		return "", err
	}
	return string(out), nil
}

// lockFile holds an exclusive lock on path until the answered func runs.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
