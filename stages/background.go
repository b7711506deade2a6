package stages

import (
	"errors"
	"sync"
)

// A stage built in the engine is pushed to a registry storage while the
// next stage builds: the push (compressing and uploading its layer) is
// most of a cold stage's cost after its commands, and the next stage
// builds on the engine's copy, which needs no push. The pushes run one at
// a time in build order, so a stage is stored only after its parent. Each
// keeps its stage's lock until its tag is in the storage: other hosts
// waiting for the stage wait as long as before. What reads a stage from
// the registry (a stage made there on its parent, a dependency, the
// publication) waits for the pushes first.

// backgroundPushes are the pushes under way, in build order.
type backgroundPushes struct {
	mu sync.Mutex
	// last is closed when the latest push queued has ended.
	last chan struct{}
	err  error
}

// errEarlierPushFailed is what a push queued after a failed one answers:
// it does not push (its parent is not stored), and the first failure is
// the one reported.
var errEarlierPushFailed = errors.New("an earlier stage's push failed")

// add queues push. It runs after every push queued before it, with the
// first failure among them (nil when none failed): push must then give
// back what it holds without pushing. The channel answered is closed
// when push has ended.
func (q *backgroundPushes) add(push func(earlier error) error) <-chan struct{} {
	q.mu.Lock()
	prev := q.last
	done := make(chan struct{})
	q.last = done
	q.mu.Unlock()
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		if err := push(q.failure()); err != nil && !errors.Is(err, errEarlierPushFailed) {
			q.mu.Lock()
			if q.err == nil {
				q.err = err
			}
			q.mu.Unlock()
		}
	}()
	return done
}

// failure is the first push that failed, if any.
func (q *backgroundPushes) failure() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// wait waits for every push queued so far and answers the first failure.
func (q *backgroundPushes) wait() error {
	q.mu.Lock()
	last := q.last
	q.mu.Unlock()
	if last != nil {
		<-last
	}
	return q.failure()
}
