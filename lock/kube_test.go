package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/werf/lockgate"
	"github.com/werf/lockgate/pkg/distributed_locker"
	"github.com/werf/lockgate/pkg/util"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"gitlab.com/stagehand/stagehand/internal/kubeconfig"
	"gitlab.com/stagehand/stagehand/request"
)

const testNamespace = "stagehand-synchronization"

// testProject is a project of its own for each test: its own ConfigMap.
func testProject(t *testing.T) string {
	return strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")) + "-" + time.Now().Format("150405.000")
}

func newKube(t *testing.T, kubeconfig, project string) *kubeLocker {
	t.Helper()
	l, err := New("kubernetes://"+testNamespace, Config{Project: project, Kubeconfig: kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	k := l.(*kubeLocker)
	t.Cleanup(func() {
		k.client.Resource(configMaps).Namespace(k.ns).Delete(context.Background(), k.cm, metav1.DeleteOptions{})
	})
	return k
}

// annotations of the locker's ConfigMap.
func annotations(t *testing.T, k *kubeLocker) map[string]string {
	t.Helper()
	cm, err := k.client.Resource(configMaps).Namespace(k.ns).Get(context.Background(), k.cm, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the locks' ConfigMap: %v", err)
	}
	return cm.GetAnnotations()
}

func TestKubernetesLocker(t *testing.T) {
	kc := testKubeconfig(t)
	t.Parallel()
	project := testProject(t)
	a, b := newKube(t, kc, project), newKube(t, kc, project)
	want := "ConfigMap stagehand-" + project + " in namespace " + testNamespace
	if d := a.Describe(); !strings.Contains(d, want) {
		t.Errorf("Describe() = %q, want it to say %q", d, want)
	}
	cm, err := a.client.Resource(configMaps).Namespace(testNamespace).Get(context.Background(), "stagehand-"+project, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("New did not make the ConfigMap stagehand-%s in %s: %v", project, testNamespace, err)
	}
	if cm.GetLabels()["app.kubernetes.io/managed-by"] != "stagehand" {
		t.Errorf("ConfigMap labels: %v", cm.GetLabels())
	}
	behaviour(t, a, b, pollKube)

	// Every lease and every holder description went with its release.
	for k, v := range annotations(t, a) {
		if strings.HasPrefix(k, leaseAnnotation) || strings.HasPrefix(k, holderAnnotation) {
			t.Errorf("left after every release: %s=%s", k, v)
		}
	}
	if len(a.backend.leases)+len(b.backend.leases) != 0 {
		t.Errorf("lease states left: %d, %d", len(a.backend.leases), len(b.backend.leases))
	}
}

// deadAPIServer writes a kubeconfig whose API server address nobody
// listens on.
func deadAPIServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+addr+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	return kc
}

func TestKubernetesUnreachable(t *testing.T) {
	kc := deadAPIServer(t)
	start := time.Now()
	_, err := New("kubernetes://locks", Config{Project: "p", Kubeconfig: kc})
	if err == nil || !strings.Contains(err.Error(), "ConfigMap stagehand-p in namespace locks") {
		t.Errorf("New against a dead API server = %v, want an error naming the ConfigMap and namespace", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("New took %s to fail", d)
	}
}

// TestBuildLocksConnectAtTheFirstLock: an operation's locker (For)
// reaches the API server only when a lock is taken, so an idle build pays
// nothing for it; the first Take then fails as New would have.
func TestBuildLocksConnectAtTheFirstLock(t *testing.T) {
	kc := deadAPIServer(t)
	spec, err := request.ParseSynchronization("--synchronization", "kubernetes://locks")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h, err := For(request.Locks{Sync: spec, Project: "p", Cluster: request.Cluster{Kubeconfig: kc}, Holder: "a test"})
	if err != nil || time.Since(start) > time.Second {
		t.Fatalf("For = %v after %s: it should not connect", err, time.Since(start))
	}
	if got, want := h.Describe(), "ConfigMap stagehand-p in namespace locks (Kubernetes leases)"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.Take(ctx, ProjectLock("p"), true, nil); err == nil || !strings.Contains(err.Error(), "ConfigMap stagehand-p in namespace locks") {
		t.Errorf("Take against a dead API server = %v, want an error naming the ConfigMap and namespace", err)
	}
}

// tcpProxy forwards to target, or refuses while it is cut.
type tcpProxy struct {
	ln    net.Listener
	down  atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
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

// cut makes the API server unreachable: connections are closed and new
// ones refused.
func (p *tcpProxy) cut() {
	p.down.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) heal() { p.down.Store(false) }

// kubeconfigVia writes a copy of kubeconfig whose server is reached
// through a proxy.
func kubeconfigVia(t *testing.T, kubeconfig string) (string, *tcpProxy) {
	raw, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	server := regexp.MustCompile(`https://127\.0\.0\.1:(\d+)`).FindStringSubmatch(string(raw))
	if server == nil {
		t.Fatalf("no https://127.0.0.1:PORT server in %s", kubeconfig)
	}
	proxy := newTCPProxy(t, "127.0.0.1:"+server[1])
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(raw), server[0], "https://"+proxy.ln.Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, proxy
}

// A lease outlives its TTL while renewals work; once they fail it is
// reported lost no later than another host can take the lock, and the
// holder's Release, after the other host took it, neither hangs nor
// touches the new holder's lease.
func TestKubernetesLeaseLostWhenTheAPIServerIsUnreachable(t *testing.T) {
	kc := testKubeconfig(t)
	t.Parallel()
	project := testProject(t)
	viaProxy, proxy := kubeconfigVia(t, kc)
	a := newKube(t, viaProxy, project)
	b := newKube(t, kc, project)
	ctx := context.Background()
	const name = "stagehand/p/stage/lost:1"

	lease, err := a.Acquire(ctx, name, Options{Holder: "host A, job 1"})
	if err != nil {
		t.Fatal(err)
	}
	// Held well past its 10 s: renewals keep it, and host B cannot have it.
	bctx, cancel := context.WithTimeout(ctx, leaseTTL+3*time.Second)
	if l, err := b.Acquire(bctx, name, Options{}); err == nil {
		l.Release()
		t.Fatal("host B took a lease that host A renews")
	}
	cancel()
	select {
	case <-lease.Lost():
		t.Fatalf("lost while the API server answered: %v", lease.Err())
	default:
	}

	cut := time.Now()
	proxy.cut()
	got, waitedFor := acquireAsync(t, ctx, b, name, Options{Holder: "host B, job 2"})
	var lostAfter time.Duration
	select {
	case <-lease.Lost():
		lostAfter = time.Since(cut)
		t.Logf("lease lost %s after the API server became unreachable: %v", lostAfter.Round(time.Millisecond), lease.Err())
	case <-time.After(renewTTL + 5*time.Second):
		t.Fatal("the lease was not declared lost")
	}
	if err := lease.Err(); err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "renewing its lease") {
		t.Errorf("Err() = %v, want it to name the lock and say its renewals failed", err)
	}
	if lostAfter > renewTTL+2*time.Second {
		t.Errorf("noticed after %s, more than the lease's %s", lostAfter, renewTTL)
	}
	bLease := mustGet(t, got, 5*time.Second, "host B, after host A's lease expired")
	bGotAfter := time.Since(cut)
	t.Logf("host B took the lock %s after the cut", bGotAfter.Round(time.Millisecond))
	if bGotAfter < lostAfter-300*time.Millisecond {
		t.Errorf("host B had the lock %s after the cut, before host A knew it lost it (%s)", bGotAfter, lostAfter)
	}
	if h, _ := waitedFor.Load().(string); h != "host A, job 1" {
		t.Errorf("host B was told the holder is %q", h)
	}

	// The API server comes back: host A's renewal finds host B's lease
	// and stops; Release must not wait for it.
	proxy.heal()
	deadline := time.Now().Add(10 * time.Second)
	for !a.backend.renewalStopped(lease) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !a.backend.renewalStopped(lease) {
		t.Fatal("host A's renewal did not find host B's lease")
	}
	released := make(chan error, 1)
	go func() { released <- lease.Release() }()
	select {
	case err := <-released:
		if err != nil {
			t.Errorf("Release of the lost lease: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Release of a lease taken over hangs")
	}
	if h := b.holders(name); h != "host B, job 2" {
		t.Errorf("after host A's release the holder is %q, want host B", h)
	}
	select {
	case <-bLease.Lost():
		t.Errorf("host B's lease was lost: %v", bLease.Err())
	default:
	}
	release(t, bLease)
}

// takeOver writes another holder's lease over the lock's, as a host that
// found it expired would.
func takeOver(t *testing.T, k *kubeLocker, name string) string {
	t.Helper()
	other := distributed_locker.NewLockLeaseRecord(name, false)
	other.ExpireAtTimestamp = time.Now().Add(time.Minute).Unix()
	data, _ := json.Marshal(other)
	cms := k.client.Resource(configMaps).Namespace(k.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(context.Background(), k.cm, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ann := cm.GetAnnotations()
		ann[leaseAnnotation+util.Sha3_224Hash(name)] = string(data)
		cm.SetAnnotations(ann)
		_, err = cms.Update(context.Background(), cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return other.UUID
}

func TestKubernetesLeaseTakenOver(t *testing.T) {
	kc := testKubeconfig(t)
	t.Parallel()
	k := newKube(t, kc, testProject(t))
	const name = "stagehand/p/stage/taken:1"
	for _, shared := range []bool{false, true} {
		lease, err := k.Acquire(context.Background(), name, Options{Shared: shared, Holder: "host A"})
		if err != nil {
			t.Fatal(err)
		}
		var second *Lease
		if shared {
			if second, err = k.Acquire(context.Background(), name, Options{Shared: true, Holder: "host A, again"}); err != nil {
				t.Fatal(err)
			}
		}
		other := takeOver(t, k, name)
		start := time.Now()
		select {
		case <-lease.Lost():
			t.Logf("shared=%t: taken over, noticed after %s: %v", shared, time.Since(start).Round(time.Millisecond), lease.Err())
		case <-time.After(2*distributed_locker.DistributedLockLeaseRenewPeriodSeconds*time.Second + 3*time.Second):
			t.Fatalf("shared=%t: the lease taken over was not declared lost", shared)
		}
		if err := lease.Err(); !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "another holder took it") {
			t.Errorf("Err() = %v", err)
		}
		if second != nil {
			select {
			case <-second.Lost():
			default:
				t.Error("the second shared lease on the same record was not declared lost")
			}
		}
		released := make(chan error, 2)
		go func() {
			released <- lease.Release()
			if second != nil {
				released <- second.Release()
			}
		}()
		for range 1 + map[bool]int{false: 0, true: 1}[shared] {
			select {
			case err := <-released:
				if err != nil {
					t.Errorf("Release of a lease taken over: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("shared=%t: Release of a lease taken over hangs", shared)
			}
		}
		var rec distributed_locker.LockLeaseRecord
		json.Unmarshal([]byte(annotations(t, k)[leaseAnnotation+util.Sha3_224Hash(name)]), &rec)
		if rec.UUID != other {
			t.Errorf("the new holder's lease was touched: %+v", rec)
		}
		// Clear the foreign lease for the next round.
		if err := k.backend.inner.Release(lockgate.LockHandle{UUID: other, LockName: name}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBrieflyHeldLocksReleaseAtOnce: a lock held for a moment (a stage
// made in the registry holds its lock ~150 ms) is released without
// lockgate's one-second sleep, which its release paid when the lease's
// first renewal wrote the record between the release's read and write.
func TestBrieflyHeldLocksReleaseAtOnce(t *testing.T) {
	kc := testKubeconfig(t)
	t.Parallel()
	k := newKube(t, kc, testProject(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var slowest time.Duration
	for i := range 30 {
		lease, err := k.Acquire(ctx, fmt.Sprintf("stage-%d", i), Options{Holder: "a test"})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := lease.Release(); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("slowest of 30 releases: %s", slowest.Round(time.Millisecond))
	// Before the fix, about one release in ten here took over a second.
	if slowest > 700*time.Millisecond {
		t.Errorf("a release took %s: it waited out a conflict with its own renewal", slowest.Round(time.Millisecond))
	}
}

// TestAcquiredExpiry: a quick acquire assumes lockgate's TTL from the
// call's start; a slow one (lockgate sleeping out conflicts on a shared
// record, longer than the TTL) takes the expiry of the record renewed at
// once — before, such a lease was declared lost as it was taken.
func TestAcquiredExpiry(t *testing.T) {
	start := time.Unix(1_800_000_000, 400_000_000)
	renewedUntil := start.Add(32 * time.Second)
	renewed := func() (time.Time, error) { return renewedUntil, nil }
	failed := func() (time.Time, error) { return time.Time{}, io.ErrUnexpectedEOF }
	for _, c := range []struct {
		name  string
		took  time.Duration
		renew func() (time.Time, error)
		want  time.Time
	}{
		{"quick", 300 * time.Millisecond, renewed, time.Unix(1_800_000_000, 0).Add(leaseTTL)},
		{"slower than the TTL", 12 * time.Second, renewed, renewedUntil},
		{"slow, and the renewal failed", 12 * time.Second, failed, time.Unix(1_800_000_000, 0).Add(leaseTTL)},
	} {
		if got := acquiredExpiry(start, start.Add(c.took), c.renew); !got.Equal(c.want) {
			t.Errorf("%s: expiry %s, want %s", c.name, got, c.want)
		}
	}
}

// countingTransport counts the API calls by method.
type countingTransport struct {
	base  http.RoundTripper
	calls sync.Map // method -> *atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	n, _ := c.calls.LoadOrStore(r.Method, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	return c.base.RoundTrip(r)
}

// take reads and zeroes the count of method's calls.
func (c *countingTransport) take(method string) int64 {
	n, ok := c.calls.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Swap(0)
}

// TestADescribedLockIsOneReadAndOneWriteEachWay: the holder's description
// goes with lockgate's write of the record, and a lease taken quickly is
// not renewed at once, so taking a described lock and giving it back are
// a read and a write each. They were three of each (lockgate's, the
// description's and the first renewal's), which cost a stage made in the
// registry more than its own work.
func TestADescribedLockIsOneReadAndOneWriteEachWay(t *testing.T) {
	kc := testKubeconfig(t)
	t.Parallel()
	k := newKube(t, kc, testProject(t))
	rc, err := kubeconfig.RESTConfig(kc, "")
	if err != nil {
		t.Fatal(err)
	}
	calls := &countingTransport{}
	rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { calls.base = rt; return calls }
	client, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	k.records.cms = client.Resource(configMaps).Namespace(k.ns)

	ctx := context.Background()
	lease, err := k.Acquire(ctx, "stage-1", Options{Holder: "host A, job 1"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // held a moment, as a stage made in the registry
	if gets, puts := calls.take(http.MethodGet), calls.take(http.MethodPut); gets != 1 || puts != 1 {
		t.Errorf("taking the lock made %d reads and %d writes, want 1 and 1", gets, puts)
	}
	if got := k.holders("stage-1"); got != "host A, job 1" {
		t.Errorf("the lock's description is %q, want the holder's", got)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if gets, puts := calls.take(http.MethodGet), calls.take(http.MethodPut); gets != 1 || puts != 1 {
		t.Errorf("giving the lock back made %d reads and %d writes, want 1 and 1", gets, puts)
	}
	for key := range annotations(t, k) {
		if key == holderKey("stage-1") || key == recordKey("stage-1") {
			t.Errorf("annotation %s left after the release", key)
		}
	}
}
