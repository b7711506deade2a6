package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// gitIn runs git in dir (file:// submodules allowed, as a runner's
// checkout of a local mirror would).
func gitIn(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "protocol.file.allow=always"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// putLFS writes path as Git LFS does: the pointer in the tree, the content
// in the repository's LFS objects (where a runner's checkout with git-lfs
// puts it).
func putLFS(t *testing.T, dir, path, content string) {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	oid := hex.EncodeToString(sum[:])
	pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", oid, len(content))
	p := filepath.Join(dir, path)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(pointer), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, ".git", "lfs", "objects", oid[:2], oid[2:4])
	os.MkdirAll(store, 0o755)
	if err := os.WriteFile(filepath.Join(store, oid), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLFSAndSubmodulesInImages: a project with a Git LFS file and a
// submodule builds (stagehand build, real engine and registry) into an
// image holding the LFS content and the submodule's files; a new LFS
// object rebuilds the stage that depends on it, a new submodule commit
// the one that depends on that, and not the other.
func TestLFSAndSubmodulesInImages(t *testing.T) {
	lib := t.TempDir()
	gitIn(t, lib, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(lib, "lib.txt"), []byte("lib 1\n"), 0o644)
	gitIn(t, lib, "add", ".")
	gitIn(t, lib, "commit", "-q", "-m", "lib 1")

	dir := t.TempDir()
	gitIn(t, dir, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(dir, "werf.yaml"), []byte(`project: lfs
configVersion: 1
---
image: app
from: {{ env "BASE_IMAGE" }}
git:
- add: /
  to: /app
  excludePaths: [werf.yaml]
  stageDependencies:
    install: ["assets/*"]
    setup: ["vendor/**/*"]
shell:
  install: ["echo install-ran"]
  setup: ["echo setup-ran"]
docker:
  CMD: ["sh", "-c", "cat /app/assets/model.bin /app/vendor/lib/lib.txt"]
`), 0o644)
	os.WriteFile(filepath.Join(dir, ".gitattributes"), []byte("*.bin filter=lfs diff=lfs merge=lfs -text\n"), 0o644)
	putLFS(t, dir, "assets/model.bin", "model v1: large content\n")
	gitIn(t, dir, "submodule", "add", "-q", lib, "vendor/lib")
	gitIn(t, dir, "add", ".")
	gitIn(t, dir, "commit", "-q", "-m", "app")

	e := h.Engines[1]
	repo := h.Registry + "/" + fmt.Sprintf("stagehand/lfs-%d", time.Now().UnixNano())
	env := []string{"BASE_IMAGE=" + h.BaseImage, "DOCKER_CONFIG=" + t.TempDir(), "CI_COMMIT_TAG=", "CI_COMMIT_BRANCH=main", "CI_COMMIT_REF_NAME=main"}
	build := func() (string, []string) {
		t.Helper()
		out, trace := mustCLI(t, env, "build", "--dir", dir, "--repo", repo, "--docker-host", e.Host, "--docker-network", "none", "--synchronization", "none")
		ref := ""
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "export STAGEHAND_IMAGE_APP='"); ok {
				ref = strings.TrimSuffix(v, "'")
			}
		}
		if ref == "" {
			t.Fatalf("no image published:\n%s\n%s", out, trace)
		}
		return ref, builtStages(trace)
	}
	ref, _ := build()
	if got := dockerCLI(t, e.Host, "run", "--rm", "--network", "none", ref); got != "model v1: large content\nlib 1\n" {
		t.Fatalf("the image holds %q: want the LFS content and the submodule's file", got)
	}

	// A new LFS object: install (which depends on assets/) runs again.
	putLFS(t, dir, "assets/model.bin", "model v2: larger content\n")
	gitIn(t, dir, "commit", "-q", "-am", "model v2")
	ref, built := build()
	if !slices.Contains(built, "app/install") {
		t.Errorf("a new LFS object built %v, want app/install", built)
	}
	if got := dockerCLI(t, e.Host, "run", "--rm", "--network", "none", ref); !strings.HasPrefix(got, "model v2: larger content\n") {
		t.Errorf("after the new LFS object the image holds %q", got)
	}

	// A new submodule commit: setup runs again, install does not.
	os.WriteFile(filepath.Join(lib, "lib.txt"), []byte("lib 2\n"), 0o644)
	gitIn(t, lib, "commit", "-q", "-am", "lib 2")
	gitIn(t, filepath.Join(dir, "vendor/lib"), "pull", "-q", "origin", "main")
	gitIn(t, dir, "commit", "-q", "-am", "lib 2")
	ref, built = build()
	if !slices.Contains(built, "app/setup") || slices.Contains(built, "app/install") {
		t.Errorf("a new submodule commit built %v, want app/setup and not app/install", built)
	}
	if got := dockerCLI(t, e.Host, "run", "--rm", "--network", "none", ref); got != "model v2: larger content\nlib 2\n" {
		t.Errorf("after the submodule commit the image holds %q", got)
	}
}
