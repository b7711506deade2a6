package stages

import (
	"context"

	"gitlab.com/stagehand/stagehand/lock"
)

// HostLocker gives a build the locks of package lock, telling waiters who
// holds them.
type HostLocker struct {
	locker lock.Locker
	holder string
}

// NewLocker opens the synchronization spec names (STAGEHAND_SYNCHRONIZATION):
// nil for "" (none).
func NewLocker(spec, project, localDir, kubeconfig, holder string) (*HostLocker, error) {
	if spec == "" {
		return nil, nil
	}
	l, err := lock.New(spec, lock.Config{Project: project, LocalDir: localDir, Kubeconfig: kubeconfig})
	if err != nil {
		return nil, err
	}
	return &HostLocker{locker: l, holder: holder}, nil
}

// Acquire implements Locker.
func (h *HostLocker) Acquire(ctx context.Context, name string, shared bool, onWait func(holder string)) (Lease, error) {
	lease, err := h.locker.Acquire(ctx, name, lock.Options{Shared: shared, Holder: h.holder, OnWait: onWait})
	if err != nil {
		return nil, err
	}
	return lease, nil
}

// Describe says where the locks live.
func (h *HostLocker) Describe() string { return h.locker.Describe() }

// Close releases the locker's connections.
func (h *HostLocker) Close() error { return h.locker.Close() }
