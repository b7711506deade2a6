// Package fault says who is to blame for a failure: the job (its config,
// its script, its image name) or the machinery (engine or registry
// unreachable, internal errors). The blame decides the hook's exit code
// and so what GitLab shows: a script failure, or a runner system failure
// that GitLab may retry.
package fault

import (
	"errors"
	"fmt"
)

// Kind is the blame of a failure.
type Kind int

const (
	// KindSystem: the machinery failed. The default for any error not
	// marked otherwise, so an unexpected error never shows as the user's
	// fault.
	KindSystem Kind = iota
	// KindJob: the job itself is wrong or its work failed.
	KindJob
)

func (k Kind) String() string {
	if k == KindJob {
		return "job failure"
	}
	return "system failure"
}

// Error is an error with its blame attached.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Job marks err as the job's fault.
func Job(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: KindJob, Err: err}
}

// Jobf is Job(fmt.Errorf(...)).
func Jobf(format string, args ...any) error { return Job(fmt.Errorf(format, args...)) }

// System marks err as a failure of the machinery.
func System(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: KindSystem, Err: err}
}

// KindOf tells the blame of err: the outermost mark wins; unmarked errors
// are system failures.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindSystem
}
