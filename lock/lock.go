package lock

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"gitlab.com/stagehand/stagehand/request"
)

// Locker takes named locks.
type Locker interface {
	// Acquire blocks until the lock is held, ctx ends (then it returns
	// ctx's cause and holds nothing), or an error.
	Acquire(ctx context.Context, name string, opts Options) (*Lease, error)
	// Describe says where the locks live, for the trace.
	Describe() string
	Close() error
}

// Options of one Acquire.
type Options struct {
	Shared bool
	// Holder describes the taker ("host runner-1, job 42"); hosts waiting
	// for the lock are told.
	Holder string
	// OnWait is called once when the lock is busy, with its holders'
	// descriptions ("" when unknown; several shared holders are joined
	// by "; ").
	OnWait func(holder string)
}

// Lease is a held lock.
type Lease struct {
	name string
	// id tells this lease's holder description from the others of a
	// shared lock.
	id      string
	release func() error
	once    sync.Once
	relErr  error
	done    chan struct{}
	lost    chan struct{}
	mu      sync.Mutex
	err     error
}

func newLease(name string) *Lease {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Lease{name: name, id: hex.EncodeToString(b[:]), lost: make(chan struct{}), done: make(chan struct{})}
}

// Release gives the lock up; releasing twice is harmless (the second
// answers what the first did).
func (l *Lease) Release() error {
	l.once.Do(func() {
		close(l.done)
		l.relErr = l.release()
	})
	return l.relErr
}

// Lost is closed when the lease was lost: another host may hold the lock
// now, and the holder must stop what the lock protects.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err says why the lease was lost; nil while it is held.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// lose records the first loss; later ones change nothing.
func (l *Lease) lose(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	l.err = err
	close(l.lost)
}

// Config is what New needs besides the spec.
type Config struct {
	// Project names the ConfigMap (stagehand-<project>).
	Project string
	// LocalDir holds the file locks of ":local" (request.DefaultLocksDir if "").
	LocalDir string
	// Kubeconfig is the cluster of kubernetes://; "" means $KUBECONFIG,
	// else in-cluster.
	Kubeconfig string
}

// New returns the locker of a synchronization spec (a
// STAGEHAND_SYNCHRONIZATION value): ":local" or "kubernetes://NAMESPACE".
func New(spec string, cfg Config) (Locker, error) {
	sync, err := request.ParseSynchronization("STAGEHAND_SYNCHRONIZATION", spec)
	if err != nil {
		return nil, err
	}
	return open(sync, cfg)
}

func open(sync request.Synchronization, cfg Config) (Locker, error) {
	switch sync.Kind {
	case request.SyncLocal:
		dir := cfg.LocalDir
		if dir == "" {
			dir = request.DefaultLocksDir
		}
		return newFileLocker(dir)
	case request.SyncKubernetes:
		if cfg.Project == "" {
			return nil, fmt.Errorf("STAGEHAND_SYNCHRONIZATION=%q: Kubernetes locks need the project's name (it names the ConfigMap)", sync)
		}
		return newKubeLocker(sync.Namespace, cfg)
	}
	return nil, fmt.Errorf("STAGEHAND_SYNCHRONIZATION=%q takes no locks: use :local (file locks on this host) or kubernetes://NAMESPACE (a ConfigMap shared by every host)", sync)
}

// acquireLoop tries a non-blocking acquire until it succeeds or ctx ends;
// onBusy runs once, on the first busy answer. lockgate's blocking Acquire
// takes no context, hence the polling.
func acquireLoop(ctx context.Context, interval time.Duration, try func() (bool, error), onBusy func()) error {
	busy := false
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		ok, err := try()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if !busy {
			busy = true
			onBusy()
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// nameKey is a short key of a lock name, safe in file names and
// annotation keys.
func nameKey(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])[:20]
}

// joinHolders describes the holders of a lock in one line.
func joinHolders(hs []string) string { return strings.Join(hs, "; ") }
