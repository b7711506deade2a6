package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/werf/lockgate"
	"github.com/werf/lockgate/pkg/file_locker"
)

// pollFile is how often a busy file lock is tried again.
const pollFile = 250 * time.Millisecond

// fileLocker is ":local": flock(2) locks in a directory of this host, so
// they hold across processes (concurrent jobs) and vanish with a crashed
// holder. lockgate names each lock file by the SHA-256 of the lock's
// name, so names may hold '/' and ':'.
type fileLocker struct {
	dir     string
	holders string
	locker  *file_locker.FileLocker
}

func newFileLocker(dir string) (*fileLocker, error) {
	holders := filepath.Join(dir, "holders")
	if err := os.MkdirAll(holders, 0o755); err != nil {
		return nil, fmt.Errorf("create the lock directory %s: %w", dir, err)
	}
	l, err := file_locker.NewFileLocker(dir)
	if err != nil {
		return nil, fmt.Errorf("file locks in %s: %w", dir, err)
	}
	return &fileLocker{dir: dir, holders: holders, locker: l}, nil
}

func (f *fileLocker) Describe() string { return "file locks in " + f.dir + " (this host only)" }
func (f *fileLocker) Close() error     { return nil }

func (f *fileLocker) Acquire(ctx context.Context, name string, opts Options) (*Lease, error) {
	var handle lockgate.LockHandle
	try := func() (bool, error) {
		ok, h, err := f.locker.Acquire(name, lockgate.AcquireOptions{NonBlocking: true, Shared: opts.Shared})
		if err != nil {
			return false, fmt.Errorf("lock %s in %s: %w", name, f.dir, err)
		}
		if !ok {
			// lockgate keeps every handle it gave, taken or not, until
			// released: a long wait would pile them up.
			_ = f.locker.Release(h)
			return false, nil
		}
		handle = h
		return true, nil
	}
	onBusy := func() {
		if opts.OnWait != nil {
			opts.OnWait(f.holdersOf(name))
		}
	}
	if err := acquireLoop(ctx, pollFile, try, onBusy); err != nil {
		return nil, err
	}
	lease := newLease(name)
	var mark *holderMark
	if opts.Holder != "" {
		mark = f.writeHolder(name, lease.id, opts.Holder)
	}
	lease.release = func() error {
		mark.remove()
		if err := f.locker.Release(handle); err != nil {
			return fmt.Errorf("release lock %s in %s: %w", name, f.dir, err)
		}
		return nil
	}
	return lease, nil
}

// holderMark is a holder's description file, open and flocked shared for
// as long as the lease lives: a reader that can flock it exclusively knows
// its holder is gone.
type holderMark struct {
	path string
	file *os.File
}

func (m *holderMark) remove() {
	if m != nil {
		os.Remove(m.path)
		m.file.Close()
	}
}

// writeHolder puts the holder's description in holders/<key>.<lease id>.
// The file is complete and locked before it gets its name. Descriptions
// are a courtesy: failing to write one does not fail the lock.
func (f *fileLocker) writeHolder(name, id, holder string) *holderMark {
	tmp, err := os.CreateTemp(f.holders, ".new-*")
	if err != nil {
		return nil
	}
	final := filepath.Join(f.holders, nameKey(name)+"."+id)
	if syscall.Flock(int(tmp.Fd()), syscall.LOCK_SH) != nil || func() error {
		_, err := tmp.WriteString(holder)
		return err
	}() != nil || os.Rename(tmp.Name(), final) != nil {
		os.Remove(tmp.Name())
		tmp.Close()
		return nil
	}
	return &holderMark{path: final, file: tmp}
}

// holdersOf describes who holds the lock now; files of dead holders are
// removed on the way.
func (f *fileLocker) holdersOf(name string) string {
	paths, _ := filepath.Glob(filepath.Join(f.holders, nameKey(name)+".*"))
	var hs []string
	for _, p := range paths {
		file, err := os.Open(p)
		if err != nil {
			continue
		}
		err = syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// Nobody holds it: its holder died or is releasing.
			os.Remove(p)
			file.Close()
			continue
		}
		b := make([]byte, 4096)
		n, _ := file.Read(b)
		file.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) && n > 0 {
			hs = append(hs, strings.TrimSpace(string(b[:n])))
		}
	}
	sort.Strings(hs)
	return joinHolders(hs)
}
