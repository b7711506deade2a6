package docker

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// ImageInfo is what stagehand reads of an image in the engine.
type ImageInfo struct {
	ID     string
	Labels map[string]string
	// User, Entrypoint and Cmd are the image's config: builds keep the
	// parent's user, job containers its entrypoint.
	User       string
	WorkingDir string
	Entrypoint []string
	Cmd        []string
	Env        []string
	// ExposedPorts are "PORT/PROTO" entries.
	ExposedPorts []string
	Size         int64
	// RepoDigests are repository@digest of the registries it was pulled
	// from or pushed to.
	RepoDigests []string
}

// Image is one image of a listing.
type Image struct {
	ID string
	// Tags are its references, repository:tag.
	Tags []string
	Size int64
}

// Inspect reads an image; ok is false when the engine does not have it.
func (e *Engine) Inspect(ctx context.Context, ref string) (info ImageInfo, ok bool, err error) {
	res, err := e.cli.ImageInspect(ctx, ref)
	if IsNotFound(err) {
		return ImageInfo{}, false, nil
	}
	if err != nil {
		return ImageInfo{}, false, fmt.Errorf("inspect %s on %s: %w", ref, e.host, err)
	}
	info = ImageInfo{ID: res.ID, RepoDigests: res.RepoDigests}
	if res.Size != 0 {
		info.Size = res.Size
	}
	if c := res.Config; c != nil {
		info.Labels, info.User, info.WorkingDir, info.Entrypoint, info.Cmd, info.Env = c.Labels, c.User, c.WorkingDir, c.Entrypoint, c.Cmd, c.Env
		for p := range c.ExposedPorts {
			info.ExposedPorts = append(info.ExposedPorts, string(p))
		}
	}
	return info, true, nil
}

// Progress hears how much of a transfer is done: bytes done and the
// total, over all its layers.
type Progress func(done, total int64)

// Pull has the engine pull ref with the login dockerConfig holds for its
// registry; progress (may be nil) hears the layers' bytes.
func (e *Engine) Pull(ctx context.Context, ref, dockerConfig string, progress Progress) error {
	auth, err := RegistryAuth(dockerConfig, ref)
	if err != nil {
		return err
	}
	resp, err := e.cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err == nil {
		err = follow(ctx, resp.JSONMessages(ctx), "Downloading", progress)
	}
	if err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	return nil
}

// follow reads a pull's or push's messages to their end: the error the
// engine reports, and the layers' progress (status moving) to progress.
func follow(ctx context.Context, msgs iter.Seq2[jsonstream.Message, error], moving string, progress Progress) error {
	type layer struct{ done, total int64 }
	layers := map[string]*layer{}
	for m, err := range msgs {
		if err != nil {
			return err
		}
		if m.Error != nil {
			return errors.New(m.Error.Message)
		}
		if progress == nil || m.ID == "" {
			continue
		}
		l := layers[m.ID]
		if l == nil {
			l = &layer{}
			layers[m.ID] = l
		}
		switch {
		case m.Status == moving && m.Progress != nil:
			l.done, l.total = m.Progress.Current, m.Progress.Total
		case l.total > 0 && (strings.HasPrefix(m.Status, "Download complete") || m.Status == "Pushed" || m.Status == "Pull complete"):
			l.done = l.total
		default:
			continue
		}
		var done, total int64
		for _, l := range layers {
			done, total = done+l.done, total+l.total
		}
		progress(done, total)
	}
	return ctx.Err()
}

// Push pushes ref (an image the engine has under that name) with the
// login dockerConfig holds. The engine uploads the layers the registry
// lacks, then the manifest; progress (may be nil) hears their bytes.
func (e *Engine) Push(ctx context.Context, ref, dockerConfig string, progress Progress) error {
	auth, err := RegistryAuth(dockerConfig, ref)
	if err != nil {
		return err
	}
	resp, err := e.cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	defer resp.Close()
	if err := follow(ctx, resp.JSONMessages(ctx), "Pushing", progress); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// Tag names image (an id or reference) ref as well.
func (e *Engine) Tag(ctx context.Context, image, ref string) error {
	if _, err := e.cli.ImageTag(ctx, client.ImageTagOptions{Source: image, Target: ref}); err != nil {
		return fmt.Errorf("tag %s as %s: %w", image, ref, err)
	}
	return nil
}

// Untag removes the name ref (the image goes with its last name, unless a
// container uses it).
func (e *Engine) Untag(ctx context.Context, ref string) error {
	if _, err := e.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
		return fmt.Errorf("remove %s: %w", ref, err)
	}
	return nil
}

// Images lists the images of a repository (a reference filter such as
// "stagehand-stages/p" or "registry/p/stages").
func (e *Engine) Images(ctx context.Context, repository string) ([]Image, error) {
	list, err := e.cli.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", repository)})
	if err != nil {
		return nil, fmt.Errorf("list images of %s on %s: %w", repository, e.host, err)
	}
	out := make([]Image, 0, len(list.Items))
	for _, img := range list.Items {
		out = append(out, Image{ID: img.ID, Tags: img.RepoTags, Size: img.Size})
	}
	return out, nil
}

// TagsOf answers the tags of repository among an image's references.
func (i Image) TagsOf(repository string) []string {
	var out []string
	for _, ref := range i.Tags {
		if tag, ok := strings.CutPrefix(ref, repository+":"); ok {
			out = append(out, tag)
		}
	}
	return out
}

// ImagesInUse answers the ids of the images running containers use.
func (e *Engine) ImagesInUse(ctx context.Context) (map[string]bool, error) {
	running, err := e.cli.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list running containers on %s: %w", e.host, err)
	}
	inUse := map[string]bool{}
	for _, c := range running.Items {
		inUse[c.ImageID] = true
	}
	return inUse, nil
}

// Remove removes the name ref and, when it was the image's last, the
// image and its parents no other name holds. An image a container uses
// stays (an error).
func (e *Engine) Remove(ctx context.Context, ref string) error {
	if _, err := e.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true}); err != nil {
		return fmt.Errorf("remove %s: %w", ref, err)
	}
	return nil
}

// DataRoot is the engine's data root directory (where images live).
func (e *Engine) DataRoot(ctx context.Context) (string, error) {
	info, err := e.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", fmt.Errorf("read the info of %s: %w", e.host, err)
	}
	return info.Info.DockerRootDir, nil
}
