package gitserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func newServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s, err := New(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// git runs the git CLI isolated from the machine's configuration.
func git(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := git(t, dir, args...)
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return out
}

func withCreds(url, user, pass string) string {
	return strings.Replace(url, "http://", "http://"+user+":"+pass+"@", 1)
}

func TestCloneAndShallowClone(t *testing.T) {
	s := newServer(t)
	files := map[string]string{"README.md": "hello\n", "scripts/run.sh": "#!/bin/sh\necho run\n"}
	r1, err := s.CreateRepo("group/sample", files)
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.SHA) != 40 || r1.Ref != "main" || r1.URL != s.URL()+"/group/sample.git" {
		t.Fatalf("repo %+v", r1)
	}

	// Same files, same SHA: commits are deterministic.
	again, err := s.CreateRepo("other", files)
	if err != nil {
		t.Fatal(err)
	}
	if again.SHA != r1.SHA {
		t.Errorf("SHA %s != %s", again.SHA, r1.SHA)
	}
	if _, err := s.CreateRepo("other", files); err == nil {
		t.Error("CreateRepo over an existing repository succeeded")
	}

	tmp := t.TempDir()
	mustGit(t, tmp, "clone", "--quiet", withCreds(r1.URL, "gitlab-ci-token", "glcbt-abc"), "c1")
	c1 := filepath.Join(tmp, "c1")
	if got := mustGit(t, c1, "rev-parse", "HEAD"); got != r1.SHA {
		t.Errorf("HEAD %s, want %s", got, r1.SHA)
	}
	if b, _ := os.ReadFile(filepath.Join(c1, "README.md")); string(b) != "hello\n" {
		t.Errorf("README.md = %q", b)
	}
	if fi, err := os.Stat(filepath.Join(c1, "scripts/run.sh")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("run.sh: %v %v", fi, err)
	}
	if u := s.Users(); len(u) != 1 || u[0] != "gitlab-ci-token" {
		t.Errorf("users %v", u)
	}
	if a := s.Auths(); len(a) == 0 || a[0].Password != "glcbt-abc" {
		t.Errorf("auths %+v", a)
	}

	r2, err := s.Commit("group/sample", map[string]string{"second.txt": "two\n"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.SHA == r1.SHA {
		t.Fatal("second commit has the first SHA")
	}
	mustGit(t, tmp, "clone", "--quiet", "--depth", "1", withCreds(r1.URL, "u", "p"), "c2")
	c2 := filepath.Join(tmp, "c2")
	if got := mustGit(t, c2, "rev-parse", "HEAD"); got != r2.SHA {
		t.Errorf("HEAD %s, want %s", got, r2.SHA)
	}
	if n := mustGit(t, c2, "rev-list", "--count", "HEAD"); n != "1" {
		t.Errorf("shallow clone has %s commits", n)
	}
	for _, f := range []string{"README.md", "second.txt", "scripts/run.sh"} {
		if _, err := os.Stat(filepath.Join(c2, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	// Fetch like the runner: by refspec, then check out the SHA.
	c3 := filepath.Join(tmp, "c3")
	mustGit(t, tmp, "init", "--quiet", c3)
	mustGit(t, c3, "fetch", "--quiet", "--depth", "5", withCreds(r1.URL, "gitlab-ci-token", "t"),
		"+refs/heads/main:refs/remotes/origin/main")
	mustGit(t, c3, "checkout", "--quiet", "-f", r1.SHA)

	tag, err := s.Tag("group/sample", "v1.0")
	if err != nil {
		t.Fatal(err)
	}
	if !tag.Tag || tag.Ref != "v1.0" || tag.SHA != r2.SHA {
		t.Errorf("tag %+v", tag)
	}
	if out := mustGit(t, tmp, "ls-remote", withCreds(r1.URL, "u", "p"), "refs/tags/v1.0"); !strings.HasPrefix(out, r2.SHA) {
		t.Errorf("ls-remote: %q", out)
	}
}

func TestAuthChallenge(t *testing.T) {
	s := newServer(t)
	r, err := s.CreateRepo("p", map[string]string{"a": "a"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := git(t, t.TempDir(), "ls-remote", r.URL); err == nil {
		t.Fatalf("anonymous ls-remote succeeded: %s", out)
	}
	if reqs := s.Requests(); len(reqs) == 0 || !strings.HasSuffix(reqs[0], " 401") {
		t.Errorf("requests %v", reqs)
	}

	anon := newServer(t, AllowAnonymous())
	r, err = anon.CreateRepo("p", map[string]string{"a": "a"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := git(t, t.TempDir(), "ls-remote", r.URL); err != nil || !strings.Contains(out, r.SHA) {
		t.Fatalf("anonymous ls-remote: %v %s", err, out)
	}
}

func TestBadNames(t *testing.T) {
	s := newServer(t)
	for _, n := range []string{"", "../x", "a/../b", "x.git", "/abs"} {
		if _, err := s.CreateRepo(n, nil); err == nil {
			t.Errorf("CreateRepo(%q) succeeded", n)
		}
	}
	if _, err := s.CreateRepo("ok", map[string]string{"../escape": "x"}); err == nil {
		t.Error("file path ../escape accepted")
	}
	if _, err := s.Commit("missing", nil); err == nil {
		t.Error("Commit on a missing repository succeeded")
	}
}
