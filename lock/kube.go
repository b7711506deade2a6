package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/werf/lockgate"
	"github.com/werf/lockgate/pkg/distributed_locker"
	"github.com/werf/lockgate/pkg/distributed_locker/optimistic_locking_store"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"gitlab.com/stagehand/stagehand/internal/kubeconfig"
)

var (
	configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// holderAnnotation holds who has an exclusive lock, next to lockgate's
// own annotations.
const holderAnnotation = "holder.stagehand.io/"

// leaseTTL is lockgate's lease lifetime: without a renewal for this long,
// another host may take the lock.
const leaseTTL = distributed_locker.DistributedLockLeaseTTLSeconds * time.Second

// kubeLocker is "kubernetes://NAMESPACE": lockgate's leases as annotations
// of the ConfigMap stagehand-<project>.
type kubeLocker struct {
	ns, cm  string
	client  dynamic.Interface
	locker  *distributed_locker.DistributedLocker
	backend *watchedBackend
}

func newKubeLocker(ns string, cfg Config) (*kubeLocker, error) {
	rc, err := kubeconfig.RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes synchronization: %w", err)
	}
	// A lease lives 10 s: a call must fail well before that.
	rc.Timeout = 5 * time.Second
	client, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	k := &kubeLocker{ns: ns, cm: configMapName(cfg.Project), client: client}
	if err := k.ensureConfigMap(); err != nil {
		return nil, err
	}
	store := optimistic_locking_store.NewKubernetesResourceAnnotationsStore(client, configMaps, k.cm, ns)
	k.backend = &watchedBackend{inner: distributed_locker.NewOptimisticLockingStorageBasedBackend(store), renewed: map[string]time.Time{}}
	k.locker = distributed_locker.NewDistributedLocker(k.backend)
	return k, nil
}

// configMapName is stagehand-<project>, made a valid object name.
func configMapName(project string) string {
	b := []byte("stagehand-" + strings.ToLower(project))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	return strings.TrimRight(string(b[:min(len(b), 253)]), "-.")
}

func (k *kubeLocker) Describe() string {
	return fmt.Sprintf("ConfigMap %s in namespace %s (Kubernetes leases)", k.cm, k.ns)
}

func (k *kubeLocker) Close() error { return nil }

// ensureConfigMap creates the namespace and the ConfigMap when missing.
func (k *kubeLocker) ensureConfigMap() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.client.Resource(configMaps).Namespace(k.ns).Get(ctx, k.cm, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read ConfigMap %s in namespace %s: %w", k.cm, k.ns, err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": k.ns, "labels": map[string]any{"app.kubernetes.io/managed-by": "stagehand"}},
	}}
	if _, err := k.client.Resource(namespaces).Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s for locks: %w", k.ns, err)
	}
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": k.cm, "namespace": k.ns, "labels": map[string]any{"app.kubernetes.io/managed-by": "stagehand"}},
	}}
	if _, err := k.client.Resource(configMaps).Namespace(k.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ConfigMap %s in namespace %s for locks: %w", k.cm, k.ns, err)
	}
	return nil
}

func (k *kubeLocker) holder(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obj, err := k.client.Resource(configMaps).Namespace(k.ns).Get(ctx, k.cm, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return obj.GetAnnotations()[holderAnnotation+nameKey(name)]
}

func (k *kubeLocker) setHolder(name string, value *string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{holderAnnotation + nameKey(name): value}}})
	_, _ = k.client.Resource(configMaps).Namespace(k.ns).Patch(ctx, k.cm, types.MergePatchType, patch, metav1.PatchOptions{})
}

func (k *kubeLocker) Acquire(ctx context.Context, name string, opts Options) (*Lease, error) {
	lease := newLease(name)
	var handle lockgate.LockHandle
	try := func() (bool, error) {
		ok, h, err := k.locker.Acquire(name, lockgate.AcquireOptions{
			NonBlocking: true, Shared: opts.Shared,
			OnLostLeaseFunc: func(lockgate.LockHandle) error {
				lease.lose(fmt.Errorf("lost the lock %s: another holder took it (%s)", name, k.Describe()))
				return nil
			},
		})
		if err != nil {
			return false, fmt.Errorf("lock %s in %s: %w", name, k.Describe(), err)
		}
		handle = h
		return ok, nil
	}
	onBusy := func() {
		if opts.OnWait != nil {
			opts.OnWait(k.holder(name))
		}
	}
	if err := acquireLoop(ctx, pollInterval[true], try, onBusy); err != nil {
		return nil, err
	}
	if !opts.Shared && opts.Holder != "" {
		h := opts.Holder
		k.setHolder(name, &h)
	}
	go k.watch(lease, handle)
	lease.release = func() error {
		k.backend.forget(handle)
		if !opts.Shared && opts.Holder != "" {
			k.setHolder(name, nil)
		}
		if err := k.locker.Release(handle); err != nil {
			return fmt.Errorf("release lock %s in %s: %w", name, k.Describe(), err)
		}
		return nil
	}
	return lease, nil
}

// watch declares the lease lost when no renewal succeeded for leaseTTL.
func (k *kubeLocker) watch(lease *Lease, h lockgate.LockHandle) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-lease.done:
			return
		case <-lease.lost:
			return
		case <-t.C:
			last, ok := k.backend.lastRenewal(h)
			if ok && time.Since(last) > leaseTTL {
				lease.lose(fmt.Errorf("lost the lock %s: its lease could not be renewed since %s (%s unreachable?)", h.LockName, last.Format(time.RFC3339), k.Describe()))
				return
			}
		}
	}
}

// watchedBackend records when each lease was last acquired or renewed.
type watchedBackend struct {
	inner   distributed_locker.DistributedLockerBackend
	mu      sync.Mutex
	renewed map[string]time.Time
}

func (w *watchedBackend) mark(h lockgate.LockHandle) {
	w.mu.Lock()
	w.renewed[h.UUID] = time.Now()
	w.mu.Unlock()
}

func (w *watchedBackend) forget(h lockgate.LockHandle) {
	w.mu.Lock()
	delete(w.renewed, h.UUID)
	w.mu.Unlock()
}

func (w *watchedBackend) lastRenewal(h lockgate.LockHandle) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.renewed[h.UUID]
	return t, ok
}

func (w *watchedBackend) Acquire(name string, opts distributed_locker.AcquireOptions) (lockgate.LockHandle, error) {
	h, err := w.inner.Acquire(name, opts)
	if err == nil {
		w.mark(h)
	}
	return h, err
}

func (w *watchedBackend) RenewLease(h lockgate.LockHandle) error {
	err := w.inner.RenewLease(h)
	if err == nil {
		w.mark(h)
	}
	return err
}

func (w *watchedBackend) Release(h lockgate.LockHandle) error {
	return w.inner.Release(h)
}
