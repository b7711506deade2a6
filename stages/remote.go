package stages

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/registry"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// makeConfigStage implements Store: the stages that need no container are
// written straight to the registry, their layers and config on top of the
// parent's layers, which are never downloaded. Made from reads alone, a
// failed attempt stored nothing, so the whole stage may be tried again.
func (s *Storage) makeConfigStage(ctx context.Context, b *Builder, st *plan.Stage) (built, error) {
	var img v1.Image
	err := registry.Retry(ctx, b.Trace, "building stage "+st.String(), func() (err error) {
		img, err = s.buildRemote(ctx, b, st)
		return err
	})
	return built{image: img}, err
}

// parentImage opens the stored parent of s (nil for a first stage).
func (r *Storage) parentImage(ctx context.Context, b *Builder, s *plan.Stage) (v1.Image, error) {
	st, ok := b.stored[s.Parent]
	if !ok {
		return nil, fmt.Errorf("stage %s: its parent %s is not built", s, s.Parent)
	}
	b.mu.Lock()
	img, ok := b.written[s.Parent]
	b.mu.Unlock()
	if ok {
		return img, nil
	}
	return r.Image(ctx, st)
}

// buildRemote makes the stages that need no container: their layers and
// configs are written straight to the registry, on top of the parent's
// layers, which are never downloaded.
func (r *Storage) buildRemote(ctx context.Context, b *Builder, s *plan.Stage) (v1.Image, error) {
	var img v1.Image
	var err error
	if s.Kind == plan.KindBase {
		ref, perr := name.ParseReference(s.BaseRef)
		if perr != nil {
			return nil, fault.Jobf("%s: from: %q is not an image reference: %v", s.Image.Describe(), s.BaseRef, perr)
		}
		img, err = remote.Image(ref, r.calls(ctx)...)
		if err != nil {
			if registry.IsNotFound(err) {
				return nil, fault.Jobf("%s: base image %s not found (check from: in %s)", s.Image.Describe(), s.BaseRef, b.Plan.Config.File)
			}
			return nil, fault.System(fmt.Errorf("read base image %s: %w", s.BaseRef, err))
		}
	} else {
		if img, err = r.parentImage(ctx, b, s); err != nil {
			return nil, fault.System(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fault.System(fmt.Errorf("read the config of %s's parent: %w", s, err))
	}
	cf = cf.DeepCopy()
	labels := b.labels(s)

	switch s.Kind {
	case plan.KindGitArchive, plan.KindGitPatch:
		owners := Owners{}
		if needsOwners(s.Image) {
			if owners, err = imageOwners(img); err != nil {
				return nil, fault.System(fmt.Errorf("stage %s: read the users of its parent: %w", s, err))
			}
		}
		layer, listings, err := b.gitLayer(s, cf.Config.Labels, owners)
		if err != nil {
			return nil, err
		}
		if layer != nil {
			if img, cf, err = appendLayer(img, layer, s); err != nil {
				return nil, err
			}
		}
		for k, v := range listings {
			labels[k] = v
		}
	case plan.KindImports:
		owners := Owners{}
		if importsNeedOwners(s.Imports) {
			if owners, err = imageOwners(img); err != nil {
				return nil, fault.System(fmt.Errorf("stage %s: read the users of its parent: %w", s, err))
			}
		}
		layer, err := r.importLayer(ctx, b, s, owners)
		if err != nil {
			return nil, err
		}
		if img, cf, err = appendLayer(img, layer, s); err != nil {
			return nil, err
		}
	case plan.KindDocker:
		applyDocker(&cf.Config, s.Image.Docker)
	}
	cf.Config.Labels = mergeLabels(cf.Config.Labels, labels)
	return mutate.ConfigFile(img, cf)
}

// appendLayer puts a stage's layer on img and answers the new image with a
// copy of its config to change.
func appendLayer(img v1.Image, layer v1.Layer, s *plan.Stage) (v1.Image, *v1.ConfigFile, error) {
	img, err := mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.DockerLayer,
		History: v1.History{CreatedBy: "stagehand " + string(s.Name), Created: v1.Time{Time: layerTime}}})
	if err != nil {
		return nil, nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	return img, cf.DeepCopy(), nil
}

// gitLayer writes the layer that brings the image's git files (as its
// labels list them) up to the current tree, and the new listing labels.
// nil layer: nothing changed.
func (b *Builder) gitLayer(s *plan.Stage, parentLabels map[string]string, owners Owners) (v1.Layer, map[string]string, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	n, listings, err := b.gitPatchInto(tw, s, parentLabels, owners)
	if err == nil {
		err = tw.Close()
	}
	if err != nil || n == 0 {
		return nil, listings, err
	}
	l, err := tl.Layer()
	return l, listings, err
}

// gitPatchInto writes, for every git mapping of the image, the files that
// differ from the listing in parentLabels, and whiteouts for removed files.
// It answers the number of entries and the new listing labels.
func (b *Builder) gitPatchInto(tw *tarWriter, s *plan.Stage, parentLabels map[string]string, owners Owners) (int, map[string]string, error) {
	listings := map[string]string{}
	total := 0
	for i := range s.Image.Git {
		n, listing, _, err := b.mappingPatch(tw, s, i, parentLabels, true, owners)
		if err != nil {
			return 0, nil, err
		}
		total += n
		listings[stagesrepo.GitListingLabel(i)] = listing
	}
	return total, listings, nil
}

// importLayer is the layer of an import stage: the stored one of its
// import key when an earlier build made it (a new parent does not change
// the imported files), else made from the source stages, which downloads
// their layers, and stored.
func (r *Storage) importLayer(ctx context.Context, b *Builder, s *plan.Stage, owners Owners) (v1.Layer, error) {
	ids, err := importOwners(s, owners, b.Plan.Config.File)
	if err != nil {
		return nil, err
	}
	// Owners named in the config are ids of the image the files go into:
	// the layer is kept by those ids too.
	key := s.ImportKey
	if importsNeedOwners(s.Imports) {
		sum := sha256.Sum256([]byte(fmt.Sprint(key, ids)))
		key = hex.EncodeToString(sum[:28])
	}
	if l, ok, err := r.ImportLayer(ctx, key); err != nil {
		return nil, fault.System(err)
	} else if ok {
		fmt.Fprintf(b.Trace, "Reusing the import layer of %s (%s)\n", s, short(s.ImportKey))
		return l, nil
	}
	l, err := r.extractImports(ctx, b, s, ids)
	if err != nil {
		return nil, err
	}
	if err := r.PutImportLayer(ctx, key, l); err != nil {
		return nil, fault.System(err)
	}
	return l, nil
}

// extractImports copies the imported paths out of the source stages.
func (r *Storage) extractImports(ctx context.Context, b *Builder, s *plan.Stage, ids [][2]int) (v1.Layer, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	for i, im := range s.Imports {
		src := b.stored[s.ImportSource[i]]
		img, err := r.Image(ctx, src)
		if err != nil {
			return nil, fault.System(err)
		}
		tw.setOwner(ids[i][0], ids[i][1], im.To)
		n, err := copyImport(tw, mutate.Extract(img), im)
		if err != nil {
			return nil, fault.System(fmt.Errorf("stage %s: import %s from %s: %w", s, im.Add, s.ImportSource[i], err))
		}
		if n == 0 {
			return nil, fault.Jobf("%s:%d: import: nothing at %s in %s", b.Plan.Config.File, im.Line, im.Add, s.ImportSource[i].Image.Describe())
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tl.Layer()
}

// copyImport writes the entries of a flattened filesystem that lie under
// im.Add (and pass its path filters) at im.To.
func copyImport(tw *tarWriter, fs io.ReadCloser, im config.Import) (int, error) {
	defer fs.Close()
	tr := tar.NewReader(fs)
	add := path.Clean(im.Add)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		rel, ok := im.Selection().Match(h.Name)
		if !ok {
			continue
		}
		dest := path.Join(im.To, rel)
		out := *h
		out.Name = strings.TrimPrefix(dest, "/")
		if h.Typeflag == tar.TypeDir {
			out.Name += "/"
		}
		out.Uid, out.Gid, out.Uname, out.Gname = tw.uid, tw.gid, "", ""
		if h.Typeflag == tar.TypeLink {
			// Hard links name a path in the source; inside the import they
			// keep their place relative to it.
			target := path.Clean("/" + h.Linkname)
			if !strings.HasPrefix(target, add+"/") && target != add {
				continue
			}
			out.Linkname = strings.TrimPrefix(path.Join(im.To, strings.TrimPrefix(target, add)), "/")
		}
		if h.Typeflag == tar.TypeDir {
			if tw.dirs[dest] {
				continue
			}
			tw.dirs[dest] = true
		}
		if err := tw.ensureDirs(dest); err != nil {
			return n, err
		}
		if err := tw.tw.WriteHeader(&out); err != nil {
			return n, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw.tw, tr); err != nil {
				return n, err
			}
		}
		n++
	}
}

// applyDocker applies the docker: directives to an image config.
func applyDocker(c *v1.Config, d config.Docker) {
	for _, kv := range d.Env {
		prefix := kv.Key + "="
		replaced := false
		for i, e := range c.Env {
			if strings.HasPrefix(e, prefix) {
				c.Env[i], replaced = prefix+kv.Value, true
			}
		}
		if !replaced {
			c.Env = append(c.Env, prefix+kv.Value)
		}
	}
	if len(d.Label) > 0 && c.Labels == nil {
		c.Labels = map[string]string{}
	}
	for _, kv := range d.Label {
		c.Labels[kv.Key] = kv.Value
	}
	for _, p := range d.Expose {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		c.ExposedPorts[p] = struct{}{}
	}
	for _, v := range d.Volume {
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[v] = struct{}{}
	}
	if d.Workdir != "" {
		c.WorkingDir = d.Workdir
	}
	if d.User != "" {
		c.User = d.User
	}
	if d.Entrypoint != nil {
		c.Entrypoint = d.Entrypoint
		if d.Cmd == nil {
			c.Cmd = nil // as in a Dockerfile: a new ENTRYPOINT resets CMD
		}
	}
	if d.Cmd != nil {
		c.Cmd = d.Cmd
	}
}

// importOwners resolves every import's owner and group.
func importOwners(s *plan.Stage, owners Owners, file string) ([][2]int, error) {
	out := make([][2]int, len(s.Imports))
	for i, im := range s.Imports {
		uid, gid, err := owners.IDs(im.Owner, im.Group)
		if err != nil {
			return nil, fault.Job(&config.ConfigError{File: file, Line: im.Line, Msg: err.Error()})
		}
		out[i] = [2]int{uid, gid}
	}
	return out, nil
}

// maxUserFiles bounds what is read of an /etc/passwd or /etc/group.
const maxUserFiles = 4 << 20

// imageOwners reads the users and groups of an image in the registry:
// its /etc/passwd and /etc/group, from the top layer down, stopping at
// the first that has (or deletes) each. Only the layers down to them are
// read; the image is never run.
func imageOwners(img v1.Image) (Owners, error) {
	layers, err := img.Layers()
	if err != nil {
		return Owners{}, err
	}
	files := map[string][]byte{}
	done := map[string]bool{}
	for i := len(layers) - 1; i >= 0 && (!done["etc/passwd"] || !done["etc/group"]); i-- {
		rc, err := layers[i].Uncompressed()
		if err != nil {
			return Owners{}, err
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return Owners{}, err
			}
			name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
			for _, want := range []string{"etc/passwd", "etc/group"} {
				if done[want] {
					continue
				}
				switch name {
				case want:
					if h.Typeflag == tar.TypeReg {
						b, err := io.ReadAll(io.LimitReader(tr, maxUserFiles))
						if err != nil {
							rc.Close()
							return Owners{}, err
						}
						files[want] = b
					}
					done[want] = true
				case path.Join(path.Dir(want), ".wh."+path.Base(want)):
					done[want] = true
				}
			}
		}
		rc.Close()
	}
	return ParseOwners(files["etc/passwd"], files["etc/group"]), nil
}
