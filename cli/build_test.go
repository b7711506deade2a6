package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"gitlab.com/stagehand/stagehand/request"
)

func TestCheckoutRef(t *testing.T) {
	for _, c := range []struct {
		branch, tag string
		want        request.Ref
	}{
		{"main", "", request.Ref{Branch: "main"}},
		{"main", "v1.0.0", request.Ref{Branch: "main"}}, // a branch checked out on a tagged commit
		{"", "v1.0.0", request.Ref{Tag: "v1.0.0"}},      // a tag's detached checkout
		{"", "", request.Ref{}},
	} {
		if got := checkoutRef(c.branch, c.tag); got != c.want {
			t.Errorf("checkoutRef(%q, %q) = %+v, want %+v", c.branch, c.tag, got, c.want)
		}
	}
}

func TestParseDecorations(t *testing.T) {
	for _, c := range []struct {
		in     string
		branch string
		tags   []string
	}{
		{"HEAD -> main, tag: v1.0.0, origin/main", "main", []string{"v1.0.0"}},
		{"HEAD -> feature/x", "feature/x", nil},
		{"HEAD, tag: v2, tag: v2.0.1", "", []string{"v2", "v2.0.1"}},
		{"HEAD", "", nil},
		{"", "", nil},
	} {
		branch, tags := parseDecorations(c.in)
		if branch != c.branch || !slices.Equal(tags, c.tags) {
			t.Errorf("parseDecorations(%q) = %q, %q; want %q, %q", c.in, branch, tags, c.branch, c.tags)
		}
	}
}

// TestShellBuildAndCleanupNameOneProjectLock: a shell build of a
// project's images repository and a shell cleanup of its GitLab path take
// the same project lock, as jobs of the project do.
func TestShellBuildAndCleanupNameOneProjectLock(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"-c", "user.email=t@x", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	for _, k := range []string{"CI_COMMIT_TAG", "CI_COMMIT_BRANCH", "CI_COMMIT_REF_NAME"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	s := defaultSettings()
	s.LocksDir = filepath.Join(dir, "locks")
	req, err := shellBuildRequest(s, buildFlags{dir: dir, repo: "registry.example.com:5000/Group/Shop", tagStrategy: "stages-signature"})
	if err != nil {
		t.Fatal(err)
	}
	if req.Ref != (request.Ref{Branch: "main"}) {
		t.Errorf("ref %+v", req.Ref)
	}
	cleanupLocks, err := locks(s, request.ProjectName("group/shop"), "cleanup")
	if err != nil {
		t.Fatal(err)
	}
	if req.Locks.Project != cleanupLocks.Project || req.Project != "group-shop" {
		t.Errorf("the build names the project %q, the cleanup %q", req.Locks.Project, cleanupLocks.Project)
	}
	t.Setenv("CI_COMMIT_TAG", "v2.0.0")
	req, err = shellBuildRequest(s, buildFlags{dir: dir, repo: "registry.example.com/group/shop", tagStrategy: "tag-or-branch"})
	if err != nil || req.Ref != (request.Ref{Tag: "v2.0.0"}) {
		t.Errorf("with CI_COMMIT_TAG the pipeline's ref decides: %+v %v", req.Ref, err)
	}
}
