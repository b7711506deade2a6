package cleanup

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/worker/docker"
)

// BuilderOptions is the builder cleanup of one runner host.
type BuilderOptions struct {
	DockerHost string
	// ThresholdPercent: when the filesystem of the engine's data root is
	// fuller than this, least recently stored stage images go until it is
	// not (default 80). MaxBytes, when set, bounds the stage images'
	// total size instead.
	ThresholdPercent int
	MaxBytes         int64
}

// BuilderReport is what the builder cleanup removed.
type BuilderReport struct {
	Removed       []string
	Freed         int64
	Before, After int64 // usage as measured: percent or bytes
	Unit          string
}

type localStage struct {
	ref, id string
	millis  int64
	size    int64
}

// CleanBuilder removes the host's local copies of stages the storage no
// longer has (werf #3786 used such stale copies), then, above the
// threshold, the least recently stored stage images until under it. An
// image a running container uses is never removed.
func CleanBuilder(ctx context.Context, o BuilderOptions, stagesRepo string, remaining map[string]bool, trace io.Writer) (BuilderReport, error) {
	rep := BuilderReport{}
	d, err := docker.Connect(ctx, o.DockerHost, true)
	if err != nil {
		return rep, err
	}
	defer d.Close()
	cli := d.Client()
	running, err := cli.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return rep, fmt.Errorf("list running containers: %w", err)
	}
	inUse := map[string]bool{}
	for _, c := range running.Items {
		inUse[c.ImageID] = true
	}
	list, err := cli.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", stagesRepo)})
	if err != nil {
		return rep, fmt.Errorf("list local stages of %s: %w", stagesRepo, err)
	}
	var local []localStage
	for _, img := range list.Items {
		for _, ref := range img.RepoTags {
			tag, ok := strings.CutPrefix(ref, stagesRepo+":")
			if !ok {
				continue
			}
			st, _ := stages.ParseStageTag(tag) // not a stage tag: oldest
			local = append(local, localStage{ref: ref, id: img.ID, millis: st.Millis, size: img.Size})
		}
	}
	remove := func(s localStage, why string) {
		if inUse[s.id] {
			fmt.Fprintf(trace, "Kept local %s: a running container uses it\n", s.ref)
			return
		}
		if _, err := cli.ImageRemove(ctx, s.ref, client.ImageRemoveOptions{PruneChildren: true}); err != nil && !errdefs.IsNotFound(err) {
			fmt.Fprintf(trace, "Could not remove local %s: %v\n", s.ref, err)
			return
		}
		rep.Removed = append(rep.Removed, s.ref)
		rep.Freed += s.size
		fmt.Fprintf(trace, "Removed local %s (%s)\n", s.ref, why)
	}
	var kept []localStage
	for _, s := range local {
		tag := strings.TrimPrefix(s.ref, stagesRepo+":")
		if !remaining[tag] {
			remove(s, "the stages storage no longer has it")
			continue
		}
		kept = append(kept, s)
	}

	usage := func() (int64, error) {
		if o.MaxBytes > 0 {
			du, err := cli.DiskUsage(ctx, client.DiskUsageOptions{Images: true})
			if err != nil {
				return 0, err
			}
			var total int64
			for _, img := range du.Images.Items {
				for _, t := range img.RepoTags {
					if strings.HasPrefix(t, stagesRepo+":") {
						total += img.Size
						break
					}
				}
			}
			return total, nil
		}
		info, err := cli.Info(ctx, client.InfoOptions{})
		if err != nil {
			return 0, err
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(info.Info.DockerRootDir, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", info.Info.DockerRootDir, err)
		}
		total, free := int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
		return (total - free) * 100 / total, nil
	}
	limit := int64(o.ThresholdPercent)
	rep.Unit = "%"
	if o.MaxBytes > 0 {
		limit, rep.Unit = o.MaxBytes, "bytes"
	} else if limit <= 0 {
		limit = 80
	}
	if rep.Before, err = usage(); err != nil {
		return rep, fmt.Errorf("measure the engine's disk usage: %w", err)
	}
	rep.After = rep.Before
	sort.Slice(kept, func(i, j int) bool { return kept[i].millis < kept[j].millis })
	for _, s := range kept {
		if rep.After <= limit {
			break
		}
		remove(s, fmt.Sprintf("usage %d %s above %d", rep.After, rep.Unit, limit))
		if rep.After, err = usage(); err != nil {
			return rep, err
		}
	}
	fmt.Fprintf(trace, "Builder: removed %d local stage images; usage %d → %d %s (threshold %d)\n", len(rep.Removed), rep.Before, rep.After, rep.Unit, limit)
	return rep, nil
}
