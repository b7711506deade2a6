package lock

import (
	"context"
	"sync"

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
	cfg := Config{Project: l.Project, LocalDir: l.Dir, Kubeconfig: l.Cluster.Kubeconfig}
	if l.Sync.Kind == request.SyncKubernetes && l.Project != "" {
		// Connecting (a client, a read of the ConfigMap) waits for the
		// first lock: an idle build takes none.
		return &Holding{Locker: &lazyLocker{
			open:     func() (Locker, error) { return open(l.Sync, cfg) },
			describe: kubeDescription(l.Sync.Namespace, configMapName(l.Project)),
		}, holder: l.Holder}, nil
	}
	locker, err := open(l.Sync, cfg)
	if err != nil {
		return nil, err
	}
	return &Holding{Locker: locker, holder: l.Holder}, nil
}

// lazyLocker opens its locker at the first Acquire.
type lazyLocker struct {
	open     func() (Locker, error)
	describe string

	mu     sync.Mutex
	locker Locker
}

func (z *lazyLocker) get() (Locker, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.locker == nil {
		l, err := z.open()
		if err != nil {
			return nil, err
		}
		z.locker = l
	}
	return z.locker, nil
}

func (z *lazyLocker) Acquire(ctx context.Context, name string, opts Options) (*Lease, error) {
	l, err := z.get()
	if err != nil {
		return nil, err
	}
	return l.Acquire(ctx, name, opts)
}

func (z *lazyLocker) Describe() string { return z.describe }

func (z *lazyLocker) Close() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.locker == nil {
		return nil
	}
	return z.locker.Close()
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
