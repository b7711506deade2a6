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
	// Module is the submodule holding the file (its path), "" for the
	// repository itself.
	Module string `json:",omitempty"`
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

// gitSource reads a commit's tree with git, and the trees of the
// submodules checked out in it; contents come from one long-running
// `git cat-file --batch` per repository.
type gitSource struct {
	dir  string
	tree Tree

	mu    sync.Mutex
	cats  map[string]*catFile
	lfsOf map[string]string // module → its LFS object directory
}

// catFile is one repository's `git cat-file --batch`.
type catFile struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// OpenGitSource reads the tree of rev (a commit, or HEAD) of the
// repository at dir (a work tree or a bare repository), with the files of
// the submodules the work tree has checked out (GIT_SUBMODULE_STRATEGY),
// at the commits the tree records.
func OpenGitSource(dir, rev string) (Source, error) {
	tree, err := listTree(dir, "", rev)
	if err != nil {
		return nil, err
	}
	sort.Slice(tree, func(i, j int) bool { return tree[i].Path < tree[j].Path })
	return &gitSource{dir: dir, tree: tree, cats: map[string]*catFile{}, lfsOf: map[string]string{}}, nil
}

// listTree lists rev's files in the repository of module (below root),
// and recursively those of its checked-out submodules.
func listTree(root, module, rev string) (Tree, error) {
	dir := filepath.Join(root, filepath.FromSlash(module))
	out, err := exec.Command("git", "-C", dir, "ls-tree", "-r", "-z", "--full-tree", rev).Output()
	if err != nil {
		return nil, fmt.Errorf("list the files of %s in %s: %w", rev, dir, gitError(err))
	}
	tree, links, err := parseLsTree(out)
	if err != nil {
		return nil, fmt.Errorf("list the files of %s in %s: %w", rev, dir, err)
	}
	for i := range tree {
		tree[i].Module = module
		if module != "" {
			tree[i].Path = module + "/" + tree[i].Path
		}
	}
	for _, l := range links {
		sub := l.Path
		if module != "" {
			sub = module + "/" + l.Path
		}
		// A submodule the job did not check out has no files here: its
		// commit is all the repository knows.
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(sub), ".git")); err != nil {
			continue
		}
		subTree, err := listTree(root, sub, l.Blob)
		if err != nil {
			return nil, fmt.Errorf("submodule %s: %w", sub, err)
		}
		tree = append(tree, subTree...)
	}
	return tree, nil
}

func gitError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

// parseLsTree reads `git ls-tree -r -z` output: the files, and the
// submodules (commit entries; Blob is the commit).
func parseLsTree(out []byte) (tree, links Tree, err error) {
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, path, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 3 {
			return nil, nil, fmt.Errorf("unexpected ls-tree line %q", rec)
		}
		switch f[1] {
		case "blob":
			tree = append(tree, TreeEntry{Path: string(path), Mode: f[0], Blob: f[2]})
		case "commit":
			links = append(links, TreeEntry{Path: string(path), Mode: f[0], Blob: f[2]})
		}
	}
	sort.Slice(tree, func(i, j int) bool { return tree[i].Path < tree[j].Path })
	return tree, links, nil
}

func (s *gitSource) Tree() Tree { return s.tree }

func (s *gitSource) Open(e TreeEntry) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.blob(e)
	if err != nil {
		return nil, err
	}
	if e.Mode != ModeSymlink {
		if p, ok := parseLFSPointer(b); ok {
			if b, err = s.lfsContent(e, p); err != nil {
				return nil, err
			}
		}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// blob reads an entry's object from its repository's cat-file.
func (s *gitSource) blob(e TreeEntry) ([]byte, error) {
	c := s.cats[e.Module]
	if c == nil {
		dir := filepath.Join(s.dir, filepath.FromSlash(e.Module))
		cmd := exec.Command("git", "-C", dir, "cat-file", "--batch")
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start git cat-file in %s: %w", dir, err)
		}
		c = &catFile{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<16)}
		s.cats[e.Module] = c
	}
	if _, err := fmt.Fprintln(c.in, e.Blob); err != nil {
		return nil, fmt.Errorf("read %s from git: %w", e.Path, err)
	}
	header, err := c.out.ReadString('\n')
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
	if _, err := io.ReadFull(c.out, b); err != nil {
		return nil, fmt.Errorf("read %s from git: %w", e.Path, err)
	}
	return b[:size], nil
}

func (s *gitSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for m, c := range s.cats {
		_ = c.in.Close()
		if err := c.cmd.Wait(); err != nil && first == nil {
			first = err
		}
		delete(s.cats, m)
	}
	return first
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
