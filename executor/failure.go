package executor

import (
	"errors"
	"fmt"
)

// FailureKind says who is to blame for a failed hook, which decides the exit
// code and so what GitLab shows (script failure vs. runner system failure,
// which GitLab may retry).
type FailureKind int

const (
	// SystemFailure: the machinery failed (engine or registry unreachable,
	// internal error). The default for any error not marked otherwise.
	SystemFailure FailureKind = iota
	// BuildFailure: the job itself is wrong or its work failed.
	BuildFailure
)

// Failure is an error with its blame attached.
type Failure struct {
	Kind FailureKind
	Err  error
}

func (f *Failure) Error() string { return f.Err.Error() }
func (f *Failure) Unwrap() error { return f.Err }

// JobError marks err as the job's fault.
func JobError(err error) error {
	if err == nil {
		return nil
	}
	return &Failure{Kind: BuildFailure, Err: err}
}

// JobErrorf is JobError(fmt.Errorf(...)).
func JobErrorf(format string, args ...any) error { return JobError(fmt.Errorf(format, args...)) }

// SystemError marks err as a failure of the machinery.
func SystemError(err error) error {
	if err == nil {
		return nil
	}
	return &Failure{Kind: SystemFailure, Err: err}
}

// KindOf tells the blame of err; unmarked errors are system failures, so an
// unexpected error never shows as the user's fault.
func KindOf(err error) FailureKind {
	var f *Failure
	if errors.As(err, &f) {
		return f.Kind
	}
	return SystemFailure
}

// ScriptExit is the user's script ending with a non-zero status: the hook
// reports it through BUILD_EXIT_CODE_FILE and exits with the build failure
// code.
type ScriptExit struct{ Code int }

func (e *ScriptExit) Error() string { return fmt.Sprintf("script exited with status %d", e.Code) }

// ExitCode maps a hook's outcome to the exit status gitlab-runner expects.
func (j *Job) ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var se *ScriptExit
	if errors.As(err, &se) || KindOf(err) == BuildFailure {
		return j.BuildFailureCode
	}
	return j.SystemFailureCode
}
