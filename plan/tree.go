package plan

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gitlab.com/stagehand/stagehand/config"
)

// Git file modes, as git writes them.
const (
	ModeFile    = "100644"
	ModeExec    = "100755"
	ModeSymlink = "120000"
)

// TreeEntry is one file of the project's tree. Blob is the git object id of
// its contents: a hash of the contents alone, so the same files give the
// same entries whatever the history (a shallow clone, a rebase).
type TreeEntry struct {
	Path string // slash-separated, relative to the repository root
	Mode string
	Blob string
}

// Tree is a project's files sorted by path.
type Tree []TreeEntry

// Source is the project's tree and a way to read its files' contents.
type Source interface {
	Tree() Tree
	// Open reads one entry's contents (a symlink's target for symlinks).
	Open(e TreeEntry) (io.ReadCloser, error)
	Close() error
}

// OpenSource reads the project at dir: its git HEAD tree when dir is a git
// work tree (what the runner checked out), else the files on disk.
func OpenSource(dir string) (Source, error) {
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		return OpenGitSource(dir, "HEAD")
	}
	return openDirSource(dir)
}

// gitSource reads a commit's tree with git; contents come from one
// long-running `git cat-file --batch`.
type gitSource struct {
	dir  string
	tree Tree

	mu  sync.Mutex
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// OpenGitSource reads the tree of rev (a commit, or HEAD) of the
// repository at dir (a work tree or a bare repository).
func OpenGitSource(dir, rev string) (Source, error) {
	out, err := exec.Command("git", "-C", dir, "ls-tree", "-r", "-z", "--full-tree", rev).Output()
	if err != nil {
		return nil, fmt.Errorf("list the files of %s in %s: %w", rev, dir, gitError(err))
	}
	tree, err := parseLsTree(out)
	if err != nil {
		return nil, fmt.Errorf("list the files of %s in %s: %w", rev, dir, err)
	}
	return &gitSource{dir: dir, tree: tree}, nil
}

func gitError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

// parseLsTree reads `git ls-tree -r -z` output. Submodules (commits) are
// left out: their files are not in this repository.
func parseLsTree(out []byte) (Tree, error) {
	var tree Tree
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, path, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 3 {
			return nil, fmt.Errorf("unexpected ls-tree line %q", rec)
		}
		if f[1] != "blob" {
			continue
		}
		tree = append(tree, TreeEntry{Path: string(path), Mode: f[0], Blob: f[2]})
	}
	sort.Slice(tree, func(i, j int) bool { return tree[i].Path < tree[j].Path })
	return tree, nil
}

func (s *gitSource) Tree() Tree { return s.tree }

func (s *gitSource) Open(e TreeEntry) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		cmd := exec.Command("git", "-C", s.dir, "cat-file", "--batch")
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start git cat-file in %s: %w", s.dir, err)
		}
		s.cmd, s.in, s.out = cmd, in, bufio.NewReaderSize(out, 1<<16)
	}
	if _, err := fmt.Fprintln(s.in, e.Blob); err != nil {
		return nil, fmt.Errorf("read %s from git: %w", e.Path, err)
	}
	header, err := s.out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("read %s from git: %w", e.Path, err)
	}
	f := strings.Fields(header)
	if len(f) != 3 || f[1] != "blob" {
		return nil, fmt.Errorf("read %s from git: unexpected answer %q", e.Path, strings.TrimSpace(header))
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("read %s from git: bad size in %q", e.Path, header)
	}
	// The batch stream is shared, so the contents are read out whole
	// before the next request.
	b := make([]byte, size+1)
	if _, err := io.ReadFull(s.out, b); err != nil {
		return nil, fmt.Errorf("read %s from git: %w", e.Path, err)
	}
	return io.NopCloser(bytes.NewReader(b[:size])), nil
}

func (s *gitSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.in.Close()
	err := s.cmd.Wait()
	s.cmd = nil
	return err
}

// dirSource reads a directory that is not a git work tree (an operator's
// export, a test fixture). Blobs are computed as git computes them, so the
// signatures equal those of the same files committed.
type dirSource struct {
	dir  string
	tree Tree
}

func openDirSource(dir string) (*dirSource, error) {
	var tree Tree
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		var contents []byte
		mode := ModeFile
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			contents, mode = []byte(target), ModeSymlink
		case info.Mode().IsRegular():
			if contents, err = os.ReadFile(p); err != nil {
				return err
			}
			if info.Mode()&0o111 != 0 {
				mode = ModeExec
			}
		default:
			return nil // sockets, devices: not project files
		}
		tree = append(tree, TreeEntry{Path: filepath.ToSlash(rel), Mode: mode, Blob: BlobID(contents)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read project files in %s: %w", dir, err)
	}
	sort.Slice(tree, func(i, j int) bool { return tree[i].Path < tree[j].Path })
	return &dirSource{dir: dir, tree: tree}, nil
}

// BlobID is git's object id of a blob with these contents.
func BlobID(contents []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(contents))
	h.Write(contents)
	return hex.EncodeToString(h.Sum(nil))
}

func (s *dirSource) Tree() Tree { return s.tree }

func (s *dirSource) Open(e TreeEntry) (io.ReadCloser, error) {
	p := filepath.Join(s.dir, filepath.FromSlash(e.Path))
	if e.Mode == ModeSymlink {
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader(target)), nil
	}
	return os.Open(p)
}

func (s *dirSource) Close() error { return nil }

// DockerIgnores reads the .dockerignore files of the config's Dockerfile
// images from the source: each image's context directory's own.
func DockerIgnores(cfg *config.Config, src Source) (map[string]DockerIgnore, error) {
	out := map[string]DockerIgnore{}
	for _, img := range cfg.Images {
		d := img.Dockerfile
		if d == nil {
			continue
		}
		if _, done := out[d.Context]; done {
			continue
		}
		want := path.Join(d.Context, ".dockerignore")
		for _, e := range src.Tree() {
			if e.Path != want {
				continue
			}
			r, err := src.Open(e)
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(io.LimitReader(r, 1<<20))
			r.Close()
			if err != nil {
				return nil, err
			}
			out[d.Context] = ParseDockerIgnore(string(b))
		}
	}
	return out, nil
}
