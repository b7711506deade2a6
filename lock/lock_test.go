package lock

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testName is a lock name as stagehand makes them: with '/' and ':'.
const testName = "stagehand/p/stage/" + "abababababababababababababababababababababababababababab" + ":x"

// acquireAsync starts an Acquire; the lease (or nil) arrives on the
// channel, and OnWait's argument is kept.
func acquireAsync(t *testing.T, ctx context.Context, l Locker, name string, opts Options) (<-chan *Lease, *atomic.Value) {
	t.Helper()
	var waitedFor atomic.Value
	opts.OnWait = func(h string) { waitedFor.Store(h) }
	got := make(chan *Lease, 1)
	go func() {
		lease, err := l.Acquire(ctx, name, opts)
		if err != nil {
			t.Errorf("Acquire(%s): %v", name, err)
		}
		got <- lease
	}()
	return got, &waitedFor
}

// mustWait checks that got stays empty for d: the lock was not given.
func mustWait(t *testing.T, got <-chan *Lease, d time.Duration, what string) {
	t.Helper()
	select {
	case l := <-got:
		if l != nil {
			l.Release()
		}
		t.Fatalf("%s: got the lock", what)
	case <-time.After(d):
	}
}

// mustGet waits up to d for the lease.
func mustGet(t *testing.T, got <-chan *Lease, d time.Duration, what string) *Lease {
	t.Helper()
	select {
	case l := <-got:
		if l == nil {
			t.Fatalf("%s: Acquire failed", what)
		}
		return l
	case <-time.After(d):
		t.Fatalf("%s: not given the lock within %s", what, d)
	}
	return nil
}

func release(t *testing.T, l *Lease) {
	t.Helper()
	if err := l.Release(); err != nil {
		t.Errorf("Release: %v", err)
	}
}

// behaviour checks what every locker must do; a and b stand for two hosts
// (or two processes), and a busy lock is tried again every poll.
func behaviour(t *testing.T, a, b Locker, poll time.Duration) {
	ctx := context.Background()
	// wait is long enough for several tries of a busy lock.
	wait := 2*poll + 500*time.Millisecond
	give := poll + 5*time.Second

	t.Run("exclusive excludes and tells the waiter who holds it", func(t *testing.T) {
		held, err := a.Acquire(ctx, testName, Options{Holder: "host A, job 1"})
		if err != nil {
			t.Fatal(err)
		}
		got, waitedFor := acquireAsync(t, ctx, b, testName, Options{Holder: "host B, job 2"})
		mustWait(t, got, wait, "a second exclusive Acquire")
		if h, _ := waitedFor.Load().(string); h != "host A, job 1" {
			t.Errorf("the waiter was told the holder is %q, want %q", h, "host A, job 1")
		}
		release(t, held)
		if err := held.Release(); err != nil {
			t.Errorf("a second Release: %v", err)
		}
		release(t, mustGet(t, got, give, "the waiter, after the release"))
	})

	t.Run("shared locks coexist and keep exclusive out, naming every holder", func(t *testing.T) {
		s1, err := a.Acquire(ctx, testName, Options{Shared: true, Holder: "host A, job 3"})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, poll/2+3*time.Second)
		s2, err := b.Acquire(sctx, testName, Options{Shared: true, Holder: "host B, job 4"})
		cancel()
		if err != nil {
			t.Fatalf("a second shared lock: %v", err)
		}
		got, waitedFor := acquireAsync(t, ctx, b, testName, Options{Holder: "host B, cleanup"})
		mustWait(t, got, wait, "exclusive while shared locks are held")
		if h, _ := waitedFor.Load().(string); h != "host A, job 3; host B, job 4" {
			t.Errorf("the exclusive waiter was told the holders are %q", h)
		}
		release(t, s1)
		mustWait(t, got, wait, "exclusive while one shared lock is held")
		release(t, s2)
		x := mustGet(t, got, give, "exclusive after the shared ones left")

		// and an exclusive holder keeps shared takers out
		got, waitedFor = acquireAsync(t, ctx, a, testName, Options{Shared: true, Holder: "host A, job 5"})
		mustWait(t, got, wait, "shared while exclusive is held")
		if h, _ := waitedFor.Load().(string); h != "host B, cleanup" {
			t.Errorf("the shared waiter was told the holder is %q", h)
		}
		release(t, x)
		release(t, mustGet(t, got, give, "shared after exclusive left"))
	})

	t.Run("one process holding a lock shared twice", func(t *testing.T) {
		s1, err := a.Acquire(ctx, testName, Options{Shared: true, Holder: "host A, job 6"})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := a.Acquire(ctx, testName, Options{Shared: true, Holder: "host A, job 7"})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := acquireAsync(t, ctx, b, testName, Options{})
		release(t, s1)
		mustWait(t, got, wait, "exclusive while the second shared lease is held")
		select {
		case <-s2.Lost():
			t.Fatalf("the second shared lease was lost: %v", s2.Err())
		default:
		}
		release(t, s2)
		release(t, mustGet(t, got, give, "exclusive after both shared leases"))
	})

	t.Run("cancelled wait returns promptly and holds nothing", func(t *testing.T) {
		held, err := a.Acquire(ctx, testName, Options{})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancelCause(ctx)
		stopped := errors.New("job cancelled")
		time.AfterFunc(wait, func() { cancel(stopped) })
		start := time.Now()
		l, err := b.Acquire(cctx, testName, Options{})
		if !errors.Is(err, stopped) || l != nil {
			t.Fatalf("Acquire after cancel = %v, %v; want no lease and the cancel cause", l, err)
		}
		if d := time.Since(start) - wait; d > time.Second {
			t.Errorf("Acquire returned %s after the cancel", d)
		}
		release(t, held)
		// b, which waited, must not hold it: a takes it at once.
		actx, cancel2 := context.WithTimeout(ctx, time.Second)
		defer cancel2()
		again, err := a.Acquire(actx, testName, Options{})
		if err != nil {
			t.Fatalf("the lock is not free after the cancelled wait: %v", err)
		}
		release(t, again)

		// A context already done takes nothing either.
		done, cancel3 := context.WithCancelCause(ctx)
		cancel3(stopped)
		if l, err := a.Acquire(done, testName, Options{}); !errors.Is(err, stopped) || l != nil {
			t.Errorf("Acquire with a done context = %v, %v", l, err)
		}
	})
}

