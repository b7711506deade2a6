package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
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
	"k8s.io/client-go/dynamic"

	"gitlab.com/stagehand/stagehand/internal/kubeconfig"
)

var (
	configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

const (
	// holderAnnotation prefixes the annotation saying who holds a lock,
	// next to lockgate's own.
	holderAnnotation = "holder.stagehand.io/"
	// leaseAnnotation prefixes lockgate's annotation of a lock (its
	// OptimisticLockingStorageBasedBackend.keyName).
	leaseAnnotation = "lockgate.io/"
	// leaseTTL is lockgate's lease lifetime: without a renewal for this
	// long, another host may take the lock.
	leaseTTL = distributed_locker.DistributedLockLeaseTTLSeconds * time.Second
	// pollKube is how often a busy Kubernetes lock is tried again.
	pollKube = time.Second
	// callTimeout bounds every API call: a lease lives 10 s, so a renewal
	// must fail well before that rather than hang.
	callTimeout = 5 * time.Second
)

// kubeLocker is "kubernetes://NAMESPACE": lockgate's leases as annotations
// of the ConfigMap stagehand-<project>.
type kubeLocker struct {
	ns, cm  string
	client  dynamic.Interface
	locker  *distributed_locker.DistributedLocker
	backend *watchedBackend
	// ops serialises taking and giving back leases: the shared leases of
	// one lock in one process share lockgate's handle, its renewal and
	// their bookkeeping here.
	ops sync.Mutex
	// records are lockgate's records and the holders' descriptions.
	records *recordStore
}

func newKubeLocker(ns string, cfg Config) (*kubeLocker, error) {
	rc, err := kubeconfig.RESTConfig(cfg.Kubeconfig, "")
	if err != nil {
		return nil, fmt.Errorf("kubernetes synchronization: %w", err)
	}
	rc.Timeout = callTimeout
	client, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes synchronization: client for %s: %w", rc.Host, err)
	}
	k := &kubeLocker{ns: ns, cm: configMapName(cfg.Project), client: client}
	if err := k.ensureConfigMap(); err != nil {
		return nil, err
	}
	k.records = newRecordStore(client.Resource(configMaps).Namespace(ns), k.cm)
	k.backend = newWatchedBackend(distributed_locker.NewOptimisticLockingStorageBasedBackend(k.records), k.records, k.Describe())
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

func (k *kubeLocker) Describe() string { return kubeDescription(k.ns, k.cm) }

func kubeDescription(ns, cm string) string {
	return fmt.Sprintf("ConfigMap %s in namespace %s (Kubernetes leases)", cm, ns)
}

// Close does nothing: leases are given back by Release, and the client
// holds no more than idle connections.
func (k *kubeLocker) Close() error { return nil }

// ensureConfigMap creates the namespace and the ConfigMap when missing.
func (k *kubeLocker) ensureConfigMap() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.client.Resource(configMaps).Namespace(k.ns).Get(ctx, k.cm, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read ConfigMap %s in namespace %s for locks: %w", k.cm, k.ns, err)
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

func (k *kubeLocker) Acquire(ctx context.Context, name string, opts Options) (*Lease, error) {
	lease := newLease(name)
	var handle lockgate.LockHandle
	try := func() (bool, error) {
		k.ops.Lock()
		defer k.ops.Unlock()
		if opts.Holder != "" {
			// The description goes with lockgate's write of the record.
			k.records.withNextWrite(name, addHolder(lease.id, opts.Holder))
			defer k.records.withNextWrite(name, nil)
		}
		ok, h, err := k.locker.Acquire(name, lockgate.AcquireOptions{NonBlocking: true, Shared: opts.Shared})
		if err != nil {
			return false, fmt.Errorf("lock %s in %s: %w", name, k.Describe(), err)
		}
		if ok {
			handle = h
			k.backend.track(h, lease)
		}
		return ok, nil
	}
	onBusy := func() {
		if opts.OnWait != nil {
			opts.OnWait(k.holders(name))
		}
	}
	if err := acquireLoop(ctx, pollKube, try, onBusy); err != nil {
		return nil, err
	}
	described := opts.Holder != ""
	go k.watch(lease, handle)
	lease.release = func() error { return k.release(lease, handle, described) }
	return lease, nil
}

func (k *kubeLocker) release(lease *Lease, h lockgate.LockHandle, described bool) error {
	k.ops.Lock()
	defer k.ops.Unlock()
	stopped := k.backend.untrack(h, lease)
	if stopped {
		// lockgate's renewal of this lease ended when it found the lock
		// someone else's: its Release would wait for that renewal
		// forever, and nothing in the ConfigMap is ours any more.
		return nil
	}
	if described {
		// The description goes with lockgate's write of the record.
		k.records.withNextWrite(lease.name, removeHolder(h.UUID, lease.id))
		defer k.records.withNextWrite(lease.name, nil)
	}
	err := k.locker.Release(h)
	k.backend.forget(h)
	switch {
	case err == nil:
		return nil
	case lease.Err() != nil:
		// Already reported as lost; if the API server is still away the
		// lease expires by itself.
		return nil
	case distributed_locker.IsErrLockAlreadyLeased(err) || distributed_locker.IsErrNoExistingLockLeaseFound(err):
		return fmt.Errorf("release lock %s in %s: it was no longer held (%v)", lease.name, k.Describe(), err)
	default:
		return fmt.Errorf("release lock %s in %s: %w", lease.name, k.Describe(), err)
	}
}

// watch declares the lease lost once it expired without a renewal.
func (k *kubeLocker) watch(lease *Lease, h lockgate.LockHandle) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-lease.done:
			return
		case <-lease.lost:
			return
		case now := <-t.C:
			if err := k.backend.expired(h, now); err != nil {
				lease.lose(fmt.Errorf("lost the lock %s: %w", lease.name, err))
				return
			}
		}
	}
}

