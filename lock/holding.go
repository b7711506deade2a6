package lock

import (
	"context"

	"gitlab.com/stagehand/stagehand/request"
)

// Held is a lock an operation holds: *Lease, or a test's own.
type Held interface {
	Release() error
	// Lost is closed when the lock was lost; Err says why.
	Lost() <-chan struct{}
	Err() error
}

var _ Held = (*Lease)(nil)

// Taker takes an operation's locks in its holder's name: builds take the
// project lock shared and each stage's exclusive; cleanup the project
// lock exclusive.
type Taker interface {
	// Take blocks until the lock is held or ctx ends; onWait is called
	// once when the lock is busy, with who holds it ("" when unknown).
	Take(ctx context.Context, name string, shared bool, onWait func(holders string)) (Held, error)
}

// Holding is a Locker that takes every lock in one holder's name.
type Holding struct {
	Locker
	holder string
}

var _ Taker = (*Holding)(nil)

// For opens the locks of an operation's request; nil (and no error) when
// it takes none (synchronization "none").
func For(l request.Locks) (*Holding, error) {
	if l.Sync.Kind == request.SyncNone {
		return nil, nil
	}
	locker, err := open(l.Sync, Config{Project: l.Project, LocalDir: l.Dir, Kubeconfig: l.Cluster.Kubeconfig})
	if err != nil {
		return nil, err
	}
	return &Holding{Locker: locker, holder: l.Holder}, nil
}

// Take implements Taker.
func (h *Holding) Take(ctx context.Context, name string, shared bool, onWait func(string)) (Held, error) {
	lease, err := h.Acquire(ctx, name, Options{Shared: shared, Holder: h.holder, OnWait: onWait})
	if err != nil {
		return nil, err
	}
	return lease, nil
}

// WhileHeld is ctx for work a lease protects: it ends, with the lease's
// error as its cause, when the lease is lost.
func WhileHeld(ctx context.Context, lease Held) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-lease.Lost():
			cancel(lease.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// ProjectLock is the lock builds hold shared and cleanup exclusive.
func ProjectLock(project string) string { return "stagehand/" + project }

// ReleaseLock is the lock of one environment's Helm release: deploys and
// dismisses of it take turns.
func ReleaseLock(project, namespace, release string) string {
	return ProjectLock(project) + "/release/" + namespace + "/" + release
}

// StageLock is the lock of one stage of a project across hosts.
func StageLock(project, signature string) string {
	return ProjectLock(project) + "/stage/" + signature
}
