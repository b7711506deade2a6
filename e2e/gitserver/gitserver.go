// Package gitserver is a smart-HTTP git server for end-to-end tests: it
// serves the bare repositories below one directory with `git http-backend`
// (through net/http/cgi), so that gitlab-runner's get_sources can clone and
// fetch them like a GitLab project.
//
// Like a private GitLab project it asks for HTTP basic credentials (a 401
// challenge, which is what makes git send the user and password embedded in
// the clone URL) but accepts any; the credentials seen are recorded.
package gitserver

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
)

// Repo is a commit the server holds, as a job's repository: URL is the
// clone URL without credentials, Ref the branch ("main") or tag, SHA the
// commit (for a tag, the commit it points to). It is coordinator.Repo, so
// &repo goes straight into coordinator.Job.Repo.
type Repo = coordinator.Repo

// Auth is one set of basic-auth credentials a client sent.
type Auth struct {
	User, Password, Path string
}

// Option configures a Server.
type Option func(*Server)

// AllowAnonymous serves requests without credentials instead of answering
// them with a 401 challenge.
func AllowAnonymous() Option {
	return func(s *Server) { s.anonymous = true }
}

// Server serves the bare repositories <dir>/<name>.git.
type Server struct {
	dir       string
	git       string
	anonymous bool
	ln        net.Listener
	srv       *http.Server
	url       string

	mu       sync.Mutex
	auths    []Auth
	requests []string
	commits  map[string]int // commits made per repository, for dates
}

// New serves the bare repositories below dir on 127.0.0.1 with a random
// port. dir is created if needed.
func New(dir string, opts ...Option) (*Server, error) {
	git, err := exec.LookPath("git")
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{dir: dir, git: git, commits: map[string]int{}}
	for _, o := range opts {
		o(s)
	}
	backend := &cgi.Handler{
		Path: git,
		Args: []string{"http-backend"},
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + dir,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=" + os.DevNull,
		},
		InheritEnv: []string{"PATH"},
	}
	s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.url = "http://" + s.ln.Addr().String()
	s.srv = &http.Server{Handler: s.auth(backend)}
	go func() { _ = s.srv.Serve(s.ln) }()
	return s, nil
}

// URL is the server's base URL; a repository is at URL()/<name>.git.
func (s *Server) URL() string { return s.url }

// Dir is the directory holding the bare repositories.
func (s *Server) Dir() string { return s.dir }

// Close stops the server.
func (s *Server) Close() { _ = s.srv.Close() }

// Auths lists the basic-auth credentials received, in order.
func (s *Server) Auths() []Auth {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Auth(nil), s.auths...)
}

// Users lists the distinct basic-auth user names received, sorted.
func (s *Server) Users() []string {
	seen := map[string]bool{}
	var users []string
	for _, a := range s.Auths() {
		if !seen[a.User] {
			seen[a.User] = true
			users = append(users, a.User)
		}
	}
	sort.Strings(users)
	return users
}

// Requests is the log of requests as "METHOD path?query" and status
// "401" when challenged.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := r.Method + " " + r.URL.RequestURI()
		user, pass, ok := r.BasicAuth()
		s.mu.Lock()
		if ok {
			s.auths = append(s.auths, Auth{User: user, Password: pass, Path: r.URL.Path})
		}
		if !ok && !s.anonymous {
			line += " 401"
		}
		s.requests = append(s.requests, line)
		s.mu.Unlock()
		if !ok && !s.anonymous {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
			http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)

func (s *Server) repoDir(name string) (string, error) {
	if !validName.MatchString(name) || strings.Contains(name, "..") || strings.HasSuffix(name, ".git") {
		return "", fmt.Errorf("gitserver: bad repository name %q", name)
	}
	return filepath.Join(s.dir, filepath.FromSlash(name)+".git"), nil
}

