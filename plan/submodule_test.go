package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoWith(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "files")
	return dir
}

func readEntry(t *testing.T, src Source, path string) (string, error) {
	t.Helper()
	for _, e := range src.Tree() {
		if e.Path == path {
			r, err := src.Open(e)
			if err != nil {
				return "", err
			}
			defer r.Close()
			b, err := io.ReadAll(r)
			return string(b), err
		}
	}
	t.Fatalf("%s is not in the tree", path)
	return "", nil
}

// TestSubmodulesCheckedOutAreInTheTree: the files of a submodule the job
// checked out are part of the tree (and so of the build and the
// signatures), read from the submodule's own repository; one not checked
// out is left out, as before.
func TestSubmodulesCheckedOutAreInTheTree(t *testing.T) {
	lib := repoWith(t, map[string]string{"lib.txt": "lib 1\n", "nested/deep.txt": "deep\n"})
	app := repoWith(t, map[string]string{"app.txt": "app\n"})
	git(t, app, "submodule", "add", "-q", lib, "vendor/lib")
	git(t, app, "commit", "-q", "-m", "add lib")

	src, err := OpenGitSource(app, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for path, want := range map[string]string{"app.txt": "app\n", "vendor/lib/lib.txt": "lib 1\n", "vendor/lib/nested/deep.txt": "deep\n"} {
		if got, err := readEntry(t, src, path); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", path, got, err, want)
		}
	}
	before := src.Tree()

	// A new commit of the submodule changes the tree's entries.
	os.WriteFile(filepath.Join(lib, "lib.txt"), []byte("lib 2\n"), 0o644)
	git(t, lib, "commit", "-q", "-am", "lib 2")
	git(t, filepath.Join(app, "vendor/lib"), "pull", "-q", "origin", "main")
	git(t, app, "commit", "-q", "-am", "lib 2")
	src2, err := OpenGitSource(app, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	if fmt.Sprint(src2.Tree()) == fmt.Sprint(before) {
		t.Error("a submodule's new commit left the tree as it was")
	}
	if got, _ := readEntry(t, src2, "vendor/lib/lib.txt"); got != "lib 2\n" {
		t.Errorf("after the update: %q", got)
	}

	// A clone without its submodules checked out: the submodule's files
	// are not there.
	clone := t.TempDir()
	git(t, clone, "clone", "-q", app, ".")
	src3, err := OpenGitSource(clone, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	defer src3.Close()
	for _, e := range src3.Tree() {
		if strings.HasPrefix(e.Path, "vendor/lib/") {
			t.Errorf("%s listed from a submodule that is not checked out", e.Path)
		}
	}
}

// TestLFSFilesAreTheirContent: a file tracked by Git LFS goes into images
// as its content, read from the repository's LFS objects; its pointer's
// content id is in the blob, so in the signatures; content that does not
// match, or is missing with no way to fetch it, is an error naming the
// file.
func TestLFSFilesAreTheirContent(t *testing.T) {
	content := strings.Repeat("large binary-ish content\n", 100)
	sum := sha256.Sum256([]byte(content))
	oid := hex.EncodeToString(sum[:])
	pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", oid, len(content))
	dir := repoWith(t, map[string]string{"assets/model.bin": pointer, ".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n"})
	store := filepath.Join(dir, ".git", "lfs", "objects", oid[:2], oid[2:4])
	os.MkdirAll(store, 0o755)
	if err := os.WriteFile(filepath.Join(store, oid), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := OpenGitSource(dir, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got, err := readEntry(t, src, "assets/model.bin"); err != nil || got != content {
		t.Errorf("model.bin: %d bytes, %v; want the LFS content (%d bytes)", len(got), err, len(content))
	}
	for _, e := range src.Tree() {
		if e.Path == "assets/model.bin" && e.Blob != BlobID([]byte(pointer)) {
			t.Errorf("the entry's blob %s is not its pointer's", e.Blob)
		}
	}

	// Stored content that does not match its pointer.
	os.WriteFile(filepath.Join(store, oid), []byte("tampered"), 0o644)
	src2, _ := OpenGitSource(dir, "HEAD")
	defer src2.Close()
	if _, err := readEntry(t, src2, "assets/model.bin"); err == nil || !strings.Contains(err.Error(), "assets/model.bin is a Git LFS file whose stored content does not match") {
		t.Errorf("tampered content: %v", err)
	}
	// Missing, and no remote to fetch it from.
	os.Remove(filepath.Join(store, oid))
	src3, _ := OpenGitSource(dir, "HEAD")
	defer src3.Close()
	if _, err := readEntry(t, src3, "assets/model.bin"); err == nil || !strings.Contains(err.Error(), "assets/model.bin is a Git LFS file whose content is not in the checkout") {
		t.Errorf("missing content: %v", err)
	}
	// A file that only looks like a pointer's start is content.
	if _, ok := parseLFSPointer([]byte("version https://git-lfs.github.com/spec/v1\nnot a pointer\n")); ok {
		t.Error("a pointer without an oid was taken for one")
	}
}