// holderRecord is the holder annotation of a lock: the descriptions of
// its holders, by stagehand lease, and the lockgate lease they hold, so
// that descriptions left by a holder that died are never shown.
type holderRecord struct {
	Lease   string            `json:"lease"`
	Holders map[string]string `json:"holders"`
}

func holderKey(name string) string { return holderAnnotation + nameKey(name) }

// holders describes who holds the lock now ("" when unknown).
func (k *kubeLocker) holders(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	obj, err := k.client.Resource(configMaps).Namespace(k.ns).Get(ctx, k.cm, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	ann := obj.GetAnnotations()
	var held distributed_locker.LockLeaseRecord
	if json.Unmarshal([]byte(ann[recordKey(name)]), &held) != nil || held.UUID == "" {
		return ""
	}
	var rec holderRecord
	if json.Unmarshal([]byte(ann[holderKey(name)]), &rec) != nil || rec.Lease != held.UUID {
		return ""
	}
	hs := make([]string, 0, len(rec.Holders))
	for _, h := range rec.Holders {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	return joinHolders(hs)
}

// watchedBackend wraps lockgate's backend: it renews the leases itself
// (see renew), knows each record's expiry, and makes lockgate's renewal
// goroutine end when the record is not the lease's any more.
type watchedBackend struct {
	inner distributed_locker.DistributedLockerBackend
	// store is where inner keeps the records, which renew reads and
	// writes itself.
	store optimistic_locking_store.OptimisticLockingStore
	where string
	mu    sync.Mutex
	// leases by lockgate's lease UUID, which the shared holders of one
	// lock share.
	leases map[string]*leaseState
}

type leaseState struct {
	// leases of this process on the record; lockgate keeps one renewal
	// for them all.
	leases map[*Lease]bool
	// expiry is the record's expiry as of the last successful acquire or
	// renewal: read from the record, or, when lockgate wrote it, at least
	// the second the call began + leaseTTL.
	expiry  time.Time
	renewed time.Time
	// failingSince is when the first renewal after the last success
	// began (it may still wait for an answer); lastErr is the last
	// failure.
	failingSince time.Time
	lastErr      error
	// stopped: the record is not ours any more (renew found it so, and
	// lockgate's renewal goroutine ends at its next call).
	stopped bool
	// releasing: the last lease is being released. Renewals then
	// succeed without a call, so that lockgate's renewal goroutine gets
	// back to its stop signal instead of returning before it (lockgate
	// would then wait for it forever).
	releasing bool
	// writing is held while this process writes the record (a renewal,
	// lockgate's release): lockgate sleeps a second whenever the record
	// changed between its read and its write, and a renewal finishing
	// during a release made a short stage's release take a second more.
	writing sync.Mutex
}

func newWatchedBackend(inner distributed_locker.DistributedLockerBackend, store optimistic_locking_store.OptimisticLockingStore, where string) *watchedBackend {
	return &watchedBackend{inner: inner, store: store, where: where, leases: map[string]*leaseState{}}
}

func (w *watchedBackend) state(uuid string) *leaseState {
	st := w.leases[uuid]
	if st == nil {
		st = &leaseState{leases: map[*Lease]bool{}}
		w.leases[uuid] = st
	}
	return st
}

func (st *leaseState) okUntil(expiry time.Time) {
	st.expiry, st.renewed = expiry, time.Now()
	st.failingSince, st.lastErr = time.Time{}, nil
}

func (w *watchedBackend) Acquire(name string, opts distributed_locker.AcquireOptions) (lockgate.LockHandle, error) {
	start := time.Now()
	h, err := w.inner.Acquire(name, opts)
	if err == nil {
		// lockgate wrote the record's expiry, TTL ahead (whole seconds,
		// rounded down), somewhere in the call; the call's start is the
		// safe guess. But lockgate sleeps a
		// second at every conflict on a busy record (dozens of builds
		// sharing the project lock), and a call that took longer than the
		// TTL would have the lease expire as it is taken: then the record
		// is renewed now, and its expiry is the one written.
		expiry := acquiredExpiry(start, time.Now(), func() (time.Time, error) { return w.renewRecord(h) })
		w.mu.Lock()
		_, renewing := w.leases[h.UUID]
		st := w.state(h.UUID)
		if !renewing || st.expiry.Before(expiry) {
			// A shared lease already renewed here keeps its later expiry.
			st.okUntil(expiry)
		}
		w.mu.Unlock()
		if !renewing {
			go w.renew(h, st)
		}
	}
	return h, err
}

// acquiredExpiry is the expiry of a record lockgate wrote during a call
// from start to end: start's second + TTL for a quick call, else what
// renew (the record renewed now) answers.
func acquiredExpiry(start, end time.Time, renew func() (time.Time, error)) time.Time {
	expiry := time.Unix(start.Unix(), 0).Add(leaseTTL)
	if end.Sub(start) > slowAcquire {
		if e, err := renew(); err == nil {
			return e
		}
	}
	return expiry
}

// Leases are renewed here rather than by lockgate: lockgate renews a
// lease at most every 3 s after its last renewal ended, on a 3 s ticker,
// so about every 6 s, of a lease that lives 10 s; with a busy API server a
// renewal that takes more than 4 s lost the lease. Here the record is read
// every second, and once less than renewBelow of it is left it is renewed
// for renewTTL (every holder, lockgate's included, reads the expiry from
// the record), which gives a renewal 15 s; the holders of a shared lock,
// who share one record, renew it once between them instead of each every
// few seconds. The price: a host that died holds its locks up to 20 s.
const (
	// slowAcquire: an acquire that took longer reads its record's
	// expiry instead of assuming it (see Acquire).
	slowAcquire = 2 * time.Second
	renewCheck  = time.Second
	// quickLeft: a lease taken with this much left waits a tick for its
	// first renewal (a quick take leaves 9 to 10 s of lockgate's 10, and
	// a renewal has callTimeout to get through).
	quickLeft  = 8 * time.Second
	renewTTL   = 20 * time.Second
	renewBelow = 15 * time.Second
)

// renew keeps the lease of record h until it is released or lost.
func (w *watchedBackend) renew(h lockgate.LockHandle, st *leaseState) {
	// lockgate's first lease has less than renewBelow left from the start.
	// One taken quickly is renewed after a tick, like every lease after:
	// a lock held a moment (a stage made in the registry) is then written
	// only to take and give it back, and its release never waits for a
	// renewal. One taken slowly (on a busy API server), with less than
	// quickLeft left, is renewed at once. Later checks of holders started
	// together are spread over the second.
	w.mu.Lock()
	first := time.Until(st.expiry) < quickLeft
	w.mu.Unlock()
	var t *time.Ticker
	for {
		if first {
			first = false
		} else {
			if t == nil {
				time.Sleep(time.Duration(rand.Int63n(int64(renewCheck))))
				t = time.NewTicker(renewCheck)
				defer t.Stop()
			}
			<-t.C
		}
		st.writing.Lock()
		w.mu.Lock()
		gone := w.leases[h.UUID] != st || st.releasing || st.stopped
		if !gone && st.failingSince.IsZero() {
			st.failingSince = time.Now()
		}
		w.mu.Unlock()
		if gone {
			st.writing.Unlock()
			return
		}
		expiry, err := w.renewRecord(h)
		st.writing.Unlock()
		if err == nil {
			w.settle(st, func() { st.okUntil(expiry) })
			continue
		}
		lost := distributed_locker.IsErrLockAlreadyLeased(err) || distributed_locker.IsErrNoExistingLockLeaseFound(err)
		w.settle(st, func() {
			if !lost {
				st.lastErr = err
				return
			}
			st.stopped = true
			why := "another holder took it"
			if distributed_locker.IsErrNoExistingLockLeaseFound(err) {
				why = "its lease record is gone"
			}
			for l := range st.leases {
				l.lose(fmt.Errorf("lost the lock %s: %s (%s)", l.name, why, w.where))
			}
		})
		if lost {
			return
		}
	}
}

// renewRecord answers the expiry of h's record, writing it a new one (in
// lockgate's format) when less than renewBelow is left. A refused update
// is looked at again at once, with a new expiry, rather than after
// lockgate's second of sleep, or written again with the expiry of its
// first try: when another holder of a shared lock renewed the record
// meanwhile, that renewal is this one's too.
func (w *watchedBackend) renewRecord(h lockgate.LockHandle) (time.Time, error) {
	key := recordKey(h.LockName)
	for {
		v, err := w.store.GetValue(key)
		if err != nil {
			return time.Time{}, err
		}
		if v == nil || v.Data == "" {
			return time.Time{}, distributed_locker.ErrNoExistingLockLeaseFound
		}
		var rec distributed_locker.LockLeaseRecord
		if err := json.Unmarshal([]byte(v.Data), &rec); err != nil {
			return time.Time{}, fmt.Errorf("lease record of %s: %w", h.LockName, err)
		}
		if rec.UUID != h.UUID {
			return time.Time{}, distributed_locker.ErrLockAlreadyLeased
		}
		if expiry := time.Unix(rec.ExpireAtTimestamp, 0); time.Until(expiry) >= renewBelow {
			return expiry, nil
		}
		rec.ExpireAtTimestamp = time.Now().Add(renewTTL).Unix()
		b, err := json.Marshal(rec)
		if err != nil {
			return time.Time{}, err
		}
		v.Data = string(b)
		err = w.store.PutValue(key, v)
		if err == nil {
			return time.Unix(rec.ExpireAtTimestamp, 0), nil
		}
		if !optimistic_locking_store.IsErrRecordVersionChanged(err) {
			return time.Time{}, err
		}
	}
}

// settle applies a renewal's outcome unless the lease is being released.
func (w *watchedBackend) settle(st *leaseState, apply func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !st.releasing {
		apply()
	}
}

// RenewLease is lockgate's periodic renewal: the renewal here (renew)
// does the work, so it only answers whether the lease is still held —
// when it is not, lockgate's renewal goroutine ends, as it would have.
func (w *watchedBackend) RenewLease(h lockgate.LockHandle) error {
	w.mu.Lock()
	st := w.leases[h.UUID]
	stopped := st != nil && st.stopped
	w.mu.Unlock()
	if st == nil {
		return w.inner.RenewLease(h)
	}
	if stopped {
		return distributed_locker.ErrLockAlreadyLeased
	}
	return nil
}

// Release waits for a renewal of the record under way (see
// leaseState.writing); the renewals after it see the release.
func (w *watchedBackend) Release(h lockgate.LockHandle) error {
	w.mu.Lock()
	st := w.leases[h.UUID]
	w.mu.Unlock()
	if st != nil {
		st.writing.Lock()
		defer st.writing.Unlock()
	}
	return w.inner.Release(h)
}

// track counts a lease of this process on the record h.
func (w *watchedBackend) track(h lockgate.LockHandle, l *Lease) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.state(h.UUID)
	st.leases[l] = true
	if st.stopped {
		l.lose(fmt.Errorf("lost the lock %s: another holder took it as it was taken (%s)", l.name, w.where))
	}
}

// untrack is the release of l; it says whether lockgate's renewal of the
// record already stopped.
func (w *watchedBackend) untrack(h lockgate.LockHandle, l *Lease) (stopped bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.leases[h.UUID]
	if st == nil {
		return true
	}
	delete(st.leases, l)
	if st.stopped {
		if len(st.leases) == 0 {
			delete(w.leases, h.UUID)
		}
		return true
	}
	if len(st.leases) == 0 {
		st.releasing = true
	}
	return false
}

// forget drops the record's state once no lease of this process is on it.
func (w *watchedBackend) forget(h lockgate.LockHandle) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st := w.leases[h.UUID]; st != nil && len(st.leases) == 0 {
		delete(w.leases, h.UUID)
	}
}

