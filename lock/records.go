package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/werf/lockgate/pkg/distributed_locker"
	"github.com/werf/lockgate/pkg/distributed_locker/optimistic_locking_store"
	"github.com/werf/lockgate/pkg/util"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// recordStore keeps lockgate's lease records as annotations of one
// ConfigMap, in lockgate's format (as its
// KubernetesResourceAnnotationsStore does), and differs in two ways.
//
// Conflicts are per lock, not per ConfigMap. Every lock of a project is
// an annotation of one ConfigMap, and the API server refuses an update of
// an object changed since it was read; lockgate then sleeps a second and
// starts over, even when what changed was another lock's annotation. With
// a few dozen builds, such conflicts made renewals take longer than a
// lease lives. Here a refused update is made again at once on the object
// as it is now, when this lock's own annotation is still what was read;
// only a change of that annotation is a conflict for lockgate.
//
// A lock's holder description goes with the write of its record: taking
// a described lock and giving it back are one read and one write each,
// where a separate write of the description made them two of each (a
// stage made in the registry holds its lock about 100 ms).
type recordStore struct {
	cms  dynamic.ResourceInterface
	name string

	mu sync.Mutex
	// read is the last value read of each key, with the object it was
	// read from and its data then (one per key: a read never written back
	// is not kept).
	read map[string]readRecord
	// describe is, by record key, the change of the holder description
	// the next write of the record carries.
	describe map[string]description
}

// description is a change of the holder annotation at key.
type description struct {
	key    string
	change holderChange
}

type readRecord struct {
	v    *optimistic_locking_store.Value
	obj  *unstructured.Unstructured
	data string
}

// holderChange changes the holder record of the lease whose lockgate
// record (JSON) is lease; it answers whether it changed anything.
type holderChange func(lease string, rec *holderRecord) bool

var _ optimistic_locking_store.OptimisticLockingStore = (*recordStore)(nil)

func newRecordStore(cms dynamic.ResourceInterface, name string) *recordStore {
	return &recordStore{cms: cms, name: name, read: map[string]readRecord{}, describe: map[string]description{}}
}

// recordKey is lockgate's annotation of a lock (its
// OptimisticLockingStorageBasedBackend.keyName).
func recordKey(lock string) string { return leaseAnnotation + util.Sha3_224Hash(lock) }

// keyedRetries bounds the updates made again for one PutValue.
const keyedRetries = 20

// withNextWrite makes the next write of lock's record change its holder
// description too; nil forgets a change not written.
func (s *recordStore) withNextWrite(lock string, change holderChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if change == nil {
		delete(s.describe, recordKey(lock))
	} else {
		s.describe[recordKey(lock)] = description{holderKey(lock), change}
	}
}

func (s *recordStore) get() (*unstructured.Unstructured, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	obj, err := s.cms.Get(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read ConfigMap %s: %w", s.name, err)
	}
	return obj, nil
}

// update writes obj, bounded like every call (callTimeout).
func (s *recordStore) update(obj *unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := s.cms.Update(ctx, obj, metav1.UpdateOptions{})
	return err
}

func (s *recordStore) GetValue(key string) (*optimistic_locking_store.Value, error) {
	obj, err := s.get()
	if err != nil {
		return nil, err
	}
	data := obj.GetAnnotations()[key]
	v := &optimistic_locking_store.Value{Data: data}
	s.mu.Lock()
	s.read[key] = readRecord{v: v, obj: obj, data: data}
	s.mu.Unlock()
	return v, nil
}

func (s *recordStore) PutValue(key string, v *optimistic_locking_store.Value) error {
	s.mu.Lock()
	r, ok := s.read[key]
	if ok && r.v == v {
		delete(s.read, key)
	}
	desc, described := s.describe[key]
	s.mu.Unlock()
	if !ok || r.v != v {
		// Another read of the record since v's: whichever is older
		// must look again.
		return optimistic_locking_store.ErrRecordVersionChanged
	}
	obj := r.obj
	for i := 0; ; i++ {
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		if v.Data == "" {
			delete(ann, key)
		} else {
			ann[key] = v.Data
		}
		if described {
			desc.apply(ann, v.Data)
		}
		obj.SetAnnotations(ann)
		err := s.update(obj)
		if err == nil {
			if described {
				s.mu.Lock()
				delete(s.describe, key)
				s.mu.Unlock()
			}
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("update ConfigMap %s: %w", s.name, err)
		}
		if i == keyedRetries {
			return optimistic_locking_store.ErrRecordVersionChanged
		}
		if obj, err = s.get(); err != nil {
			return err
		}
		if obj.GetAnnotations()[key] != r.data {
			return optimistic_locking_store.ErrRecordVersionChanged // this lock's record changed: a real conflict
		}
	}
}

// apply makes the change in annotations ann, given the lock's record as
// written (lease).
func (d description) apply(ann map[string]string, lease string) {
	var rec holderRecord
	_ = json.Unmarshal([]byte(ann[d.key]), &rec)
	if !d.change(lease, &rec) {
		return
	}
	if len(rec.Holders) == 0 {
		delete(ann, d.key)
		return
	}
	b, _ := json.Marshal(rec)
	ann[d.key] = string(b)
}

// leaseUUID is the lease of a lockgate record ("" for none).
func leaseUUID(lease string) string {
	var rec distributed_locker.LockLeaseRecord
	if json.Unmarshal([]byte(lease), &rec) != nil {
		return ""
	}
	return rec.UUID
}

// addHolder records holder (stagehand lease id) as a holder of the lease
// written.
func addHolder(id, holder string) holderChange {
	return func(lease string, rec *holderRecord) bool {
		uuid := leaseUUID(lease)
		if uuid == "" {
			return false
		}
		if rec.Lease != uuid || rec.Holders == nil {
			*rec = holderRecord{Lease: uuid, Holders: map[string]string{}}
		}
		rec.Holders[id] = holder
		return true
	}
}

// removeHolder forgets holder id of lease uuid, unless the description
// is another lease's now.
func removeHolder(uuid, id string) holderChange {
	return func(_ string, rec *holderRecord) bool {
		if rec.Lease != uuid {
			return false
		}
		if _, ok := rec.Holders[id]; !ok {
			return false
		}
		delete(rec.Holders, id)
		return true
	}
}
