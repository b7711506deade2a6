package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/lock"
	"gitlab.com/stagehand/stagehand/request"
)

// holdRelease takes the release's lock through the project's
// synchronization, so that two deploys (or a deploy and a dismiss) of one
// environment run one after the other; the waiter says whom it waits
// for. It answers the context of the work the lock protects and the
// release of the lock; locked is false without synchronization.
func holdRelease(ctx context.Context, locks request.Locks, ns, rel string, trace io.Writer) (context.Context, func(), bool, error) {
	holding, err := lock.For(locks)
	if err != nil {
		return ctx, func() {}, false, fault.System(err)
	}
	if holding == nil {
		return ctx, func() {}, false, nil
	}
	lease, err := holding.Take(ctx, lock.ReleaseLock(locks.Project, ns, rel), false, func(holder string) {
		fmt.Fprintf(trace, "Waiting for release %s in %s: %s holds it\n", rel, ns, orAnother(holder))
	})
	if err != nil {
		holding.Close()
		return ctx, func() {}, false, fmt.Errorf("take the lock of release %s: %w", rel, err)
	}
	lctx, cancel := lock.WhileHeld(ctx, lease)
	return lctx, func() { cancel(nil); lease.Release(); holding.Close() }, true, nil
}

func orAnother(holder string) string {
	if holder == "" {
		return "another deploy or dismiss"
	}
	return holder
}

// staleAfter is how old a pending release must be, when no lock says that
// no deploy is running, before it is taken for a dead deploy's.
const staleAfter = 15 * time.Minute

// recoverPending repairs a release a cancelled or crashed deploy left
// pending-install, pending-upgrade or pending-rollback (Helm then refuses
// every upgrade): back to its last deployed revision, or uninstalled when
// it never deployed. It is safe only when no deploy of the release runs:
// locked says the release's lock is held; without it, only a pending
// release older than staleAfter is repaired. It answers the release's
// newest revision after the repair.
func recoverPending(cfg *action.Configuration, rel string, last *release.Release, locked bool, timeout time.Duration, trace io.Writer) (*release.Release, error) {
	if last == nil || !last.Info.Status.IsPending() {
		return last, nil
	}
	age := time.Since(last.Info.LastDeployed.Time)
	if !locked && age < staleAfter {
		return nil, fault.Jobf("release %s is %s (revision %d, %s ago) and no lock says whether a deploy is still running it: retry later, or use a synchronization (--synchronization) so that stagehand can tell", rel, last.Info.Status, last.Version, age.Round(time.Second))
	}
	hist := action.NewHistory(cfg)
	revs, err := hist.Run(rel)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, fault.System(fmt.Errorf("read the history of release %s: %w", rel, err))
	}
	var good *release.Release
	for _, r := range revs {
		if r.Version < last.Version && (r.Info.Status == release.StatusDeployed || r.Info.Status == release.StatusSuperseded) && (good == nil || r.Version > good.Version) {
			good = r
		}
	}
	if good == nil {
		un := action.NewUninstall(cfg)
		un.Timeout = timeout
		if _, err := un.Run(rel); err != nil {
			return nil, fault.System(fmt.Errorf("uninstall release %s, left %s by a deploy that did not finish: %w", rel, last.Info.Status, err))
		}
		fmt.Fprintf(trace, "Release %s was left %s (revision %d) by a deploy that did not finish and never deployed: uninstalled it\n", rel, last.Info.Status, last.Version)
		return nil, nil
	}
	rb := action.NewRollback(cfg)
	rb.Version, rb.Timeout = good.Version, timeout
	if err := rb.Run(rel); err != nil {
		return nil, fault.System(fmt.Errorf("roll release %s back to revision %d, left %s by a deploy that did not finish: %w", rel, good.Version, last.Info.Status, err))
	}
	fmt.Fprintf(trace, "Release %s was left %s (revision %d) by a deploy that did not finish: rolled it back to revision %d\n", rel, last.Info.Status, last.Version, good.Version)
	return lastRelease(cfg, rel)
}
