package plan

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "protocol.file.allow=always"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func write(t *testing.T, dir, name, contents string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(contents), mode); err != nil {
		t.Fatal(err)
	}
}

// TestShallowAndFullClonesGiveTheSameTree: signatures come from the tree,
// so a depth-1 clone must list exactly what a full clone lists (werf
// #2567, #2584).
func TestShallowAndFullClonesGiveTheSameTree(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed to read project trees")
	}
	origin := t.TempDir()
	git(t, origin, "init", "-q", "-b", "main")
	write(t, origin, "app/main.py", "print(1)", 0o644)
	write(t, origin, "run.sh", "#!/bin/sh\n", 0o755)
	git(t, origin, "add", ".")
	git(t, origin, "commit", "-q", "-m", "one")
	write(t, origin, "app/main.py", "print(2)", 0o644)
	if err := os.Symlink("app/main.py", filepath.Join(origin, "link")); err != nil {
		t.Fatal(err)
	}
	git(t, origin, "add", ".")
	git(t, origin, "commit", "-q", "-m", "two")

	full, shallow := t.TempDir(), t.TempDir()
	git(t, full, "clone", "-q", "file://"+origin, ".")
	git(t, shallow, "clone", "-q", "--depth", "1", "file://"+origin, ".")

	trees := map[string]Tree{}
	for name, dir := range map[string]string{"full": full, "shallow": shallow, "work tree": origin} {
		src, err := OpenSource(dir)
		if err != nil {
			t.Fatal(err)
		}
		trees[name] = src.Tree()
		// Contents come from the blobs, whatever is on disk.
		for _, e := range src.Tree() {
			r, err := src.Open(e)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r)
			r.Close()
			if BlobID(b) != e.Blob {
				t.Errorf("%s: contents of %s do not hash to its blob", name, e.Path)
			}
		}
		src.Close()
	}
	if !reflect.DeepEqual(trees["full"], trees["shallow"]) {
		t.Errorf("full and shallow clones differ:\n%v\n%v", trees["full"], trees["shallow"])
	}
	want := Tree{
		{Path: "app/main.py", Mode: ModeFile, Blob: BlobID([]byte("print(2)"))},
		{Path: "link", Mode: ModeSymlink, Blob: BlobID([]byte("app/main.py"))},
		{Path: "run.sh", Mode: ModeExec, Blob: BlobID([]byte("#!/bin/sh\n"))},
	}
	if !reflect.DeepEqual(trees["full"], want) {
		t.Errorf("tree = %v\nwant %v", trees["full"], want)
	}

	// The same files outside git give the same entries.
	plain := t.TempDir()
	write(t, plain, "app/main.py", "print(2)", 0o644)
	write(t, plain, "run.sh", "#!/bin/sh\n", 0o755)
	if err := os.Symlink("app/main.py", filepath.Join(plain, "link")); err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(plain)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(src.Tree(), want) {
		t.Errorf("directory tree = %v\nwant %v", src.Tree(), want)
	}
}
