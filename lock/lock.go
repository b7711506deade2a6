// Package lock gives stagehand named locks across runner hosts, on
// github.com/werf/lockgate: file locks for one host (":local") and leases
// on a ConfigMap for a fleet ("kubernetes://NAMESPACE").
//
// Builds hold the project lock shared and each stage's lock while they
// build it; cleanup holds the project lock exclusive. Locks only spare
// duplicate work: a build without them is still correct.
//
// A Kubernetes lease is renewed every 3 s and expires 10 s after the last
// renewal. lockgate keeps retrying renewals while the API server is
// unreachable without telling anyone, so this package watches renewals
// itself: when none succeeded for longer than the lease's lifetime, the
// lease is lost (another host may take the lock), Lost() is closed and
// Err() says so; the holder must stop what the lock protects.
package lock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
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
	// OnWait is called once when the lock is busy, with its holder's
	// description ("" when unknown).
	OnWait func(holder string)
}

// Lease is a held lock.
type Lease struct {
	name    string
	release func() error
	once    sync.Once
	relErr  error
	lost    chan struct{}
	mu      sync.Mutex
	err     error
	done    chan struct{}
}

func newLease(name string) *Lease {
	return &Lease{name: name, lost: make(chan struct{}), done: make(chan struct{})}
}

// Release gives the lock up; releasing twice is harmless.
func (l *Lease) Release() error {
	l.once.Do(func() {
		close(l.done)
		l.relErr = l.release()
	})
	return l.relErr
}

// Lost is closed when the lease was lost.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err says why the lease was lost; nil while it is held.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

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
	// LocalDir holds the file locks of ":local".
	LocalDir string
	// Kubeconfig is the cluster of kubernetes://; "" means $KUBECONFIG,
	// else in-cluster.
	Kubeconfig string
}

// DefaultLocalDir is where ":local" keeps its lock files.
const DefaultLocalDir = "/var/lib/stagehand/locks"

// New returns the locker for a STAGEHAND_SYNCHRONIZATION value.
func New(spec string, cfg Config) (Locker, error) {
	switch {
	case spec == ":local":
		dir := cfg.LocalDir
		if dir == "" {
			dir = DefaultLocalDir
		}
		return newFileLocker(dir)
	case strings.HasPrefix(spec, "kubernetes://"):
		ns := strings.TrimPrefix(spec, "kubernetes://")
		if ns == "" || strings.Contains(ns, "/") {
			return nil, fmt.Errorf("STAGEHAND_SYNCHRONIZATION=%q: give the namespace, as kubernetes://stagehand-synchronization", spec)
		}
		if cfg.Project == "" {
			return nil, errors.New("kubernetes synchronization needs the project's name")
		}
		return newKubeLocker(ns, cfg)
	}
	return nil, fmt.Errorf("STAGEHAND_SYNCHRONIZATION=%q: use :local (file locks on this host) or kubernetes://NAMESPACE (a ConfigMap shared by every host)", spec)
}

// pollInterval is how often a busy lock is tried again.
var pollInterval = map[bool]time.Duration{false: 250 * time.Millisecond, true: time.Second}

// acquireLoop tries a non-blocking acquire until it succeeds or ctx ends;
// onBusy runs once on the first busy answer.
func acquireLoop(ctx context.Context, interval time.Duration, try func() (bool, error), onBusy func()) error {
	busy := false
	for {
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
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(interval):
		}
	}
}

// nameKey is a short, safe key of a lock name (file names, annotations).
func nameKey(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])[:20]
}