// CreateRepo makes the bare repository <name>.git (name may contain '/')
// with one commit on branch main holding files (path -> content; a content
// starting with "#!" is made executable). Author, committer and dates are
// fixed, so the same files give the same SHA.
func (s *Server) CreateRepo(name string, files map[string]string) (Repo, error) {
	dir, err := s.repoDir(name)
	if err != nil {
		return Repo{}, err
	}
	if _, err := os.Stat(dir); err == nil {
		return Repo{}, fmt.Errorf("gitserver: repository %q exists", name)
	}
	if _, err := s.run(dir, nil, "init", "--quiet", "--bare", "--initial-branch=main", dir); err != nil {
		return Repo{}, err
	}
	return s.Commit(name, files)
}

// Commit adds a commit on main that writes files (other files stay as they
// are) and returns the new head.
func (s *Server) Commit(name string, files map[string]string) (Repo, error) {
	dir, err := s.repoDir(name)
	if err != nil {
		return Repo{}, err
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		return Repo{}, fmt.Errorf("gitserver: no repository %q", name)
	}
	work, err := os.MkdirTemp("", "gitserver-work-")
	if err != nil {
		return Repo{}, err
	}
	defer os.RemoveAll(work)

	s.mu.Lock()
	n := s.commits[name]
	s.commits[name] = n + 1
	s.mu.Unlock()
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Minute).Format(time.RFC3339)
	env := []string{
		"GIT_AUTHOR_NAME=Stagehand Tests", "GIT_AUTHOR_EMAIL=stagehand@example.com", "GIT_AUTHOR_DATE=" + when,
		"GIT_COMMITTER_NAME=Stagehand Tests", "GIT_COMMITTER_EMAIL=stagehand@example.com", "GIT_COMMITTER_DATE=" + when,
	}

	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		clean := filepath.Clean(filepath.FromSlash(p))
		if filepath.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "..") || clean == ".git" || strings.HasPrefix(clean, ".git"+string(filepath.Separator)) {
			return Repo{}, fmt.Errorf("gitserver: bad file path %q", p)
		}
		full := filepath.Join(work, clean)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return Repo{}, err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(files[p], "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(files[p]), mode); err != nil {
			return Repo{}, err
		}
	}
	gw := []string{"--git-dir=" + dir, "--work-tree=" + work}
	if len(paths) > 0 {
		if _, err := s.run(work, env, append(gw, append([]string{"add", "--"}, paths...)...)...); err != nil {
			return Repo{}, err
		}
	}
	msg := fmt.Sprintf("commit %d", n+1)
	if _, err := s.run(work, env, append(gw, "commit", "--quiet", "--allow-empty", "-m", msg)...); err != nil {
		return Repo{}, err
	}
	return s.head(name, dir)
}

// Tag makes a lightweight tag at the head of main.
func (s *Server) Tag(name, tag string) (Repo, error) {
	dir, err := s.repoDir(name)
	if err != nil {
		return Repo{}, err
	}
	if _, err := s.run(dir, nil, "--git-dir="+dir, "tag", tag, "main"); err != nil {
		return Repo{}, err
	}
	sha, err := s.run(dir, nil, "--git-dir="+dir, "rev-parse", "refs/tags/"+tag+"^{commit}")
	if err != nil {
		return Repo{}, err
	}
	return Repo{URL: s.url + "/" + name + ".git", Ref: tag, SHA: sha, Tag: true}, nil
}

func (s *Server) head(name, dir string) (Repo, error) {
	sha, err := s.run(dir, nil, "--git-dir="+dir, "rev-parse", "refs/heads/main")
	if err != nil {
		return Repo{}, err
	}
	return Repo{URL: s.url + "/" + name + ".git", Ref: "main", SHA: sha}, nil
}

// run runs git with a configuration independent of the machine's.
func (s *Server) run(dir string, env []string, args ...string) (string, error) {
	args = append([]string{"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "core.autocrlf=false"}, args...)
	cmd := exec.Command(s.git, args...)
	cmd.Dir = dir
	if _, err := os.Stat(dir); err != nil {
		cmd.Dir = s.dir
	}
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull, "LC_ALL=C")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("gitserver: git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}
