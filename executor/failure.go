package executor

import (
	"errors"
	"fmt"

	"gitlab.com/stagehand/stagehand/fault"
)

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
	if errors.As(err, &se) || fault.KindOf(err) == fault.KindJob {
		return j.BuildFailureCode
	}
	return j.SystemFailureCode
}
