package plan

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// lfsPointer is a Git LFS pointer file's content id and size.
type lfsPointer struct {
	OID  string // sha256, hex
	Size int64
}

// lfsVersion starts every Git LFS pointer file.
const lfsVersion = "version https://git-lfs.github.com/spec/v1\n"

// parseLFSPointer reads a Git LFS pointer file (spec v1): the file git
// stores in place of content tracked by LFS. Its blob, and so the
// signatures, change with the content's id.
func parseLFSPointer(b []byte) (lfsPointer, bool) {
	if len(b) > 1024 || !bytes.HasPrefix(b, []byte(lfsVersion)) {
		return lfsPointer{}, false
	}
	var p lfsPointer
	for _, line := range strings.Split(string(b[len(lfsVersion):]), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "oid":
			oid, ok := strings.CutPrefix(v, "sha256:")
			if _, err := hex.DecodeString(oid); !ok || err != nil || len(oid) != 64 {
				return lfsPointer{}, false
			}
			p.OID = oid
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return lfsPointer{}, false
			}
			p.Size = n
		}
	}
	return p, p.OID != ""
}

// lfsContent is an LFS file's content: from the repository's LFS object
// store, where the runner's checkout put it (gitlab-runner fetches LFS
// objects when git-lfs is installed), else fetched with `git lfs fetch`
// and the checkout's credentials. Content that does not match its pointer
// is refused.
func (s *gitSource) lfsContent(e TreeEntry, p lfsPointer) ([]byte, error) {
	repo := filepath.Join(s.dir, filepath.FromSlash(e.Module))
	objects, ok := s.lfsOf[e.Module]
	if !ok {
		out, err := exec.Command("git", "-C", repo, "rev-parse", "--git-common-dir").Output()
		if err != nil {
			return nil, fmt.Errorf("%s is a Git LFS file: find the repository's LFS objects: %w", e.Path, gitError(err))
		}
		gitDir := strings.TrimSpace(string(out))
		if !filepath.IsAbs(gitDir) {
			gitDir = filepath.Join(repo, gitDir)
		}
		objects = filepath.Join(gitDir, "lfs", "objects")
		s.lfsOf[e.Module] = objects
	}
	path := filepath.Join(objects, p.OID[:2], p.OID[2:4], p.OID)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		rel := strings.TrimPrefix(strings.TrimPrefix(e.Path, e.Module), "/")
		fetch := exec.Command("git", "-C", repo, "lfs", "fetch", "--include", rel)
		if out, ferr := fetch.CombinedOutput(); ferr != nil {
			return nil, fmt.Errorf("%s is a Git LFS file whose content is not in the checkout, and `git lfs fetch` failed (%v: %s): install git-lfs on the runner host, so that the runner fetches LFS content with the checkout", e.Path, ferr, strings.TrimSpace(string(out)))
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s is a Git LFS file: read its content: %w", e.Path, err)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != p.OID || int64(len(b)) != p.Size {
		return nil, fmt.Errorf("%s is a Git LFS file whose stored content does not match its pointer (oid %s, %d bytes)", e.Path, p.OID[:12], p.Size)
	}
	return b, nil
}
