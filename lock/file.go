package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/werf/lockgate"
	"github.com/werf/lockgate/pkg/file_locker"
)

// fileLocker is ":local": flock(2) locks in a directory of this host, so
// they hold across processes (concurrent jobs) and vanish with a crashed
// holder.
type fileLocker struct {
	dir    string
	locker *file_locker.FileLocker
}

func newFileLocker(dir string) (*fileLocker, error) {
	if err := os.MkdirAll(filepath.Join(dir, "holders"), 0o755); err != nil {
		return nil, fmt.Errorf("create the lock directory %s: %w", dir, err)
	}
	l, err := file_locker.NewFileLocker(dir)
	if err != nil {
		return nil, fmt.Errorf("file locks in %s: %w", dir, err)
	}
	return &fileLocker{dir: dir, locker: l}, nil
}

func (f *fileLocker) Describe() string { return "file locks in " + f.dir + " (this host only)" }
func (f *fileLocker) Close() error     { return nil }

func (f *fileLocker) holderPath(name string) string {
	return filepath.Join(f.dir, "holders", nameKey(name))
}

func (f *fileLocker) Acquire(ctx context.Context, name string, opts Options) (*Lease, error) {
	var handle lockgate.LockHandle
	try := func() (bool, error) {
		ok, h, err := f.locker.Acquire(name, lockgate.AcquireOptions{NonBlocking: true, Shared: opts.Shared})
		if err != nil {
			return false, fmt.Errorf("lock %s: %w", name, err)
		}
		handle = h
		return ok, nil
	}
	onBusy := func() {
		if opts.OnWait != nil {
			b, _ := os.ReadFile(f.holderPath(name))
			opts.OnWait(string(b))
		}
	}
	if err := acquireLoop(ctx, pollInterval[false], try, onBusy); err != nil {
		return nil, err
	}
	if !opts.Shared && opts.Holder != "" {
		_ = os.WriteFile(f.holderPath(name), []byte(opts.Holder), 0o644)
	}
	lease := newLease(name)
	lease.release = func() error {
		if !opts.Shared {
			_ = os.Remove(f.holderPath(name))
		}
		if err := f.locker.Release(handle); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("release lock %s: %w", name, err)
		}
		return nil
	}
	return lease, nil
}
