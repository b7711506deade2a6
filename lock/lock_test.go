package lock

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// behaviour checks what every locker must do; a and b stand for two hosts.
func behaviour(t *testing.T, a, b Locker) {
	ctx := context.Background()
	name := "stagehand/p/stage/" + strings.Repeat("ab", 28) + ":x"

	t.Run("exclusive excludes and tells the waiter who holds it", func(t *testing.T) {
		held, err := a.Acquire(ctx, name, Options{Holder: "host A, job 1"})
		if err != nil {
			t.Fatal(err)
		}
		var waitedFor atomic.Value
		got := make(chan *Lease, 1)
		go func() {
			l, err := b.Acquire(ctx, name, Options{Holder: "host B, job 2", OnWait: func(h string) { waitedFor.Store(h) }})
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		select {
		case <-got:
			t.Fatal("the second host got a held exclusive lock")
		case <-time.After(2500 * time.Millisecond):
		}
		if h, _ := waitedFor.Load().(string); h != "host A, job 1" {
			t.Errorf("the waiter was told the holder is %q", h)
		}
		if err := held.Release(); err != nil {
			t.Fatal(err)
		}
		if err := held.Release(); err != nil {
			t.Errorf("a second release: %v", err)
		}
		select {
		case l := <-got:
			l.Release()
		case <-time.After(10 * time.Second):
			t.Fatal("the waiter did not get the released lock")
		}
	})

	t.Run("shared locks coexist and keep exclusive out", func(t *testing.T) {
		s1, err := a.Acquire(ctx, name, Options{Shared: true})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s2, err := b.Acquire(sctx, name, Options{Shared: true})
		cancel()
		if err != nil {
			t.Fatalf("a second shared lock: %v", err)
		}
		xctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
		defer cancel()
		if x, err := b.Acquire(xctx, name, Options{}); err == nil {
			x.Release()
			t.Fatal("an exclusive lock was taken while shared ones were held")
		}
		s1.Release()
		s2.Release()
		x, err := b.Acquire(ctx, name, Options{})
		if err != nil {
			t.Fatalf("exclusive after the shared ones left: %v", err)
		}
		x.Release()
	})

	t.Run("cancelled wait returns promptly and holds nothing", func(t *testing.T) {
		held, err := a.Acquire(ctx, name, Options{})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancelCause(ctx)
		stopped := errors.New("job cancelled")
		time.AfterFunc(1500*time.Millisecond, func() { cancel(stopped) })
		start := time.Now()
		_, err = b.Acquire(cctx, name, Options{})
		if !errors.Is(err, stopped) {
			t.Fatalf("Acquire after cancel = %v, want the cancel cause", err)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("cancel took %s to return", d)
		}
		held.Release()
		again, err := a.Acquire(ctx, name, Options{})
		if err != nil {
			t.Fatalf("the lock is not free after the cancelled wait: %v", err)
		}
		again.Release()
	})
}

func TestFileLocker(t *testing.T) {
	dir := t.TempDir()
	a, err := New(":local", Config{LocalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(":local", Config{LocalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.Describe(), dir) {
		t.Errorf("Describe() = %q", a.Describe())
	}
	behaviour(t, a, b)
}

func TestNewRejectsUnknownSpecs(t *testing.T) {
	for _, spec := range []string{":bogus", "kubernetes://", "kubernetes://a/b", "consul://x", ""} {
		_, err := New(spec, Config{Project: "p"})
		if err == nil || !strings.Contains(err.Error(), "STAGEHAND_SYNCHRONIZATION") {
			t.Errorf("New(%q) = %v, want an error naming STAGEHAND_SYNCHRONIZATION", spec, err)
		}
	}
}

// kubeconfig is the harness's API server; in CI it must be there.
func testKubeconfig(t *testing.T) string {
	p := os.Getenv("STAGEHAND_TEST_KUBECONFIG")
	if p == "" {
		p = harnessValue("STAGEHAND_TEST_KUBECONFIG")
	}
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no kube-apiserver: the harness (scripts/harness.sh up) must run in CI")
		}
		t.Skip("no kube-apiserver: run scripts/harness.sh up")
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

func TestKubernetesLocker(t *testing.T) {
	kc := testKubeconfig(t)
	cfg := Config{Project: "locktest-" + time.Now().Format("150405.000"), Kubeconfig: kc}
	a, err := New("kubernetes://stagehand-synchronization", cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New("kubernetes://stagehand-synchronization", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.Describe(), "stagehand-"+cfg.Project) {
		t.Errorf("Describe() = %q", a.Describe())
	}
	behaviour(t, a, b)
}

// tcpProxy forwards to target until cut.
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

// cut stops forwarding: the API server is unreachable from then on.
func (p *tcpProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func TestKubernetesLeaseLostWhenTheAPIServerIsUnreachable(t *testing.T) {
	kc := testKubeconfig(t)
	raw, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	server := regexp.MustCompile(`https://127\.0\.0\.1:(\d+)`).FindStringSubmatch(string(raw))
	if server == nil {
		t.Fatalf("no https://127.0.0.1:PORT server in %s", kc)
	}
	proxy := newTCPProxy(t, "127.0.0.1:"+server[1])
	viaProxy := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(viaProxy, []byte(strings.ReplaceAll(string(raw), server[0], "https://"+proxy.ln.Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := New("kubernetes://stagehand-synchronization", Config{Project: "lostlease-" + time.Now().Format("150405.000"), Kubeconfig: viaProxy})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := l.Acquire(context.Background(), "stagehand/p/stage/x", Options{Holder: "host A"})
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	select {
	case <-lease.Lost():
		t.Fatalf("lost before the API server went away: %v", lease.Err())
	case <-time.After(4 * time.Second):
	}
	cut := time.Now()
	proxy.cut()
	select {
	case <-lease.Lost():
		took := time.Since(cut)
		t.Logf("lease lost %s after the API server became unreachable: %v", took.Round(time.Millisecond), lease.Err())
		if !strings.Contains(lease.Err().Error(), "stagehand/p/stage/x") {
			t.Errorf("Err() does not name the lock: %v", lease.Err())
		}
		if took > leaseTTL+2*time.Second {
			t.Errorf("noticed after %s, more than the lease's %s", took, leaseTTL)
		}
	case <-time.After(leaseTTL + 5*time.Second):
		t.Fatal("the lease was not declared lost")
	}
}