func TestNewRejectsUnknownSpecs(t *testing.T) {
	for _, spec := range []string{":bogus", "kubernetes://", "kubernetes://a/b", "consul://x", "local", ""} {
		_, err := New(spec, Config{Project: "p", LocalDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "STAGEHAND_SYNCHRONIZATION") {
			t.Errorf("New(%q) = %v, want an error naming STAGEHAND_SYNCHRONIZATION", spec, err)
			continue
		}
		if spec == "kubernetes://" && !strings.Contains(err.Error(), "namespace") {
			t.Errorf("New(%q) = %v, want it to ask for the namespace", spec, err)
		}
		if spec == ":bogus" && !(strings.Contains(err.Error(), ":local") && strings.Contains(err.Error(), "kubernetes://NAMESPACE")) {
			t.Errorf("New(%q) = %v, want the accepted forms", spec, err)
		}
	}
	if _, err := New("kubernetes://ns", Config{}); err == nil || !strings.Contains(err.Error(), "project") {
		t.Errorf("New without a project = %v", err)
	}
}

// testKubeconfig is the harness's API server; in CI it must be there.
func testKubeconfig(t *testing.T) string {
	p := os.Getenv("STAGEHAND_TEST_KUBECONFIG")
	if p == "" {
		p = harnessValue("STAGEHAND_TEST_KUBECONFIG")
	}
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no kube-apiserver: STAGEHAND_TEST_KUBECONFIG is unset; the harness (scripts/harness.sh up) must run in CI")
		}
		t.Skip("no kube-apiserver: set STAGEHAND_TEST_KUBECONFIG or run scripts/harness.sh up")
	}
	return p
}

// harnessValue reads one value of the harness env file.
func harnessValue(key string) string {
	path := os.Getenv("STAGEHAND_HARNESS_ENV")
	if path == "" {
		path = "/var/lib/stagehand-harness/harness.env"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == key {
			return v
		}
	}
	return ""
}
