package stages

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/plan"
	"io"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"gitlab.com/stagehand/stagehand/fault"
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
		img, err = remote.Image(ref, append(r.opts, remote.WithContext(ctx))...)
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
		layer, listings, err := b.gitLayer(s, cf.Config.Labels)
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
		layer, err := r.importLayer(ctx, b, s)
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
func (b *Builder) gitLayer(s *plan.Stage, parentLabels map[string]string) (v1.Layer, map[string]string, error) {
	tl, err := b.tempLayer()
	if err != nil {
		return nil, nil, fault.System(err)
	}
	tw := newTarWriter(tl.Writer(), 0, 0, "/")
	n, listings, err := b.gitPatchInto(tw, s, parentLabels)
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
func (b *Builder) gitPatchInto(tw *tarWriter, s *plan.Stage, parentLabels map[string]string) (int, map[string]string, error) {
	listings := map[string]string{}
	total := 0
	for i := range s.Image.Git {
		n, listing, _, _, _, err := b.mappingPatch(tw, s, i, parentLabels, true)
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
func (r *Storage) importLayer(ctx context.Context, b *Builder, s *plan.Stage) (v1.Layer, error) {
	if l, ok, err := r.ImportLayer(ctx, s.ImportKey); err != nil {
		return nil, fault.System(err)
	} else if ok {
		fmt.Fprintf(b.Trace, "Reusing the import layer of %s (%s)\n", s, short(s.ImportKey))
		return l, nil
	}
	l, err := r.extractImports(ctx, b, s)
	if err != nil {
		return nil, err
	}
	if err := r.PutImportLayer(ctx, s.ImportKey, l); err != nil {
		return nil, fault.System(err)
	}
	return l, nil
}

// extractImports copies the imported paths out of the source stages.
func (r *Storage) extractImports(ctx context.Context, b *Builder, s *plan.Stage) (v1.Layer, error) {
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
		uid, err := ownerID(im.Owner, "owner")
		if err == nil {
			var gid int
			gid, err = ownerID(im.Group, "group")
			tw.setOwner(uid, gid, im.To)
		}
		if err != nil {
			return nil, fault.Job(&config.ConfigError{File: b.Plan.Config.File, Line: im.Line, Msg: err.Error()})
		}
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