// expired says why the lease is lost when the expiry written by its last
// successful renewal has passed (nil while it has not).
func (w *watchedBackend) expired(h lockgate.LockHandle, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.leases[h.UUID]
	if st == nil || st.stopped || st.releasing {
		return nil
	}
	expiry := st.expiry
	if !now.After(expiry) {
		return nil
	}
	switch {
	case st.lastErr != nil:
		return fmt.Errorf("renewing its lease has failed since %s (%v); it expired at %s and another host may hold it now (%s)",
			st.failingSince.Format(time.RFC3339), st.lastErr, expiry.Format(time.RFC3339), w.where)
	case !st.failingSince.IsZero():
		return fmt.Errorf("renewing its lease has had no answer since %s; it expired at %s and another host may hold it now (%s)",
			st.failingSince.Format(time.RFC3339), expiry.Format(time.RFC3339), w.where)
	default:
		return fmt.Errorf("its lease was not renewed since %s; it expired at %s and another host may hold it now (%s)",
			st.renewed.Format(time.RFC3339), expiry.Format(time.RFC3339), w.where)
	}
}

// renewalStopped says whether lockgate's renewal of l's record stopped
// because the record is not l's any more.
func (w *watchedBackend) renewalStopped(l *Lease) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, st := range w.leases {
		if st.leases[l] {
			return st.stopped
		}
	}
	return false
}
