package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"gitlab.com/stagehand/stagehand/plan"
)

// layerTime is every file's time in the layers stagehand writes, so that
// two hosts adding the same files write the same layer, byte for byte.
var layerTime = time.Unix(1, 0).UTC()

// gitListing is what an image holds of one git mapping: destination path
// → "mode blob". It travels in the image config's labels (compressed), so
// that the next stage's patch is computed without pulling the image.
type gitListing map[string]string

func listingOf(files []plan.GitFile) gitListing {
	l := gitListing{}
	for _, f := range files {
		l[f.Dest] = f.Mode + " " + f.Blob
	}
	return l
}

// encode writes the listing as a label value: base64 of gzipped lines.
func (l gitListing) encode() string {
	dests := make([]string, 0, len(l))
	for d := range l {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	for _, d := range dests {
		fmt.Fprintf(zw, "%s %s\n", l[d], d)
	}
	zw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func decodeListing(label string) (gitListing, error) {
	l := gitListing{}
	if label == "" {
		return l, nil
	}
	b, err := base64.StdEncoding.DecodeString(label)
	if err != nil {
		return nil, fmt.Errorf("git listing label: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("git listing label: %w", err)
	}
	text, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("git listing label: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(text), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("git listing label: bad line %q", line)
		}
		l[f[2]] = f[0] + " " + f[1]
	}
	return l, nil
}

// gitPatch is what brings an image's git files (old) up to the current
// ones: files to write and paths to remove.
type gitPatch struct {
	Write  []plan.GitFile
	Remove []string
}

func (p gitPatch) empty() bool { return len(p.Write) == 0 && len(p.Remove) == 0 }

func diffListing(old gitListing, current []plan.GitFile) gitPatch {
	var p gitPatch
	seen := map[string]bool{}
	for _, f := range current {
		seen[f.Dest] = true
		if old[f.Dest] != f.Mode+" "+f.Blob {
			p.Write = append(p.Write, f)
		}
	}
	for d := range old {
		if !seen[d] {
			p.Remove = append(p.Remove, d)
		}
	}
	sort.Strings(p.Remove)
	return p
}

// tarWriter writes a layer's tar with the fixed time and owner, adding
// each parent directory under root once.
type tarWriter struct {
	tw       *tar.Writer
	uid, gid int
	root     string // directories at or under root get entries of their own
	dirs     map[string]bool
	// prefix is put before every name (a build context's subdirectory).
	prefix string
}

func (t *tarWriter) name(p string) string { return t.prefix + strings.TrimPrefix(p, "/") }

// setPrefix starts a new subdirectory of the tar.
func (t *tarWriter) setPrefix(prefix string) {
	t.prefix = prefix
	t.dirs = map[string]bool{}
}

// raw adds a regular file with the given name and contents.
func (t *tarWriter) raw(name string, b []byte) error {
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: layerTime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := t.tw.Write(b)
	return err
}

func newTarWriter(w io.Writer, uid, gid int, root string) *tarWriter {
	return &tarWriter{tw: tar.NewWriter(w), uid: uid, gid: gid, root: path.Clean(root), dirs: map[string]bool{}}
}

// setOwner changes the owner and root of the entries written next (one
// tar may hold files of several mappings).
func (t *tarWriter) setOwner(uid, gid int, root string) {
	t.uid, t.gid, t.root = uid, gid, path.Clean(root)
}

func (t *tarWriter) ensureDirs(dest string) error {
	dir := path.Dir(dest)
	var missing []string
	for dir != "/" && dir != "." && !t.dirs[dir] && (dir == t.root || strings.HasPrefix(dir, t.root+"/") || t.root == "/") {
		missing = append(missing, dir)
		dir = path.Dir(dir)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		t.dirs[d] = true
		if err := t.tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: t.name(d) + "/", Mode: 0o755,
			Uid: t.uid, Gid: t.gid, ModTime: layerTime, Format: tar.FormatPAX,
		}); err != nil {
			return err
		}
	}
	return nil
}

// file adds one project file at dest.
func (t *tarWriter) file(dest, mode string, r io.Reader) error {
	if err := t.ensureDirs(dest); err != nil {
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	h := &tar.Header{Name: t.name(dest), Uid: t.uid, Gid: t.gid, ModTime: layerTime, Format: tar.FormatPAX}
	switch mode {
	case plan.ModeSymlink:
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, string(b), 0o777
		return t.tw.WriteHeader(h)
	case plan.ModeExec:
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o755, int64(len(b))
	default:
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(b))
	}
	if err := t.tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = t.tw.Write(b)
	return err
}

// whiteout removes dest in the layer (the OCI layer format's deletion).
func (t *tarWriter) whiteout(dest string) error {
	name := path.Join(path.Dir(dest), ".wh."+path.Base(dest))
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: t.name(name), Mode: 0o644, ModTime: layerTime, Format: tar.FormatPAX})
}

func (t *tarWriter) Close() error { return t.tw.Close() }

// tempLayer collects a layer's tar in a temporary file and makes it a
// go-containerregistry layer (gzip-compressed on upload).
type tempLayer struct {
	f *os.File
}

func newTempLayer() (*tempLayer, error) {
	f, err := os.CreateTemp("", "stagehand-layer-*.tar")
	if err != nil {
		return nil, fmt.Errorf("temporary layer file: %w", err)
	}
	return &tempLayer{f: f}, nil
}

func (l *tempLayer) Writer() io.Writer { return l.f }

func (l *tempLayer) Layer() (v1.Layer, error) {
	if err := l.f.Sync(); err != nil {
		return nil, err
	}
	p := l.f.Name()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(p) })
}

// Reader reads the tar from its start (for the engine's copy API).
func (l *tempLayer) Reader() (io.ReadCloser, error) { return os.Open(l.f.Name()) }

// Remove deletes the file; removing twice is harmless.
func (l *tempLayer) Remove() {
	l.f.Close()
	os.Remove(l.f.Name())
}

// writeGitFiles writes files of one mapping into a layer tar.
func writeGitFiles(tw *tarWriter, src plan.Source, files []plan.GitFile) error {
	for _, f := range files {
		r, err := src.Open(f.TreeEntry)
		if err != nil {
			return err
		}
		err = tw.file(f.Dest, f.Mode, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("add %s at %s: %w", f.Path, f.Dest, err)
		}
	}
	return nil
}
