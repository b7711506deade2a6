package gitmirror

import (
	"context"
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/e2e/gitserver"
)

func TestCheckURL(t *testing.T) {
	for _, c := range []struct{ url, err string }{
		{"https://gitlab.example.com/group/lib.git", ""},
		{"http://127.0.0.1:8080/group/lib.git", ""},
		{"https://user:secret@gitlab.example.com/group/lib.git", ""},
		{"git@github.com:flant/werf.git", "ssh address"},
		{"ssh://git@gitlab.example.com/group/lib.git", "ssh address"},
		{"file:///etc", "file scheme is not allowed"},
		{"https:///x.git", "not a repository URL"},
		{"/var/lib/other-project.git", "not a repository URL"},
		{"ext::sh -c touch% /tmp/pwned", "ext scheme is not allowed"},
		{"", "not a repository URL"},
	} {
		err := CheckURL(c.url)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("CheckURL(%q) = %v, want %q", c.url, err, c.err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("CheckURL(%q) shows the password: %v", c.url, err)
		}
	}
	if got := Redact("https://user:secret@h/x.git"); strings.Contains(got, "secret") {
		t.Errorf("Redact kept the password: %s", got)
	}
}

func TestFetchRefs(t *testing.T) {
	gs, err := gitserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer gs.Close()
	first, err := gs.CreateRepo("group/lib", map[string]string{"README": "one\n"})
	if err != nil {
		t.Fatal(err)
	}
	tagged, err := gs.Tag("group/lib", "v1.0")
	if err != nil {
		t.Fatal(err)
	}
	second, err := gs.Commit("group/lib", map[string]string{"README": "two\n"})
	if err != nil {
		t.Fatal(err)
	}
	auth := Auth{Host: "127.0.0.1", User: "gitlab-ci-token", Password: "job-token-123"}
	root := t.TempDir()
	m, err := New(root, "group/app", first.URL, auth)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		ref  Ref
		want string
	}{
		{Ref{Branch: "main"}, second.SHA},
		{Ref{}, second.SHA},
		{Ref{Tag: "v1.0"}, tagged.SHA},
		{Ref{Commit: first.SHA}, first.SHA},
	} {
		got, err := m.Fetch(ctx, c.ref)
		if err != nil || got != c.want {
			t.Errorf("Fetch(%s) = %s, %v; want %s", c.ref, got, err, c.want)
		}
	}
	// The job token went to its own GitLab.
	for _, a := range gs.Auths() {
		if a.User != "gitlab-ci-token" || a.Password != "job-token-123" {
			t.Errorf("the server got credentials %+v", a)
		}
	}
	if len(gs.Auths()) == 0 {
		t.Error("the fetch sent no credentials to the job's GitLab")
	}

	// A moved branch is fetched again.
	third, err := gs.Commit("group/lib", map[string]string{"README": "three\n"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.Fetch(ctx, Ref{Branch: "main"}); err != nil || got != third.SHA {
		t.Errorf("after a new commit: %s, %v; want %s", got, err, third.SHA)
	}
	if _, err := m.Fetch(ctx, Ref{Branch: "nope"}); err == nil || !strings.Contains(err.Error(), "branch nope") {
		t.Errorf("a missing branch: %v", err)
	}

	// Another project has its own copy, and another host's token is not
	// sent: the fetch fails at the server's challenge, naming no secret.
	other, err := New(root, "group/other", first.URL, Auth{Host: "gitlab.example.com", User: "gitlab-ci-token", Password: "other-token"})
	if err != nil {
		t.Fatal(err)
	}
	if other.Dir == m.Dir {
		t.Fatalf("two projects share %s", m.Dir)
	}
	n := len(gs.Auths())
	if _, err := other.Fetch(ctx, Ref{Branch: "main"}); err == nil {
		t.Error("a fetch without credentials passed the server's challenge")
	} else if strings.Contains(err.Error(), "other-token") {
		t.Errorf("the error shows the token: %v", err)
	}
	if len(gs.Auths()) != n {
		t.Errorf("credentials went to a host they are not for: %+v", gs.Auths()[n:])
	}
}
