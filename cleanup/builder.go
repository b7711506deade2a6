package cleanup

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"

	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// BuilderReport is what the builder cleanup removed.
type BuilderReport struct {
	Removed       []string
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
func CleanBuilder(ctx context.Context, host string, limits request.BuilderLimits, stagesRepo string, remaining map[string]bool, trace io.Writer) (BuilderReport, error) {
	rep := BuilderReport{}
	e, err := docker.Connect(ctx, host)
	if err != nil {
		return rep, err
	}
	defer e.Close()
	inUse, err := e.ImagesInUse(ctx)
	if err != nil {
		return rep, err
	}
	images, err := e.Images(ctx, stagesRepo)
	if err != nil {
		return rep, err
	}
	var local []localStage
	for _, img := range images {
		for _, tag := range img.TagsOf(stagesRepo) {
			st, _ := stagesrepo.ParseStageTag(tag) // not a stage tag: oldest
			local = append(local, localStage{ref: stagesRepo + ":" + tag, id: img.ID, millis: st.Millis, size: img.Size})
		}
	}
	remove := func(s localStage, why string) {
		if inUse[s.id] {
			fmt.Fprintf(trace, "Kept local %s: a running container uses it\n", s.ref)
			return
		}
		if err := e.Remove(ctx, s.ref); err != nil && !docker.IsNotFound(err) {
			fmt.Fprintf(trace, "Could not remove local %s: %v\n", s.ref, err)
			return
		}
		rep.Removed = append(rep.Removed, s.ref)
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
		if limits.MaxBytes > 0 {
			images, err := e.Images(ctx, stagesRepo)
			if err != nil {
				return 0, err
			}
			var total int64
			for _, img := range images {
				total += img.Size
			}
			return total, nil
		}
		root, err := e.DataRoot(ctx)
		if err != nil {
			return 0, err
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(root, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", root, err)
		}
		total, free := int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
		return (total - free) * 100 / total, nil
	}
	limit := int64(limits.ThresholdPercent)
	rep.Unit = "%"
	if limits.MaxBytes > 0 {
		limit, rep.Unit = limits.MaxBytes, "bytes"
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
